"""Pack a synthetic NaViT-like size distribution to choose ``L``, buffer and ``max_per_seq`` (library side of ``patchpack simulate``).

The synthetic *sources*: the longer side is drawn from ``U(side_min, side_max)``
pixels (``side_max`` defaults to ``p * sqrt(L)``, the square that exactly fills a
sequence), the aspect ratio from common photo/video ratios (15% square, the rest
4:3, 3:2, 16:9, 5:4, 2:1, 21:9 and 3:1, landscape 70% of the time).

Each source then goes through the loader's own steps, the same functions with the same
configs: :func:`~patchpack.fit.image.fit_grid` under ``SimConfig.fit`` (any mode: native,
or NaViT §3.2 resolution sampling, which draws a size per example), then
:func:`~patchpack.drop.drop_rate` and :func:`~patchpack.drop.keep_count` under
``SimConfig.drop`` (every kind, its schedule included). As in the loader, one generator
per example stream draws the fit first and the drop rate next. The simulated stream
stands for the whole run: example ``i`` of ``N`` sits ``i / N`` of the way through
``drop.schedule_epochs`` epochs (:func:`~patchpack.drop.schedule_progress`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..drop import DropConfig, drop_rate, keep_count, schedule_progress
from ..fit.image import FitConfig, fit_grid
from ..stats import PackStats
from .baselines import pack_offline
from .base import make_packer
from .config import PackConfig, PackedSequence

__all__ = ["SimConfig", "synthetic_sources", "simulated_examples", "stream_progress", "pack_stream", "simulate"]

#: (long side / short side, probability) of the non-square part of the stream
ASPECTS = ((4 / 3, 0.30), (3 / 2, 0.20), (16 / 9, 0.22), (5 / 4, 0.10), (2.0, 0.10), (21 / 9, 0.05), (3.0, 0.03))
SQUARE_SHARE = 0.15
LANDSCAPE_SHARE = 0.70


@dataclass(frozen=True)
class SimConfig:
    """A simulation run.

    Attributes:
        examples: synthetic examples in the stream.
        seq_len: ``L``, tokens per packed sequence.
        patch_size: ``p`` in pixels (must equal ``fit.patch_size`` when ``fit`` is given).
        side_min, side_max: range of the synthetic *sources'* longer side in pixels
            (``side_max=None``: ``p * sqrt(L)``).
        fit: the loader's :class:`~patchpack.fit.image.FitConfig` (``None``: native under
            ``max_patches = L``).
        buffer_size, max_wait, max_per_seq, max_open, algorithm: the packer's options.
        drop: the loader's :class:`~patchpack.drop.DropConfig`.
        seed: seed of the sources and of the fit and drop draws.
    """

    examples: int = 100_000
    seq_len: int = 1024
    patch_size: int = 16
    side_min: int = 64
    side_max: int | None = None
    fit: FitConfig | None = None
    buffer_size: int = 1024
    max_wait: int | None = None
    max_per_seq: int | None = None
    max_open: int = 0
    algorithm: str = "bfd"
    drop: DropConfig = field(default_factory=DropConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fit is not None and self.fit.patch_size != self.patch_size:
            raise ValueError(f"fit.patch_size={self.fit.patch_size} differs from patch_size={self.patch_size}")
        budget = self.fit_config.patch_budget
        if budget is None or budget > self.seq_len:
            raise ValueError(f"the fit allows examples of {budget or 'unbounded'} patches, more than "
                             f"seq_len={self.seq_len}: set fit.max_patches <= seq_len")

    @property
    def fit_config(self) -> FitConfig:
        """The fit every example goes through (``fit``, or native under ``max_patches = L``)."""
        return self.fit if self.fit is not None else FitConfig(patch_size=self.patch_size, max_patches=self.seq_len)

    @property
    def pack_config(self) -> PackConfig:
        return PackConfig(
            self.seq_len, self.max_per_seq, self.buffer_size, self.max_wait, self.algorithm, max_open=self.max_open
        )


def synthetic_sources(
    n: int, seq_len: int, patch_size: int = 16, side_min: int = 64, side_max: int | None = None, seed: int = 0
) -> np.ndarray:
    """int64 ``[n, 2]`` source sizes ``(height, width)`` in pixels of a NaViT-like stream (see module doc)."""
    rng = np.random.default_rng(seed)
    side_max = side_max or int(patch_size * math.sqrt(seq_len))
    if side_max < side_min:
        raise ValueError(f"side_max={side_max} is smaller than side_min={side_min}")
    long_side = rng.uniform(side_min, side_max, n)
    ratios, probs = zip(*ASPECTS)
    aspect = np.where(rng.random(n) < SQUARE_SHARE, 1.0, rng.choice(ratios, size=n, p=np.array(probs) / sum(probs)))
    short = np.maximum(1, np.round(long_side / aspect)).astype(np.int64)
    long_ = np.round(long_side).astype(np.int64)
    landscape = rng.random(n) < LANDSCAPE_SHARE
    return np.stack([np.where(landscape, short, long_), np.where(landscape, long_, short)], axis=1)


def stream_progress(i: int, n: int, schedule_epochs: float | None) -> float:
    """Drop-schedule progress of example ``i`` of a stream of ``n`` that spans the whole run."""
    epochs = (i / n) * schedule_epochs if schedule_epochs else 0.0
    epoch = math.floor(epochs)
    return schedule_progress(epoch, epochs - epoch, schedule_epochs)


def simulated_examples(cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fitted grids (int64 ``[n, 2]``) and kept token counts (int64 ``[n]``) of the stream.

    The loader's steps on each synthetic source (module doc): fit, then drop rate and kept count.
    """
    sources = synthetic_sources(cfg.examples, cfg.seq_len, cfg.patch_size, cfg.side_min, cfg.side_max, cfg.seed)
    fit_cfg, drop = cfg.fit_config, cfg.drop
    p, n = fit_cfg.patch_size, len(sources)
    rng = np.random.default_rng([cfg.seed, 1])
    grids = np.empty((n, 2), np.int64)
    kept = np.empty(n, np.int64)
    for i, (h, w) in enumerate(sources.tolist()):
        gh, gw = fit_grid(h, w, fit_cfg, rng)
        tokens = gh * gw
        if drop.active:
            rate = drop_rate(drop, tokens, rng, stream_progress(i, n, drop.schedule_epochs), True,
                             height=gh * p, width=gw * p)
            tokens = keep_count(tokens, rate)
        grids[i] = gh, gw
        kept[i] = tokens
    return grids, kept


