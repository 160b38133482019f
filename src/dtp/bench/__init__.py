"""`dtp bench`: what DTP costs per control step, against the plain model and the naive way.

One module per job: shapes (model sizes from names or JSON), models (builders, a registry), variants
(the six ways of doing a step), timing, profiling (memory, FLOPs), agreement (fast pass 2 vs exact),
rollouts (throughput), run (orchestration), report (the table); its options are `dtp.cli.bench`.
pi0 (a flow-matching action expert, no action tokens) has its own: pi0_models (shapes "pi0", "pi0-2L", "pi0-tiny" and their
builders), pi0_variants (plain / capture / dtp / naive and the agreement checks), pi0_run (its bench and report lines).

Per model, in one process, interleaved round-robin so that every variant sees the same machine
load, after warm-up rounds, medians over repeats:

  (a) plain      DTPPolicy(DTPConfig(enabled=False)).step: one SDPA pass, no capture
  (b) capture    pass 1 with AttentionCapture (prepare + generate + decode, no DTP math)
  (c) dtp        DTPPolicy.step with a tau that prunes: capture + r, G, A, D + pass 2 (paper: "exact")
  (c) dtp_*      the same with the fast pass 2 of dtp.fast ("exact_prefix"; "approx_image", approximate)
  (d) naive      eager attention with output_attentions=True in pass 1, the same DTP math on the full
                 attention matrices, pass 2 in eager too (what a port without the capture would do)

Memory is counted two ways, and neither is RSS:
  - bytes held: the captured rows (AttentionCapture.nbytes) against the attention tensors the naive
    pass returns (L x H x S x S floats for the prefill, plus one row per layer and head per decode step);
  - peak tensor bytes: torch.profiler's CPU allocator events during one step, summed in time order (on CUDA: the allocator's peak):
    the most bytes of tensors alive at once above what was alive when the step began (weights excluded).

Also, where the simulator and the shipped model exist: how often the approximate pass 2 picks the same
action tokens as the exact one on benchmark frames, and rollout throughput with and without DTP.
"""


from . import pi0_run  # registers the pi0 shapes' builders and report lines
from .config import DEFAULT_MODELS, DTYPES, TARGETS, BenchConfig
from .models import BenchModel, build_model, builder_names, register_builder
from .pi0_models import PI0_SHAPES, Pi0Shape
from .profiling import count_work, peak_cuda_bytes, peak_tensor_bytes
from .report import format_report, register_formatter
from .run import bench_model, machine, run_bench
from .shapes import SHAPES, ModelShape, shape_from_json
from .timing import time_interleaved
from .variants import TAU_LADDER, VARIANTS, capture_step, naive_generate, naive_step

__all__ = [
    "BenchConfig", "DEFAULT_MODELS", "DTYPES", "TARGETS", "TAU_LADDER", "VARIANTS", "SHAPES", "ModelShape",
    "shape_from_json", "BenchModel", "build_model", "builder_names", "register_builder", "run_bench", "bench_model",
    "machine", "format_report", "time_interleaved",
    "peak_tensor_bytes", "peak_cuda_bytes", "count_work", "naive_generate", "naive_step", "capture_step",
    "PI0_SHAPES", "Pi0Shape", "register_formatter",
]
