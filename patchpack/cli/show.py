"""``patchpack show URLS... --out F.png``: draw the first packed batches of a loader (see :mod:`patchpack.viz.show`).

``--out`` is a picture file (``.png``, ``.svg``, ``.pdf``, ``.jpg``); batch ``i > 0`` goes to
``STEM-i.png``. An existing folder gets ``show.png`` (``show-1.png``, ...) inside it.

The packer fills sequences from a buffer of ``--buffer-size`` examples. When the data is
smaller than the buffer, every example arrives before the first sequence is built and the
best-fit packer fills each sequence to the budget, so the picture would show no padding and
no ordering effect. Without ``--buffer-size`` (flag or file) ``show`` therefore uses a buffer
of :data:`SHOW_BUFFER` examples, enough to show how packing fills sequences as the stream
goes; ``--buffer-size`` shows any other buffer, the training one included.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import checks, flags, options

__all__ = ["add_arguments", "run", "SHOW_BUFFER", "out_paths"]

#: buffer used when none is given: small enough that a small dataset still shows the packing
SHOW_BUFFER = 64
_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="webdataset shards (brace patterns allowed), folders or patchpack shards")
    parser.add_argument("--out", default="show.png",
                        help="picture to write (.png, .svg, .pdf, .jpg), or a folder to write show.png into; "
                             "batch i > 0 goes to STEM-i (default show.png)")
    parser.add_argument("--batches", type=flags.positive_int, default=1, help="number of batches to draw (default 1)")
    parser.add_argument("--rows", type=flags.positive_int, default=None,
                        help="sequences drawn per batch (default: all)")
    flags.add_config(parser)
    flags.add_flags(parser)
    flags.add_flags(parser, only=("--workers",))


def out_paths(out: str, batches: int) -> list[Path]:
    """The files ``--out`` names for ``batches`` batches; a mistake in it is a one-line UsageError."""
    path = Path(out)
    if path.is_dir():
        path = path / "show.png"
    elif path.suffix.lower() not in _FORMATS:
        raise checks.UsageError(f"--out {out}: give a picture file ending in {', '.join(_FORMATS)}, or a folder")
    checks.check_output_folder(str(path.parent), "--out")
    if not os.path.isdir(path.parent):
        raise checks.UsageError(f"--out {out}: the folder {path.parent} does not exist")
    return [path if i == 0 else path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(batches)]


def run(args: argparse.Namespace) -> int:
    urls = checks.check_sources(args.urls)
    paths = out_paths(args.out, args.batches)
    given = {**options.file_options(args), **flags.given(args)}
    cfg = options.loader_config(args, urls, **({} if "pack__buffer_size" in given else
                                                {"pack__buffer_size": SHOW_BUFFER}))
    checks.check_output_file(cfg.errors_path, "--errors")
    from ..loader import make_loader  # the loader composes the pipeline; imported only here
    from ..viz.show import draw_batch

    with checks.config_errors(options.in_user_words):
        loader = make_loader(urls, cfg, num_workers=args.workers)
    n = 0
    for path, batch in zip(paths, loader):
        written = draw_batch(batch, cfg.patch_size, cfg.tubelet, 3, path=path, rows=args.rows)  # RGB
        print(f"wrote {written} ({batch.batch_size} sequences, {batch.num_examples} examples, "
              f"padding {100 * batch.padding_fraction:.1f}%)")
        n += 1
    if n and cfg.pack.buffer_size == SHOW_BUFFER and "pack__buffer_size" not in given:
        print(f"(packed from a buffer of {SHOW_BUFFER} examples, so that small data shows packing; "
              f"--buffer-size N draws another)")
    if loader.errors and n:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(loader.stats.error_kinds.items()))
        print(f"{len(loader.errors)} error records, not drawn ({kinds}); first: {checks.printable(loader.errors[0].key)}: "
              f"{checks.printable(loader.errors[0].message)}")
    return checks.report_outcome("show", n and loader.stats.examples, loader.errors, urls=urls, video=cfg.video,
                                 seq_len=cfg.pack.seq_len, label_field=cfg.label_field)
