"""Packing reports: histograms of a :class:`~patchpack.stats.PackStats` as PNG files or an HTML page.

:func:`write_report` draws, with matplotlib's non-interactive Agg backend, one PNG per
figure plus an ``overview.png`` holding all of them:

* ``tokens_per_example.png``: packed tokens per example (power-of-two buckets);
* ``examples_per_sequence.png``: examples packed into one sequence;
* ``resolution.png``: fitted grid height x width in patches (marker area = examples)
  and the aspect ratio ``W / H`` of the fitted grids;
* ``drop_rates.png``: realised per-example drop fraction;
* ``padding_per_sequence.png``: padding fraction of each sequence;
* ``errors.png``: error records by kind.

With ``fmt="html"`` it also writes ``index.html`` (a summary table and the PNGs) and
``stats.json`` (:meth:`PackStats.to_dict`), so the report can be reloaded and merged.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # never open a window; safe in workers and headless CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..stats import PackStats  # noqa: E402

__all__ = ["write_report", "FIGURES", "REPORT_FORMATS"]

REPORT_FORMATS = ("png", "html")

_BAR = "#4C72B0"
_ERR = "#C44E52"


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _pow2_label(k: int) -> str:
    if k <= 0:
        return "1"
    lo, hi = 2 ** (k - 1) + 1, 2**k
    return str(hi) if lo == hi else f"{lo}-{hi}"


def _plot_tokens(ax: Axes, s: PackStats) -> None:
    ax.set_title("Tokens per example (after dropping)")
    if not s.tokens_per_example:
        return _no_data(ax, "packed examples")
    ks = sorted(int(k) for k in s.tokens_per_example)
    ks = list(range(ks[0], ks[-1] + 1))  # show empty buckets in between
    counts = [s.tokens_per_example.get(k, 0) for k in ks]
    ax.bar(range(len(ks)), counts, color=_BAR)
    ax.set_xticks(range(len(ks)), [_pow2_label(k) for k in ks], rotation=45, ha="right")
    ax.set_xlabel("tokens per example (bucket)")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_examples_per_seq(ax: Axes, s: PackStats) -> None:
    ax.set_title(f"Examples per sequence (mean {s.mean_examples_per_seq:.2f})")
    if not s.examples_per_seq:
        return _no_data(ax, "sequences")
    ks = sorted(int(k) for k in s.examples_per_seq)
    ax.bar(ks, [s.examples_per_seq[k] for k in ks], color=_BAR, width=0.8)
    ax.set_xlabel("examples in the sequence")
    ax.set_ylabel("sequences")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(ks) <= 30:
        ax.set_xticks(ks)


def _parse_hw(k: str) -> tuple[int, int] | None:
    a, sep, b = str(k).partition("x")
    try:
        return (int(a), int(b)) if sep else None
    except ValueError:
        return None


def _plot_grids(ax: Axes, s: PackStats) -> None:
    ax.set_title("Fitted resolution (grid in patches)")
    pts = [(hw, n) for k, n in s.grids.items() if (hw := _parse_hw(k)) is not None]
    if not pts:
        return _no_data(ax, "examples")
    h = np.array([p[0][0] for p in pts])
    w = np.array([p[0][1] for p in pts])
    n = np.array([p[1] for p in pts], dtype=float)
    area = 20 + 280 * n / n.max()
    sc = ax.scatter(w, h, s=area, c=n, cmap="viridis", alpha=0.8, edgecolors="k", linewidths=0.4)
    ax.set_xlabel("grid width W (patches)")
    ax.set_ylabel("grid height H (patches)")
    top = max(h.max(), w.max()) + 1
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.plot([0, top], [0, top], ls=":", color="0.6", lw=1)  # square grids
    ax.set_aspect("equal", adjustable="box")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    cb = ax.figure.colorbar(sc, ax=ax, label="examples", fraction=0.046, pad=0.04)
    cb.locator = MaxNLocator(integer=True)
    cb.update_ticks()


def _plot_aspect(ax: Axes, s: PackStats) -> None:
    ax.set_title("Aspect ratio of fitted grids")
    pts = [(hw, n) for k, n in s.grids.items() if (hw := _parse_hw(k)) is not None and min(hw) > 0]
    if not pts:
        return _no_data(ax, "examples")
    logr = np.array([math.log2(w / h) for (h, w), _ in pts])
    n = np.array([c for _, c in pts], dtype=float)
    lo, hi = min(logr.min(), -1.0), max(logr.max(), 1.0)
    step = 0.25 if hi - lo <= 8 else 0.5  # bins in log2 units, one centred on square grids
    bins = (np.arange(math.floor(lo / step), math.ceil(hi / step) + 1) - 0.5) * step
    bins = np.append(bins, bins[-1] + step)
    ax.hist(logr, bins=bins, weights=n, color=_BAR)
    ticks = [t for t in range(math.floor(bins[0]), math.ceil(bins[-1]) + 1)]
    ax.set_xticks(ticks, [f"{2.0 ** t:g}" if t >= 0 else f"1/{2 ** -t:g}" for t in ticks])
    ax.axvline(0, ls=":", color="0.4", lw=1)
    ax.set_xlabel("aspect ratio W / H (log scale; <1 portrait, >1 landscape)")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_hundredths(ax: Axes, hist: dict, title: str, xlabel: str, ylabel: str, what: str) -> None:
    ax.set_title(title)
    if not hist:
        return _no_data(ax, what)
    xs = np.array([float(k) for k in hist])
    ys = np.array([hist[k] for k in hist])
    ax.bar(xs * 100, ys, width=0.9, color=_BAR)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = xs.min() * 100, xs.max() * 100
    pad = max(2.0, (hi - lo) * 0.05)
    ax.set_xlim(max(-1.0, lo - pad), min(101.0, hi + pad))


def _plot_drop(ax: Axes, s: PackStats) -> None:
    _plot_hundredths(
        ax, s.drop_rates, f"Drop rate per example (overall {100 * s.drop_fraction:.1f}%)",
        "tokens dropped (% of the example's tokens)", "examples", "examples",
    )


def _plot_padding(ax: Axes, s: PackStats) -> None:
    _plot_hundredths(
        ax, s.padding_per_seq, f"Padding per sequence (overall {100 * s.padding_fraction:.2f}%)",
        "padding (% of the sequence length)", "sequences", "sequences",
    )


def _plot_errors(ax: Axes, s: PackStats) -> None:
    ax.set_title(f"Errors by kind ({s.errors} in all)")
    if not s.error_kinds:
        return _no_data(ax, "errors")
    items = sorted(s.error_kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    ys = range(len(items))
    ax.barh(ys, [v for _, v in items], color=_ERR)
    ax.set_yticks(ys, [k for k, _ in items])
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for y, (_, v) in zip(ys, items):
        ax.text(v, y, f" {v}", va="center", fontsize=9)
    ax.margins(x=0.15)


def _plot_resolution(fig: plt.Figure, s: PackStats) -> None:
    a, b = fig.subplots(1, 2)
    _plot_grids(a, s)
    _plot_aspect(b, s)


#: file stem -> (figure size in inches, drawer). Single-axes drawers take ``(ax, stats)``.
FIGURES: dict[str, tuple[tuple[float, float], Callable]] = {
    "tokens_per_example": ((6.4, 4.2), _plot_tokens),
    "examples_per_sequence": ((6.4, 4.2), _plot_examples_per_seq),
    "resolution": ((12.0, 5.0), _plot_resolution),
    "drop_rates": ((6.4, 4.2), _plot_drop),
    "padding_per_sequence": ((6.4, 4.2), _plot_padding),
    "errors": ((6.4, 4.2), _plot_errors),
}

_SINGLE = [_plot_tokens, _plot_examples_per_seq, _plot_grids, _plot_aspect, _plot_drop, _plot_padding, _plot_errors]


def _save(fig: plt.Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _summary_rows(s: PackStats) -> list[tuple[str, str]]:
    return [
        ("examples packed", f"{s.examples:,}"),
        ("sequences", f"{s.sequences:,}"),
        ("examples per sequence (mean)", f"{s.mean_examples_per_seq:.2f}"),
        ("padding", f"{100 * s.padding_fraction:.3f}% of {s.capacity:,} token slots"),
        ("tokens packed", f"{s.tokens:,}"),
        ("tokens dropped", f"{s.dropped_tokens:,} ({100 * s.drop_fraction:.1f}% of {s.source_tokens:,})"),
        ("wait in packer (arrivals)", f"mean {s.mean_wait:.1f}, max {s.max_wait}"),
        ("errors", f"{s.errors:,}"),
        *[(f"errors: {k}", f"{v:,}") for k, v in sorted(s.error_kinds.items())],
    ]


def _write_html(s: PackStats, out: Path, pngs: list[Path]) -> Path:
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(s)
    )
    imgs = "\n".join(
        f'<figure><img src="{p.name}" alt="{html.escape(p.stem)}"><figcaption>{html.escape(p.stem)}'
        "</figcaption></figure>"
        for p in pngs
        if p.stem != "overview"
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>patchpack packing report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head><body>
<h1>patchpack packing report</h1>
<table>
{rows}
</table>
{imgs}
<p><a href="stats.json">stats.json</a></p>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_report(stats: PackStats, out_dir, fmt: str = "png", dpi: int = 110) -> list[Path]:
    """Write the packing report for ``stats`` into ``out_dir`` (created if missing).

    Args:
        stats: accumulated (possibly merged) packing statistics.
        out_dir: output folder.
        fmt: ``"png"`` (the PNGs, see module doc) or ``"html"`` (the PNGs, ``index.html``
            and ``stats.json``).
        dpi: PNG resolution in dots per inch.

    Returns:
        The written files, PNGs first (``overview.png`` last among them).
    """
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {REPORT_FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, (size, draw) in FIGURES.items():
        if draw is _plot_resolution:
            fig = plt.figure(figsize=size, layout="constrained")
            draw(fig, stats)
        else:
            fig, ax = plt.subplots(figsize=size, layout="constrained")
            draw(ax, stats)
        written.append(_save(fig, out / f"{stem}.png", dpi))

    fig, axes = plt.subplots(2, 4, figsize=(22, 9.5), layout="constrained")
    for ax, draw in zip(axes.flat, _SINGLE):
        draw(ax, stats)
    axes.flat[-1].axis("off")
    axes.flat[-1].text(
        0.0, 1.0, "\n".join(f"{k}: {v}" for k, v in _summary_rows(stats)),
        va="top", ha="left", family="monospace", fontsize=10, transform=axes.flat[-1].transAxes,
    )
    fig.suptitle("patchpack packing report", fontsize=15)
    written.append(_save(fig, out / "overview.png", dpi))

    if fmt == "html":
        (out / "stats.json").write_text(json.dumps(stats.to_dict(), indent=1), encoding="utf-8")
        written.append(_write_html(stats, out, written))
        written.append(out / "stats.json")
    return written
