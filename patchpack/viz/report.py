"""Packing reports a person reads at a glance: PNG figures and one HTML page.

The text and the packed vs unpacked cost come from :mod:`patchpack.viz.summary`.
:func:`write_report` draws, with
matplotlib's non-interactive Agg backend (imported only then), one PNG per figure and an
``overview.png`` holding all of them:

* ``cost.png``: token slots needed with packing and without (the two ways above);
* ``tokens_per_example.png``: kept tokens per example (log axis, power-of-two bins);
* ``examples_per_sequence.png``: examples packed into one sequence;
* ``resolution.png``: fitted grid height x width in patches, and the aspect ratio ``W / H``;
* ``drop_rates.png``: realised per-example drop fraction;
* ``padding_per_sequence.png``: padding of each sequence (log count axis: the few sequences
  with much padding, often the last ones, stay visible);
* ``errors.png``: error records by kind.

With ``fmt="html"`` it also writes ``index.html`` (the summary, the cost table and every
figure, ``overview.png`` included) and ``stats.json``: :meth:`PackStats.to_dict` (reloadable
with :meth:`PackStats.from_dict`) plus ``cost``, ``data_wait`` and ``tokens_per_example_range``,
the token histogram keyed by its range (``"129-256"``); ``tokens_per_example`` itself is keyed
by ``k``, the bin of ``2**(k-1) < tokens <= 2**k`` (``histogram_keys`` says so in the file).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..stats import PackStats
from .summary import PackingCost, bucket_range, summary_rows

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["write_report", "FIGURES", "REPORT_FORMATS"]

REPORT_FORMATS = ("png", "html")
_BAR, _ERR, _PAD = "#4C72B0", "#C44E52", "#BBBBBB"


# -- figures ---------------------------------------------------------------------------------------------------


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _integer_y(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_cost(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title("Token slots needed: packed vs without packing")
    if not s.examples:
        return _no_data(ax, "packed examples")
    rows = cost.rows()
    ys = range(len(rows))
    ax.barh(ys, [cost.tokens] * len(rows), color=_BAR, label="example tokens")
    ax.barh(ys, [slots - cost.tokens for _, _, slots, _ in rows], left=cost.tokens, color=_PAD, label="padding")
    ax.set_yticks(ys, [w.replace(", ", "\n", 1) if len(w) > 30 else w for w, *_ in rows], fontsize=8)
    ax.invert_yaxis()
    for y, (_, n, slots, _) in zip(ys, rows):
        ax.text(slots, y, f" {cost.times(slots):.1f}x ({n:,} seq.)", va="center", fontsize=9)
    ax.set_xlabel("token slots")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(lambda x, _: _compact(x))
    ax.set_xlim(0, max(slots for _, _, slots, _ in rows) / 0.7)  # room for the longest bar's label
    ax.legend(loc="lower right", fontsize=8, frameon=False)


def _compact(x: float) -> str:
    """A tick label that stays short: 950, 12k, 1.2M, 3G."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def _plot_tokens(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    ax.set_title("Tokens per example (after dropping)")
    if not s.tokens_per_example:
        return _no_data(ax, "packed examples")
    ks = sorted(int(k) for k in s.tokens_per_example)
    lefts = [2 ** (k - 1) if k > 0 else 0.5 for k in ks]
    widths = [2**k - left for k, left in zip(ks, lefts)]
    ax.bar(lefts, [s.tokens_per_example[k] for k in ks], width=widths, align="edge", color=_BAR, edgecolor="white")
    ax.set_xscale("log", base=2)
    lo, hi = min(lefts), 2 ** ks[-1]
    step = max(1, math.ceil((math.log2(hi) - math.log2(lo)) / 10))
    ticks = [2.0**e for e in range(int(math.log2(lo)), int(math.log2(hi)) + 1, step)]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("tokens in the example (bins: 2^(k-1) < n <= 2^k)")
    ax.set_ylabel("examples")
    _integer_y(ax)


