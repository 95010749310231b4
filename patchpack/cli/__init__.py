"""The ``patchpack`` command line: one sub-command per module, shared flags in :mod:`~patchpack.cli.flags`.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, and the shared flags
import nothing heavy, so a bad value and a wrong path answer before numpy loads (``--help`` loads
the config for its defaults) and torch loads only for the commands that need it (``train``,
``eval``, ``demo``, ``show`` and ``stats --workers N``).

Exit codes: 0 success; 1 a run where no example came through or a source could not be
opened (the first error records and a hint are printed, see :mod:`patchpack.cli.checks`);
2 a mistake in what was asked (a bad option value, a missing path, a configuration trap),
printed as one line ``patchpack COMMAND: error: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .flags import HelpFormatter

#: command -> (module, one-line help)
COMMANDS = {
    "demo": ("patchpack.cli.demo", "make a small dataset, show its packing and train a tiny NaViT on it"),
    "simulate": ("patchpack.cli.simulate",
                 "pack a synthetic NaViT-like size distribution to choose L, buffer size and max per sequence"),
    "stats": ("patchpack.cli.stats", "run the pipeline over shards without a model and print packing efficiency"),
    "train": ("patchpack.cli.train", "train the reference NaViT (+ TokenLearner) on packed batches"),
    "eval": ("patchpack.cli.eval", "evaluate a trained run at several patch budgets (NaViT's flexible inference)"),
    "preprocess": ("patchpack.cli.preprocess", "turn webdataset shards into patchpack Arrow shards"),
    "show": ("patchpack.cli.show", "draw packed sequences as a picture"),
    "config": ("patchpack.cli.config", "print the effective loader config (every option) as TOML or YAML"),
}


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (the usage stays behind ``--help``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="patchpack", description="Native-resolution Patch n' Pack for ViTs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad option value already said in one line
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    from .checks import UsageError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except UsageError as exc:  # a mistake in what was asked: one line, no traceback
        print(f"patchpack {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
