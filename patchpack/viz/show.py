"""Draw packed sequences as a picture: what the model sees.

For each packed sequence (a row of a :class:`~patchpack.loader.batch.PackedBatch`) the figure has

* a *canvas*: every example's tokens placed back on its grid (at its fitted resolution, all
  examples to the same pixel scale), framed in its segment's colour and captioned with its
  slot, key, grid and label; dropped patches are grey and hatched; a video shows the first
  frame of each tubelet step, side by side (at most ``max_frames``);
* a *strip*: the sequence's ``L`` token slots left to right, coloured by segment, padding
  hatched grey, so packing density and slot order are visible at a glance.

``patchpack show URLS... --out FILE`` (:mod:`patchpack.cli.show`) builds a loader over the
shards and draws the first ``--batches`` batches (one PNG per batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from ..tokenize import untubeletize  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from ..loader.batch import PackedBatch

__all__ = ["draw_batch", "segment_colors", "example_images"]

_PAD_RGB = (0.82, 0.82, 0.82)
_DROP_RGB = 150  # grey level of dropped patches on the canvas


def segment_colors(n: int) -> np.ndarray:
    """``[n, 3]`` float RGB colours for segment slots ``1..n`` (qualitative, cycled)."""
    base = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    return np.array([base[i % len(base)] for i in range(n)], dtype=float)


def example_images(
    batch: PackedBatch, row: int, patch_size: int, tubelet: int = 1, channels: int = 3, max_frames: int = 4
) -> list[dict]:
    """Rebuild each example of sequence ``row`` on its grid.

    Returns one dict per filled slot (slot order) with ``slot`` (1-based segment id),
    ``key``, ``label``, ``grid`` ``(T, H, W)``, ``tokens`` (kept), ``image`` uint8
    ``[h, w, 3]`` (video: first frame of up to ``max_frames`` tubelet steps side by side,
    one patch apart), ``dropped`` bool ``[T', H, W]`` per shown step (True = token not in
    the sequence) and ``frames`` (steps shown).
    """
    seg = batch.segment_ids[row].numpy()
    patches = batch.patches[row].numpy()
    pos = batch.positions[row].numpy()
    grids = batch.grids[row].numpy()
    labels = batch.labels[row].numpy()
    keys = batch.sample_keys[row] if row < len(batch.sample_keys) else []
    p, pt = int(patch_size), int(tubelet)
    out = []
    for j, key in enumerate(keys):
        sel = seg == j + 1
        gt, gh, gw = (int(g) for g in grids[j])
        if gt * gh * gw == 0:
            continue
        ex_pos = pos[sel]
        video = untubeletize(patches[sel], ex_pos, (gt, gh, gw), p, pt, channels, fill=_DROP_RGB)
        present = np.zeros((gt, gh, gw), bool)
        if len(ex_pos):
            present[ex_pos[:, 0], ex_pos[:, 1], ex_pos[:, 2]] = True
        shown = min(gt, max_frames)
        frames = [video[t * pt] for t in range(shown)]
        if channels == 1:
            frames = [np.repeat(f, 3, axis=2) for f in frames]
        elif channels != 3:
            frames = [f[..., :3] for f in frames]
        gap = np.full((gh * p, p, 3), 255, np.uint8)
        strip = [frames[0]]
        for f in frames[1:]:
            strip += [gap, f]
        out.append(
            dict(
                slot=j + 1, key=key, label=int(labels[j]), grid=(gt, gh, gw), tokens=int(sel.sum()),
                image=np.concatenate(strip, axis=1).astype(np.uint8), dropped=~present[:shown], frames=shown,
            )
        )
    return out


def _caption(e: dict) -> str:
    gt, gh, gw = e["grid"]
    text = f"#{e['slot']} {e['key']}\n{gh}x{gw}" + (f", T={gt}" if gt > 1 else "")
    return text + f", {e['tokens']}/{gt * gh * gw} tok" + (f", y={e['label']}" if e["label"] >= 0 else "")


def _draw_canvas(
    ax, examples: list[dict], colors: np.ndarray, patch_size: int, width_in: float, height_in: float
) -> None:
    p = patch_size
    gap = 2 * p
    height = max((e["image"].shape[0] for e in examples), default=p)
    captions = [_caption(e) for e in examples]
    chars = [max(len(line) for line in c.split("\n")) for c in captions]
    if 0.06 * sum(chars) > 0.97 * width_in:  # no room for every caption side by side: slot numbers only
        captions = [f"#{e['slot']}" for e in examples]
        chars = [len(c) for c in captions]
    widths = [e["image"].shape[1] for e in examples]
    # leave each caption room: ~0.06 inch per character at 7 pt, in data units of the final scale
    advance = [w + gap for w in widths]
    for _ in range(2):  # the scale is set by the width or, for short rows, the height
        per_inch = max(max(sum(advance), p) / max(1.0, 0.97 * width_in), (height + 4 * p) / max(0.3, height_in))
        advance = [max(w, c * 0.06 * per_inch) + gap for w, c in zip(widths, chars)]
    x = 0.0
    for e, caption, adv in zip(examples, captions, advance):
        img = e["image"]
        h, w = img.shape[:2]
        col = colors[e["slot"] - 1]
        ax.imshow(img, extent=(x, x + w, height, height - h), interpolation="nearest")
        gt, gh, gw = e["grid"]
        for t in range(e["frames"]):
            ys, xs = np.nonzero(e["dropped"][t])
            x0 = x + t * (gw + 1) * p
            for yy, xx in zip(ys, xs):
                ax.add_patch(
                    Rectangle((x0 + xx * p, height - h + yy * p), p, p, facecolor="none",
                              edgecolor="0.35", hatch="///", linewidth=0)
                )
        ax.add_patch(Rectangle((x, height - h), w, h, fill=False, edgecolor=col, linewidth=3))
        ax.text(x, height + p * 0.4, caption, va="top", ha="left", fontsize=7, color=col)
        x += adv
    ax.set_xlim(-p, max(x - gap, p) + p)
    ax.set_ylim(height + 3 * p, -p)
    ax.set_aspect("equal")
    ax.axis("off")


def _draw_strip(ax, seg: np.ndarray, colors: np.ndarray) -> None:
    n = len(colors)
    cmap = ListedColormap([_PAD_RGB, *colors] if n else [_PAD_RGB])
    ax.imshow(seg[None, :], aspect="auto", cmap=cmap, vmin=-0.5, vmax=n + 0.5, interpolation="nearest")
    # hatch the padding runs
    pad = np.flatnonzero(seg == 0)
    if len(pad):
        breaks = np.flatnonzero(np.diff(pad) > 1)
        starts = np.r_[pad[0], pad[breaks + 1]]
        ends = np.r_[pad[breaks], pad[-1]]
        for a, b in zip(starts, ends):
            ax.add_patch(Rectangle((a - 0.5, -0.5), b - a + 1, 1, fill=False, hatch="xx", edgecolor="0.45", lw=0))
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(seg) - 0.5)
    ax.set_xlabel("token slot in the sequence", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def draw_batch(
    batch: PackedBatch,
    patch_size: int,
    tubelet: int = 1,
    channels: int = 3,
    path: str | Path | None = None,
    rows: list[int] | int | None = None,
    max_frames: int = 4,
    dpi: int = 120,
):
    """Draw packed sequences of ``batch`` (see module doc).

    Args:
        batch: the packed batch (``patches`` uint8 ``[B, L, pt*p*p*C]``).
        patch_size: ``p`` in pixels; ``tubelet``: ``pt`` in frames; ``channels``: ``C``.
        path: PNG to write; when ``None`` the figure is returned open instead.
        rows: which sequences: a list of row indices, a count (the first ``rows``) or
            ``None`` for all.
        max_frames: tubelet steps shown per video example.

    Returns:
        ``path`` as a :class:`~pathlib.Path` when given, else the matplotlib figure.
    """
    d = batch.patches.shape[-1]
    if d != tubelet * patch_size * patch_size * channels:
        raise ValueError(
            f"token width {d} != tubelet*patch_size^2*channels = {tubelet}*{patch_size}^2*{channels}"
        )
    if rows is None:
        rows = list(range(batch.batch_size))
    elif isinstance(rows, int):
        rows = list(range(min(rows, batch.batch_size)))
    colors = segment_colors(max(1, batch.max_per_seq))
    per_row = [example_images(batch, r, patch_size, tubelet, channels, max_frames) for r in rows]
    # width in inches follows the widest canvas, clamped to something printable
    widths = [sum(e["image"].shape[1] + 2 * patch_size for e in ex) for ex in per_row] or [patch_size]
    heights = [max((e["image"].shape[0] for e in ex), default=patch_size) for ex in per_row] or [patch_size]
    fig_w = float(np.clip(max(widths) / 70, 8, 26))
    canvas_h = [float(np.clip(fig_w * h / max(1, max(widths)) + 0.8, 1.4, 6)) for h in heights]
    ratios = [v for h in canvas_h for v in (h, 0.55)]
    fig = plt.figure(figsize=(fig_w, sum(ratios) + 0.8 + 0.3 * len(rows)), layout="constrained")
    gs = fig.add_gridspec(max(1, 2 * len(rows)), 1, height_ratios=ratios or [1])
    for i, (r, ex) in enumerate(zip(rows, per_row)):
        seg = batch.segment_ids[r].numpy()
        pad = int((seg == 0).sum())
        ax = fig.add_subplot(gs[2 * i])
        _draw_canvas(ax, ex, colors, patch_size, fig_w, canvas_h[i] - 0.35)
        ax.set_title(
            f"sequence {r}: {len(ex)} examples, {len(seg) - pad}/{len(seg)} tokens, "
            f"padding {pad} ({100 * pad / max(1, len(seg)):.1f}%)",
            fontsize=9, loc="left",
        )
        _draw_strip(fig.add_subplot(gs[2 * i + 1]), seg, colors)
    handles = [
        Patch(facecolor=_PAD_RGB, hatch="xx", edgecolor="0.45", label="padding"),
        Patch(facecolor=(_DROP_RGB / 255,) * 3, hatch="///", edgecolor="0.35", label="dropped patch"),
    ]
    fig.legend(handles=handles, loc="outside lower right", fontsize=8, ncols=2, frameon=False)
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
