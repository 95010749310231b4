"""Extending training: a registered model config is built and trained by the same loop."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from patchpack.loader.batch import collate
from patchpack.model import NaViT, NaViTConfig
from patchpack.tokenize import Tokens, patchify
from patchpack.train import MODELS, TrainConfig, build_model, register_model, train

import numpy as np


@dataclass
class MeanConfig:
    token_dim: int = 4 * 4 * 3
    num_classes: int = 3


class MeanClassifier(torch.nn.Module):
    """Mean of each slot's pixels -> linear: the smallest model over a PackedBatch."""

    def __init__(self, cfg: MeanConfig) -> None:
        super().__init__()
        self.head = torch.nn.Linear(cfg.token_dim, cfg.num_classes)

    def forward(self, batch):
        x = batch.patches.float() / 255.0
        e = batch.grids.shape[1]
        onehot = torch.nn.functional.one_hot(batch.segment_ids.long(), e + 1)[..., 1:].float()  # [B, L, E]
        sums = torch.einsum("ble,bld->bed", onehot, x)
        return self.head(sums / onehot.sum(1).clamp(min=1).unsqueeze(-1))


def _batches(n=3):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        rows = []
        for r in range(2):
            img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            patches, pos = patchify(img, 4)
            rows.append([Tokens(f"k{r}", patches, pos, (1, 2, 2), r % 3)])
        out.append(collate(rows, seq_len=8, max_per_seq=1))
    return out


def test_navit_is_registered_and_built_from_its_config():
    assert "navit" in MODELS.names()
    assert isinstance(build_model(NaViTConfig(patch_size=4, dim=16, depth=1, heads=2, num_classes=3)), NaViT)
    with pytest.raises(TypeError, match="register_model"):
        build_model(MeanConfig())


def test_a_registered_model_trains_with_the_loop():
    register_model("mean", MeanConfig, MeanClassifier)
    try:
        cfg = TrainConfig(model=MeanConfig(), model_name="mean", steps=2, warmup_steps=0, device="cpu", log_every=1)
        result = train(cfg, _batches(), log=None)
        assert isinstance(result.model, MeanClassifier) and result.step == 2
        assert all(np.isfinite(h.loss) for h in result.history)
    finally:
        MODELS.unregister("mean")
