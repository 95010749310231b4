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


def test_cost_packed_vs_unpacked_and_plain_words():
    from patchpack.config import LoaderConfig
    from patchpack.viz.summary import PackingCost, summary_text

    stats = _stats()
    cost = PackingCost.of(stats, LoaderConfig().with_overrides(seq_len=256, max_patches=225))
    assert cost.packed == stats.capacity == stats.sequences * 256
    assert cost.one_per_sequence == stats.examples * 256 and cost.padded_to_budget == stats.examples * 225
    rows = cost.to_dict()
    assert rows["one_per_sequence"]["times_packed"] == stats.examples * 256 / stats.capacity > 1
    assert rows["padded_to_budget"]["padding"] == 1 - stats.tokens / (stats.examples * 225)
    text = summary_text(stats, cost)
    assert "arrivals" not in text and f"{stats.examples:,} sequences, {stats.examples * 256:,} token slots" in text
    assert PackingCost.of(stats).padded_to_budget is None  # no config: no budget to pad to


def test_stats_json_says_what_its_keys_mean(tmp_path):
    stats = _stats()
    write_report(stats, tmp_path, fmt="html")
    d = json.loads((tmp_path / "stats.json").read_text())
    assert "2**(k-1) < kept tokens <= 2**k" in d["histogram_keys"]["tokens_per_example"]
    ranges = d["tokens_per_example_range"]
    assert sum(ranges.values()) == stats.examples and all("-" in k or k.isdigit() for k in ranges)
    assert d["cost"]["packed"]["token_slots"] == stats.capacity


def test_long_tails_stay_visible_on_log_axes():
    import matplotlib.pyplot as plt

    from patchpack.viz.summary import PackingCost

    stats = _stats()
    for stem, scale_of in (("padding_per_sequence", "get_yscale"), ("tokens_per_example", "get_xscale")):
        fig, ax = plt.subplots()
        FIGURES[stem][1][0](ax, stats, PackingCost.of(stats))
        assert getattr(ax, scale_of)() == "log", stem
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) <= 12  # legible, never a crowd of tick labels
        plt.close(fig)


@pytest.mark.parametrize("examples", [300, 2400, 200_000])
def test_cost_figure_labels_stay_inside_the_figure_and_ticks_do_not_overlap(examples):
    """Each bar's "N.Nx (S seq.)" label ends inside the figure, and the token-slot tick labels
    (hundreds of thousands on a real stream) do not run into each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchpack.config import LoaderConfig
    from patchpack.viz.summary import PackingCost

    stats = _stats()
    scale = examples / stats.examples
    stats.examples, stats.tokens = examples, int(stats.tokens * scale)
    stats.sequences, stats.capacity = int(stats.sequences * scale), int(stats.sequences * scale) * 256
    cost = PackingCost.of(stats, LoaderConfig().with_overrides(seq_len=256, max_patches=225))
    size, (draw,) = FIGURES["cost"]
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    draw(ax, stats, cost)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    labels = [t for t in ax.texts if "seq.)" in t.get_text()]
    assert len(labels) == 3
    assert all(t.get_window_extent(renderer).x1 <= width for t in labels), [t.get_text() for t in labels]
    ticks = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
    assert len(ticks) >= 3 and all(a.x1 < b.x0 for a, b in zip(ticks, ticks[1:]))
    plt.close(fig)
