"""Packing report: every figure is written, legible for empty and full statistics, HTML embeds them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from patchpack.errors import ErrorRecord
from patchpack.pack import PackConfig, make_packer
from patchpack.viz.report import FIGURES, write_report
from patchpack.stats import PackStats


def _stats(n: int = 300, seed: int = 0) -> PackStats:
    rng = np.random.default_rng(seed)
    s = PackStats()
    packer = make_packer(PackConfig(seq_len=256, buffer_size=32))
    seqs = []
    for i in range(n):
        gh, gw = (int(v) for v in rng.integers(1, 16, 2))
        keep = max(1, int(gh * gw * rng.uniform(0.5, 1.0)))
        s.add_example(gh * gw, keep, (1, gh, gw), (gh * 16, gw * 16))
        seqs += packer.push(i, keep)
    for q in seqs + packer.flush():
        s.add_sequence(q, 256)
    for kind in ["corrupt", "corrupt", "truncated"]:
        s.add_error(ErrorRecord("k", "shard.tar", "decode", kind, "bad"))
    return s


def _is_png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_png_report_writes_every_figure(tmp_path):
    paths = write_report(_stats(), tmp_path / "rep")
    names = [p.name for p in paths]
    assert names == [f"{stem}.png" for stem in FIGURES] + ["overview.png"]
    for p in paths:
        w, h = _is_png(p)
        assert w >= 400 and h >= 300
    # no HTML in png mode
    assert not (tmp_path / "rep" / "index.html").exists()


def test_html_report_embeds_pngs_and_round_trips_stats(tmp_path):
    stats = _stats()
    paths = write_report(stats, tmp_path, fmt="html")
    index = tmp_path / "index.html"
    assert index in paths
    page = index.read_text()
    for stem in FIGURES:
        assert f'src="{stem}.png"' in page
        assert (tmp_path / f"{stem}.png").is_file()
    assert "padding" in page and f"{stats.examples:,}" in page and "corrupt=2" in page
    assert 'src="overview.png"' in page  # one page with every figure
    back = PackStats.from_dict(json.loads((tmp_path / "stats.json").read_text()))
    assert back.to_dict() == stats.to_dict()


def test_empty_stats_still_draw(tmp_path):
    paths = write_report(PackStats(), tmp_path, fmt="html")
    names = {p.name for p in paths}
    assert names >= {f"{stem}.png" for stem in FIGURES} | {"index.html"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_extreme_aspect_and_single_bucket(tmp_path):
    s = PackStats()
    s.add_example(256, 256, (1, 1, 256))
    s.add_example(256, 256, (1, 256, 1))
    s.add_error("too-large")
    assert len(write_report(s, tmp_path)) == len(FIGURES) + 1


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_report(PackStats(), tmp_path, fmt="pdf")
