"""``patchpack`` command line: one sub-command per module.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module, one-line help)
COMMANDS = {
    "demo": ("patchpack.demo", "make a small dataset, show its packing and train a tiny NaViT on it"),
    "simulate": ("patchpack.simulate", "pack a synthetic NaViT-like size distribution to choose L, buffer and Emax"),
    "stats": ("patchpack.inspect", "run the pipeline over shards without a model and print packing efficiency"),
    "train": ("patchpack.train", "train the reference NaViT (+ TokenLearner) on packed batches"),
    "preprocess": ("patchpack.offline", "turn webdataset shards into patchpack Arrow shards"),
    "show": ("patchpack.show", "draw packed sequences as a picture"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patchpack", description="Native-resolution Patch n' Pack for ViTs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