def _plot_examples_per_seq(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(f"Examples per sequence (mean {s.mean_examples_per_seq:.2f})")
    if not s.examples_per_seq:
        return _no_data(ax, "sequences")
    ks = sorted(int(k) for k in s.examples_per_seq)
    ax.bar(ks, [s.examples_per_seq[k] for k in ks], color=_BAR, width=0.8)
    ax.set_xlabel("examples in the sequence")
    ax.set_ylabel("sequences")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    _integer_y(ax)


def _grid_points(s: PackStats) -> list[tuple[int, int, int]]:
    out = []
    for k, n in s.grids.items():
        a, sep, b = str(k).partition("x")
        if sep and a.isdigit() and b.isdigit():
            out.append((int(a), int(b), n))
    return out


def _plot_grids(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title("Fitted resolution (grid in patches)")
    pts = _grid_points(s)
    if not pts:
        return _no_data(ax, "examples")
    h, w, n = (list(c) for c in zip(*pts))
    top = max(max(h), max(w)) + 1
    sc = ax.scatter(w, h, s=[20 + 280 * c / max(n) for c in n], c=n, cmap="viridis", alpha=0.8, edgecolors="k",
                    linewidths=0.4)
    ax.set(xlabel="grid width W (patches)", ylabel="grid height H (patches)", xlim=(0, top), ylim=(0, top))
    ax.plot([0, top], [0, top], ls=":", color="0.6", lw=1)  # square grids
    ax.set_aspect("equal", adjustable="box")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.figure.colorbar(sc, ax=ax, label="examples", fraction=0.046, pad=0.04)


def _plot_aspect(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    import numpy as np

    ax.set_title("Aspect ratio of fitted grids")
    pts = [(h, w, n) for h, w, n in _grid_points(s) if min(h, w) > 0]
    if not pts:
        return _no_data(ax, "examples")
    logr = np.array([math.log2(w / h) for h, w, _ in pts])
    lo, hi = min(logr.min(), -1.0), max(logr.max(), 1.0)
    step = 0.25 if hi - lo <= 8 else 0.5  # bins in log2 units, one centred on square grids
    bins = (np.arange(math.floor(lo / step), math.ceil(hi / step) + 2) - 0.5) * step
    ax.hist(logr, bins=bins, weights=[n for *_, n in pts], color=_BAR)
    every = max(1, math.ceil((bins[-1] - bins[0]) / 10))
    ticks = list(range(math.floor(bins[0]), math.ceil(bins[-1]) + 1, every))
    ax.set_xticks(ticks, [f"{2.0 ** t:g}" if t >= 0 else f"1/{2 ** -t:g}" for t in ticks])
    ax.axvline(0, ls=":", color="0.4", lw=1)
    ax.set_xlabel("aspect ratio W / H (log scale; <1 portrait, >1 landscape)")
    ax.set_ylabel("examples")
    _integer_y(ax)


def _plot_hundredths(ax: Axes, hist: dict, title: str, xlabel: str, ylabel: str, log: bool = False) -> None:
    ax.set_title(title)
    if not hist:
        return _no_data(ax, ylabel)
    xs = [100 * float(k) for k in hist]
    ax.bar(xs, list(hist.values()), width=0.9, color=_BAR)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    if log:
        ax.set_yscale("log")
    else:
        _integer_y(ax)
    pad = max(2.0, (max(xs) - min(xs)) * 0.05)
    ax.set_xlim(max(-1.0, min(xs) - pad), min(101.0, max(xs) + pad))


def _plot_drop(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    _plot_hundredths(ax, s.drop_rates, f"Drop rate per example (overall {100 * s.drop_fraction:.1f}%)",
                     "tokens dropped (% of the example's tokens)", "examples")


def _plot_padding(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    _plot_hundredths(ax, s.padding_per_seq, f"Padding per sequence (overall {100 * s.padding_fraction:.2f}%)",
                     "padding (% of the sequence length)", "sequences", log=True)


def _plot_errors(ax: Axes, s: PackStats, cost: PackingCost) -> None:
    from matplotlib.ticker import MaxNLocator

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


#: file stem -> (figure size in inches, drawers: one per axes, each ``(ax, stats, cost)``)
FIGURES: dict[str, tuple[tuple[float, float], tuple[Callable, ...]]] = {
    "cost": ((7.5, 3.6), (_plot_cost,)),
    "tokens_per_example": ((6.4, 4.2), (_plot_tokens,)),
    "examples_per_sequence": ((6.4, 4.2), (_plot_examples_per_seq,)),
    "resolution": ((12.0, 5.0), (_plot_grids, _plot_aspect)),
    "drop_rates": ((6.4, 4.2), (_plot_drop,)),
    "padding_per_sequence": ((6.4, 4.2), (_plot_padding,)),
    "errors": ((6.4, 4.2), (_plot_errors,)),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # never open a window; safe in workers and headless CI
    import matplotlib.pyplot as plt

    return plt


def _draw(stem: str, stats: PackStats, cost: PackingCost, path: Path, dpi: int) -> Path:
    plt = _pyplot()
    size, drawers = FIGURES[stem]
    fig, axes = plt.subplots(1, len(drawers), figsize=size, layout="constrained", squeeze=False)
    for ax, draw in zip(axes.flat, drawers):
        draw(ax, stats, cost)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _overview(stats: PackStats, cost: PackingCost, rows: list[tuple[str, str]], path: Path, dpi: int) -> Path:
    plt = _pyplot()

    drawers = [d for _, ds in FIGURES.values() for d in ds]
    fig, axes = plt.subplots(3, 3, figsize=(22, 14), layout="constrained")
    for ax, draw in zip(axes.flat, drawers):
        draw(ax, stats, cost)
    axes.flat[-1].axis("off")
    lines = [line for k, v in rows for line in _wrapped(k, v)]
    axes.flat[-1].text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9,
                       transform=axes.flat[-1].transAxes)
    fig.suptitle("patchpack packing report", fontsize=15)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _wrapped(key: str, value: str, width: int = 58) -> list[str]:
    import textwrap

    parts = textwrap.wrap(value, width) or [""]
    return [f"{key if i == 0 else '':<16} {part}" for i, part in enumerate(parts)]


def _table(rows: list[tuple[str, ...]], head: tuple[str, ...] | None = None) -> str:
    cells = [f"<tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>"] if head else []
    cells += [f"<tr><th>{html.escape(r[0])}</th>{''.join(f'<td>{html.escape(c)}</td>' for c in r[1:])}</tr>"
              for r in rows]
    return "<table>\n" + "\n".join(cells) + "\n</table>"


def _write_html(stats: PackStats, cost: PackingCost, rows: list[tuple[str, str]], out: Path,
                pngs: list[Path]) -> Path:
    cost_rows = [(w, f"{n:,}", f"{slots:,}", f"{100 * pad:.1f}%", f"{cost.times(slots):.1f}x")
                 for w, n, slots, pad in cost.rows()] if stats.examples else []
    figures = "\n".join(f'<figure><a href="{p.name}"><img src="{p.name}" alt="{html.escape(p.stem)}"></a>'
                        f"<figcaption>{html.escape(p.stem.replace('_', ' '))}</figcaption></figure>" for p in pngs)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>patchpack packing report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head><body>
<h1>patchpack packing report</h1>
{_table(rows)}
<h2>Packed vs without packing</h2>
{_table(cost_rows, ("", "sequences", "token slots", "padding", "cost")) if cost_rows else "<p>no packed examples</p>"}
<h2>Figures</h2>
{figures}
<p><a href="stats.json">stats.json</a>: every counter; <code>tokens_per_example</code> is keyed by k, the bin
2^(k-1) &lt; tokens &lt;= 2^k (<code>tokens_per_example_range</code> gives the same counts keyed by range).</p>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _stats_json(stats: PackStats, cost: PackingCost, wait: dict | None) -> str:
    d = stats.to_dict()
    d["tokens_per_example_range"] = {bucket_range(int(k)): v for k, v in d["tokens_per_example"].items()}
    d["histogram_keys"] = {
        "tokens_per_example": "k: examples with 2**(k-1) < kept tokens <= 2**k",
        "examples_per_seq": "examples in a sequence", "grids": "fitted grid HxW in patches",
        "source_sizes": "source HxW in pixels, rounded to 32", "drop_rates": "dropped share, in hundredths",
        "padding_per_seq": "padding share of a sequence, in hundredths"}
    d["cost"], d["data_wait"] = cost.to_dict(), wait
    return json.dumps(d, indent=1)


def write_report(stats: PackStats, out_dir, fmt: str = "png", dpi: int = 110, *, cost: PackingCost | None = None,
                 wait: dict | None = None) -> list[Path]:
    """Write the packing report for ``stats`` into ``out_dir`` (created if missing).

    Args:
        stats: accumulated (possibly merged) packing statistics.
        out_dir: output folder.
        fmt: ``"png"`` (the PNGs, see module doc) or ``"html"`` (also ``index.html`` and ``stats.json``).
        dpi: PNG resolution in dots per inch.
        cost: packed vs unpacked cost (default: from ``stats`` alone, without the budget way).
        wait: batch delivery times (``DataWait.to_dict()``), for the summary.

    Returns:
        The written files, PNGs first (``overview.png`` last among them).
    """
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {REPORT_FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cost = cost or PackingCost.of(stats)
    written = [_draw(stem, stats, cost, out / f"{stem}.png", dpi) for stem in FIGURES]
    rows = summary_rows(stats, cost, wait)
    written.append(_overview(stats, cost, rows, out / "overview.png", dpi))
    if fmt == "html":
        (out / "stats.json").write_text(_stats_json(stats, cost, wait), encoding="utf-8")
        written.append(_write_html(stats, cost, rows, out, written))
        written.append(out / "stats.json")
    return written
