"""`dtp`: thin shells over the Python API, one module per command (each maps its options onto one function).

Adding a command is one new module here plus one line in COMMANDS. The module `dtp/cli/foo_bar.py` is
the command `dtp foo-bar` and defines:

    HELP = "one line for `dtp --help`"
    DESCRIPTION = "..."                       # optional: the paragraph of `dtp foo-bar --help`
    def add_arguments(parser): ...            # its options
    def run(args) -> int: ...                 # the handler: heavy imports (torch, the simulator) go in here
    def on_interrupt(args) -> str: ...        # optional: what a Ctrl-C left behind, in one line

Shared option types and groups are in dtp.cli.options, each group beside the function that maps it
onto the API: add_run_options -> EvalSpec(**run_fields(args)), add_dtp_options -> dtp_config(args).
A user mistake is raised as a dtp.errors class (ConfigError, InputError, CheckpointError, ...) and
printed as one line with exit code 2 (its traceback with -v); anything else keeps its traceback; a
module of an optional extra that is missing (OPTIONAL_EXTRAS) says which `pip install` fixes it.

Only the chosen command's options are built, and a module imports nothing heavy at its top, so
`dtp --help`, `--version`, every `--help` and every argument error answer without loading torch
(tests/cli/test_cli_light.py checks every command in COMMANDS). Ctrl-C says what was saved and exits
130. Everything a run depends on is checked before its folder is created (see dtp.eval.preflight),
so a typo never leaves a half-made run behind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Collection
from types import ModuleType

from .. import __version__
from ..errors import DTPError
from .options import HelpFormatter, Parser

__all__ = ["COMMANDS", "HelpFormatter", "Parser", "build_parser", "main"]

# module names under dtp/cli, in the order `dtp --help` lists them ("_" in a name is "-" in the command)
COMMANDS = (
    "demo", "eval", "sweep", "audit", "robustness", "compare", "analyze", "show", "view", "layers", "swap",
    "collect", "train", "grounding_data", "grounding_eval",
    "serve", "latency", "bench",
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def _command_name(module: str) -> str:
    return module.replace("_", "-")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `dtp` parser with the options of `commands` (None: every command's, for tests and documentation).

    `main` builds only the chosen command's options; the others are listed by name and HELP."""
    parser = Parser(
        prog="dtp", description="Distracting Token Pruning for vision-language-action policies (arXiv 2601.16065)."
    )
    parser.add_argument("--version", action="version", version=f"dtp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, third-party logs, and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    parser.command_parsers = sub.choices  # command name -> its parser
    for module_name in COMMANDS:
        mod = _module(module_name)
        name = _command_name(module_name)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", None))
        if commands is None or name in commands:
            mod.add_arguments(p)
            p.set_defaults(func=mod.run, on_interrupt=getattr(mod, "on_interrupt", None))
    return parser


def _chosen_command(argv: list[str]) -> str | None:
    """The command word of `argv`: the first word that is not an option (dtp's own options take no values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _setup_logging(verbose: bool) -> None:
    """dtp's own INFO lines always; third-party INFO (OpenGL, Ray, ...) only with -v."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when a host (e.g. pytest) configured logging first
    logging.getLogger("dtp").setLevel(logging.DEBUG if verbose else logging.INFO)


# optional extras (pyproject.toml) by the module a command imports from them: a missing one is the
# user's setup to fix, said in one line; any other missing module is a broken install (traceback)
OPTIONAL_EXTRAS = {"ray": "ray", "websockets": "serve", "msgpack": "serve", "vla_eval": "serve", "timm": "openvla-ref"}


def _missing_extra(e: ModuleNotFoundError) -> str | None:
    extra = OPTIONAL_EXTRAS.get((e.name or "").partition(".")[0])
    return None if extra is None else f"this needs {e.name}, which is not installed: pip install 'dtp[{extra}]'"


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user mistake (a dtp error: bad value, name, path, no OpenGL, a missing extra)
    is one line on stderr and exit code 2, its traceback only with -v; anything else is a bug and
    keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen_command(argv)
    parser = build_parser([chosen] if chosen else [])
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.command_parsers.get(args.command, parser).unrecognized(unknown)
    args.argv = argv  # the words as given (a run records its command)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"dtp {args.command}: {_interrupted(args)}", file=sys.stderr)
        return 130
    except (DTPError, ModuleNotFoundError) as e:
        message = _missing_extra(e) if isinstance(e, ModuleNotFoundError) else " ".join(str(e).split())
        if message is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"dtp {args.command}: error: {message or type(e).__name__}", file=sys.stderr)
        return 2


def _interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C left behind, from the command's own note."""
    try:
        return args.on_interrupt(args) if args.on_interrupt else "interrupted"
    except Exception:  # the note is a courtesy; never a second traceback after Ctrl-C
        return "interrupted"
