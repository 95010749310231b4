"""Pack a synthetic NaViT-like size distribution to choose ``L``, buffer and ``max_per_seq`` (library side of ``patchpack simulate``).

The synthetic stream: the longer side is drawn from ``U(side_min, side_max)``
pixels (``side_max`` defaults to ``p * sqrt(L)``, the square that exactly fills a
sequence), the aspect ratio from common photo/video ratios (15% square, the rest
4:3, 3:2, 16:9, 5:4, 2:1, 21:9 and 3:1, landscape 70% of the time), and each
example is fitted natively under ``max_patches = L`` (:mod:`patchpack.fit`).
Optional per-example dropping (:mod:`patchpack.drop`) shortens examples first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..drop import DropConfig, drop_rate, keep_count
from ..fit.image import FitConfig, fit_grid
from ..stats import PackStats
from .baselines import pack_offline
from .base import make_packer
from .config import PackConfig, PackedSequence

__all__ = ["SimConfig", "synthetic_sizes", "pack_stream", "simulate"]

#: (long side / short side, probability) of the non-square part of the stream
ASPECTS = ((4 / 3, 0.30), (3 / 2, 0.20), (16 / 9, 0.22), (5 / 4, 0.10), (2.0, 0.10), (21 / 9, 0.05), (3.0, 0.03))
SQUARE_SHARE = 0.15
LANDSCAPE_SHARE = 0.70


@dataclass(frozen=True)
class SimConfig:
    """A simulation run (``side_max=None``: ``patch_size * sqrt(seq_len)``)."""

    examples: int = 100_000
    seq_len: int = 1024
    patch_size: int = 16
    side_min: int = 64
    side_max: int | None = None
    buffer_size: int = 1024
    max_wait: int | None = None
    max_per_seq: int | None = None
    max_open: int = 0
    algorithm: str = "bfd"
    drop: DropConfig = field(default_factory=DropConfig)
    seed: int = 0

    @property
    def pack_config(self) -> PackConfig:
        return PackConfig(
            self.seq_len, self.max_per_seq, self.buffer_size, self.max_wait, self.algorithm, max_open=self.max_open
        )


def synthetic_sizes(
    n: int, seq_len: int, patch_size: int = 16, side_min: int = 64, side_max: int | None = None, seed: int = 0
) -> np.ndarray:
    """int64 ``[n, 2]`` fitted grids ``(gh, gw)`` of a NaViT-like stream (see module doc)."""
    rng = np.random.default_rng(seed)
    side_max = side_max or int(patch_size * math.sqrt(seq_len))
    if side_max < side_min:
        raise ValueError(f"side_max={side_max} is smaller than side_min={side_min}")
    long_side = rng.uniform(side_min, side_max, n)
    ratios, probs = zip(*ASPECTS)
    aspect = np.where(rng.random(n) < SQUARE_SHARE, 1.0, rng.choice(ratios, size=n, p=np.array(probs) / sum(probs)))
    short = np.maximum(1, np.round(long_side / aspect)).astype(int)
    long_ = np.round(long_side).astype(int)
    landscape = rng.random(n) < LANDSCAPE_SHARE
    heights = np.where(landscape, short, long_)
    widths = np.where(landscape, long_, short)
    cfg = FitConfig(patch_size=patch_size, max_patches=seq_len)
    return np.array([fit_grid(int(h), int(w), cfg) for h, w in zip(heights, widths)], dtype=np.int64)


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
    grids = synthetic_sizes(cfg.examples, cfg.seq_len, cfg.patch_size, cfg.side_min, cfg.side_max, cfg.seed)
    full = (grids[:, 0] * grids[:, 1]).tolist()
    rng = np.random.default_rng([cfg.seed, 1])
    lengths = [keep_count(n, drop_rate(cfg.drop, n, rng)) for n in full] if cfg.drop.active else full
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