def pack_stream(lengths: list[int], config: PackConfig) -> tuple[list[PackedSequence], float]:
    """Push ``lengths`` (handles are their indices) through a fresh packer, flush it.

    Returns the emitted sequences and the seconds the packer took.
    """
    packer = make_packer(config)
    push = packer.push
    t0 = time.perf_counter()
    out: list[PackedSequence] = []
    for i, n in enumerate(lengths):
        out += push(i, n)
    out += packer.flush()
    return out, time.perf_counter() - t0


def simulate(cfg: SimConfig, reference: bool = True) -> dict:
    """Run the packer over a synthetic stream; return a JSON-ready summary.

    Keys: ``padding_fraction``, ``examples``, ``sequences``, ``examples_per_sequence``,
    ``max_wait``, ``mean_wait``, ``examples_per_second`` (packer only),
    ``drop_fraction``, ``stats`` (full :class:`PackStats`) and, with ``reference``,
    ``offline_padding_fraction`` of offline best-fit decreasing on the same lengths.
    """
    grids, kept = simulated_examples(cfg)
    full = (grids[:, 0] * grids[:, 1]).tolist()
    lengths = kept.tolist()
    stats = PackStats()
    for n, k, g in zip(full, lengths, grids):
        stats.add_example(n, k, (int(g[0]), int(g[1])))
    out, elapsed = pack_stream(lengths, cfg.pack_config)
    for seq in out:
        stats.add_sequence(seq, cfg.seq_len)
    result = {
        "padding_fraction": stats.padding_fraction,
        "examples": stats.examples,
        "sequences": stats.sequences,
        "examples_per_sequence": stats.mean_examples_per_seq,
        "max_wait": stats.max_wait,
        "mean_wait": stats.mean_wait,
        "examples_per_second": len(lengths) / elapsed if elapsed > 0 else float("inf"),
        "drop_fraction": stats.drop_fraction,
    }
    if reference:
        ref = pack_offline(lengths, cfg.seq_len, cfg.max_per_seq)
        result["offline_padding_fraction"] = 1.0 - sum(lengths) / (len(ref) * cfg.seq_len) if ref else 0.0
    result["stats"] = stats.to_dict()
    return result
