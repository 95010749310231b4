"""Training and evaluation loaders over shards for :func:`patchpack.train.train`."""

from __future__ import annotations

import warnings
from typing import Any

from ..decode.video.config import VideoConfig
from ..drop import DropConfig
from ..loader import make_loader

__all__ = ["make_loaders"]


def make_loaders(
    urls: list[str],
    *,
    eval_urls: list[str] | None = None,
    eval_max_patches: list[int] | None = None,
    batch_size: int = 8,
    seq_len: int = 256,
    max_per_seq: int | None = None,
    max_examples: int | None = None,
    buffer_size: int | None = None,
    patch_size: int = 16,
    max_patches: int = 64,
    drop_rate: float = 0.0,
    video_frames: int = 0,
    tubelet: int = 2,
    workers: int = 0,
    seed: int = 0,
    video: Any | None = None,
    drop: DropConfig | None = None,
    label_field: str = "cls",
    loader_options: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(train_loader, {name: eval_loader})`` over :func:`patchpack.make_loader`.

    ``video`` (a :class:`~patchpack.decode.video.VideoConfig`), or ``video_frames > 0``
    (that many frames, ``tubelet`` frames per token), accepts videos; images become one
    tubelet. ``drop`` (default: constant ``drop_rate``) applies to the training loader
    only. Eval loaders run one epoch in a fixed shard order without token dropping, one
    per patch budget (named ``"<budget>p"``). ``max_per_seq`` is ``E``. ``loader_options``
    (e.g. ``decode_threads``, ``buffer_bytes``) go to every :func:`~patchpack.make_loader`.
    """
    if max_examples is not None:
        warnings.warn("make_loaders(max_examples=) is now max_per_seq=", DeprecationWarning, stacklevel=2)
        max_per_seq = max_per_seq if max_per_seq is not None else max_examples
    if video is None and video_frames:
        video = VideoConfig(frames=video_frames, tubelet=tubelet)
    if drop is None:
        drop = DropConfig(kind="constant", rate=drop_rate) if drop_rate > 0 else DropConfig()
    tubelets = max(1, (video.frames or 1) // video.tubelet) if video is not None else 1

    def build(u: list[str], budget: int, training: bool):
        return make_loader(
            u,
            num_workers=workers,
            patch_size=patch_size,
            max_patches=budget,
            drop=drop if training else DropConfig(),
            seq_len=max(seq_len, budget * tubelets),
            max_per_seq=max_per_seq,
            video=video,
            **({"buffer_size": buffer_size} if buffer_size is not None else {}),
            batch_size=batch_size,
            seed=seed,
            training=training,
            shuffle_shards=training,
            epochs=1,
            label_field=label_field,
            **(loader_options or {}),
        )

    train_loader = build(list(urls), max_patches, True)
    evals: dict[str, Any] = {}
    if eval_urls:
        budgets = eval_max_patches or sorted({max(1, max_patches // 4), max_patches})
        for b in budgets:
            evals[f"{b}p"] = build(list(eval_urls), b, False)
    return train_loader, evals
