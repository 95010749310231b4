"""Tiny data and models for the training tests: captioned synthetic shards, multi-label shards, a tiny
NaViT config, and the loader config they are read with."""

from __future__ import annotations

import json
from pathlib import Path

from media import make_samples, write_shards

from patchpack.config import LoaderConfig
from patchpack.model import NaViTConfig, PosEmbConfig, TokenLearnerConfig

#: the loader of every tiny run: 16-patch budget of 8 px, 64-token rows
TINY_LOADER = dict(seq_len=64, patch_size=8, max_patches=16, batch_size=2, max_per_seq=8)


def captioned(root: Path, n_images: int = 24, classes: int = 3, seed: int = 0) -> dict:
    """Synthetic labelled and captioned shards (patchpack.synth) with a classes.json beside them."""
    from patchpack.synth import CLASS_WORDS, make_dataset

    info = make_dataset(root, n_images, classes=classes, seed=seed, shard_size=max(1, n_images // 2))
    (Path(root) / "classes.json").write_text(json.dumps([list(CLASS_WORDS[c]) for c in info["class_names"]]))
    return info


def multilabel(root: Path, n: int = 24, classes: int = 4) -> list[str]:
    """Shards whose samples carry two labels each (``cls`` = ``"i,j"``)."""
    samples = make_samples(n, sizes=((24, 32), (32, 32), (16, 40)))
    for i, s in enumerate(samples):
        s["cls"] = f"{i % classes},{(i + 1) % classes}".encode()
    return write_shards(root, samples, per_shard=n // 2)


def loader_config(**kw) -> LoaderConfig:
    return LoaderConfig().with_overrides(**{**TINY_LOADER, **kw})


def tiny_navit(num_classes: int, **kw) -> NaViTConfig:
    base = dict(patch_size=8, dim=16, depth=2, heads=2, num_classes=num_classes, max_example_tokens=16,
                posemb=PosEmbConfig(kind="learned", coords="fractional", fractional_scale=8),
                token_learner=TokenLearnerConfig(num_tokens=2, bottleneck=8, at_layer=1))
    base.update(kw)
    return NaViTConfig(**base)
