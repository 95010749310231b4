"""``patchpack config [flags]``: print the effective loader config, every option, as TOML or YAML.

The same flags and ``--config FILE`` as the other commands, so ``patchpack config --seq-len 512
> run.toml`` writes the file that reproduces a run: ``patchpack stats URLS --config run.toml``,
``patchpack train URLS --config run.toml`` or ``make_loader(urls, load_config_file("run.toml"))``
give the same batches. ``URLS`` (optional) are read for the values patchpack shards supply
(patch size, budget), as the other commands do.
"""

from __future__ import annotations

import argparse

from . import checks, flags, options

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="*", help="sources whose patchpack shards supply their patch size and budget")
    parser.add_argument("--format", choices=("toml", "yaml"), default="toml", help="output format (default toml)")
    flags.add_config(parser)
    flags.add_flags(parser)


def run(args: argparse.Namespace) -> int:
    from ..configfile import dump_config

    urls = checks.check_sources(args.urls) if args.urls else None
    cfg = options.loader_config(args, urls)
    try:
        text = dump_config(cfg, args.format)
    except ImportError:
        raise checks.UsageError("--format yaml needs pyyaml: pip install 'patchpack[yaml]'") from None
    print(text, end="")
    return 0
