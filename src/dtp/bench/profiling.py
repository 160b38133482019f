"""What one bench step costs besides time: peak tensor memory (profiler on the CPU, the allocator on CUDA), FLOPs and operator calls."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

__all__ = ["peak_tensor_bytes", "peak_cuda_bytes", "count_work", "work_and_memory_fields"]


@contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Silence fd 2 (kineto prints start/stop lines from C++) for the duration of the block only."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Most bytes of CPU tensors alive at once during fn(), above those alive when it started.

    From torch.profiler's allocator events ([memory] events, signed sizes, summed in time order).
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _quiet_stderr_fd():
            prof.start()
        try:
            fn()
        finally:
            with _quiet_stderr_fd():
                prof.stop()
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return int(peak)



def peak_cuda_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Most bytes the CUDA caching allocator had allocated during fn(), above what was allocated when it started."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def count_work(fn: Callable[[], Any]) -> tuple[int, int]:
    """(FLOPs, aten ops) of one call of fn, counted by torch's dispatcher, not timed.

    FLOPs: torch.utils.flop_counter for matmuls and convolutions, plus 4 B H Sq Sk d per fused
    attention call (half that with is_causal and Sq == Sk) where the flop counter has no formula (the CPU kernel).
    aten ops: top-level operator calls, what eager mode launches one kernel (or so) each for on a GPU.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    class _Work(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0
            self.attention_flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            self.ops += 1
            if "scaled_dot_product" in func.__name__ and func._overloadpacket not in flop_registry:  # CPU kernels
                bound = dict(zip((a.name for a in func._schema.arguments), args)) | kwargs
                q, k = bound["query"], bound["key"]
                b, h, sq, d = q.shape
                sk = k.shape[-2]
                full = 4 * b * h * sq * sk * d
                self.attention_flops += full // 2 if bound.get("is_causal") and sq == sk else full
            return func(*args, **kwargs)

    with FlopCounterMode(display=False) as flops, _Work() as work:
        fn()
    return int(flops.get_total_flops()) + work.attention_flops, work.ops



def work_and_memory_fields(fns: dict[str, Callable[[], Any]], model: torch.nn.Module, device: torch.device, *,
                           count: bool, memory: bool) -> dict[str, Any]:
    """A bench result's FLOPs and operator calls (count) and peak tensor memory (memory) of each variant."""
    res: dict[str, Any] = {}
    if count:
        for n, fn in fns.items():
            res[f"{n}_flops"], res[f"{n}_aten_ops"] = count_work(fn)
    if memory:
        for n, fn in fns.items():
            res[f"{n}_peak_tensor_bytes"] = peak_cuda_bytes(fn, device) if device.type == "cuda" else peak_tensor_bytes(fn)
        if device.type == "cuda":
            res["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
            res["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return res
