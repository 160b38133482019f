"""`dtp serve`: a DTP-wrapped policy over the openpi or vla-eval WebSocket protocol."""

from __future__ import annotations

import argparse

from . import options as o

HELP = "serve a DTP-wrapped policy over the openpi or vla-eval WebSocket protocol"
DESCRIPTION = ("Serve until SIGTERM/Ctrl-C. DTP_SERVE_API_KEY (env) makes the openpi protocol require "
               "'Authorization: Api-Key <key>'. See docs/serve.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_model_option(p)
    p.add_argument("--model-arg", type=o.key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="keyword for dtp.models.load, JSON-typed (e.g. unnorm_key=bridge_orig trust_remote_code=true)")
    p.add_argument("--protocol", choices=("openpi", "vla-eval"), required=True)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; others need --allow-remote)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one and prints it)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (prints a warning)")
    p.add_argument("--diagnostics", action="store_true", help="add DTP's per-step diagnostics to every reply")
    p.add_argument("--no-dtp", action="store_true", help="serve the plain policy (one pass, the baseline)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--max-batch", type=o.positive, default=1, metavar="N",
                   help="step up to N clients' concurrent requests together in one batched DTP step "
                        "(default 1: each request alone)")
    p.add_argument("--batch-window-ms", type=o.non_negative_float, default=5.0, metavar="MS",
                   help="with --max-batch > 1: how long the first request waits for others to join (default 5)")
    o.add_dtp_options(p)


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from ..models import SHIPPED_MODELS, load
    from ..serve import ServedPolicy, check_batching, check_bind, serve

    check_bind(args.host, args.allow_remote, warn=False)  # before loading the model
    check_batching(args.max_batch, args.batch_window_ms)
    torch.set_num_threads(args.threads)
    dtp = o.dtp_config(args)
    if args.no_dtp:
        dtp = dtp.replace(enabled=False)
    adapter = load(args.model, **dict(args.model_arg))
    served = ServedPolicy(adapter, dtp, model_name=str(args.model), observe=args.diagnostics)
    action_spec = None
    meta_world = getattr(adapter, "benchmark_variant", None) != "libero"  # tinyvla-libero speaks LIBERO's actions
    if args.protocol == "vla-eval" and str(args.model) in SHIPPED_MODELS and meta_world:
        from ..serve.benchmark import METAWORLD_ACTION_SPEC
        from ..serve.vlaeval import require_vla_eval

        require_vla_eval()
        action_spec = METAWORLD_ACTION_SPEC
    serve(served, protocol=args.protocol, host=args.host, port=args.port, allow_remote=args.allow_remote,
          api_key=os.environ.get("DTP_SERVE_API_KEY") or None, diagnostics=args.diagnostics, action_spec=action_spec,
          max_batch=args.max_batch, batch_window_ms=args.batch_window_ms)
    return 0
