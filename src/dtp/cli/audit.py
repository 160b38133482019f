"""`dtp audit`: could pruning help this model, and does DTP find what to prune? (dtp.experiments.audit)"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options as o

HELP = "could pruning help this model? clean vs cluttered, oracle removal, DTP, random, on paired scenes"
DESCRIPTION = ("On the same scenes: the baseline with the clutter and without it (Meta-World: distractors and "
               "lookalikes off; LIBERO: a _with_* suite's task against its base suite's), exact removal of every "
               "distractor patch (the upper bound of any pruning), DTP at --tau, and random pruning of as many "
               "tokens. Writes OUT/clean and OUT/cluttered (resumable run folders) and OUT/audit.md, audit.json, "
               "audit.png. See docs/results.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_run_options(p, episodes=10)
    o.add_runner_options(p)
    o.add_dtp_options(p)


def run(args: argparse.Namespace) -> int:
    from ..eval import run_eval
    from ..experiments.audit import audit_specs, check_dtp, write_audit

    o.check_runner_flags(args)
    dtp = check_dtp(o.dtp_config(args))
    cluttered, clean, twins = audit_specs(o.run_fields(args), dtp)
    out = Path(args.out)
    kw = o.runner_kwargs(args)
    clean_store = run_eval(clean, out / "clean", **kw) if clean is not None else None  # its one config: baseline
    cluttered_store = run_eval(cluttered, out / "cluttered", only=args.only, **kw)
    summary = write_audit(out, cluttered_store, clean_store, twins, f"{args.model} on {','.join(args.tasks)}")
    print((out / "audit.md").read_text())
    print(f"results: {out}/audit.md, audit.json, audit.png; runs: {out}/clean, {out}/cluttered")
    return 0 if summary else 1


def on_interrupt(args: argparse.Namespace) -> str:
    return f"interrupted: episodes so far are saved in {args.out}/clean and {args.out}/cluttered; " \
           "rerun the same command to resume"
