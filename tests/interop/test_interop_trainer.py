"""A patchpack loader drives ``transformers.Trainer``: packed batches as mappings, ``model(**batch)``."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interop_cases import P, tiny_siglip2
from media import make_samples, write_shards
import patchpack
from patchpack.interop import PackedSiglip2Vision

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers.Trainer needs it on torch


class PackedClassifier(nn.Module):
    """SigLIP2's unchanged vision tower on packed rows plus a linear head; HF-style loss output."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.tower = PackedSiglip2Vision(tiny_siglip2(seed=0))
        self.head = nn.Linear(32, num_classes)

    def forward(self, patches, segment_ids, positions, grids, labels=None, **_):
        out = self.tower(patches, segment_ids, positions, grids)
        logits = self.head(out.pooled())
        result = {"logits": logits}
        if labels is not None:
            result["loss"] = F.cross_entropy(logits, labels[out.slot_mask])
        return result


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("trainer")
    return write_shards(d, make_samples(24, seed=11, labels=5), per_shard=8)


def test_trainer_steps_on_packed_loader(shards, tmp_path):
    from transformers import Trainer, TrainingArguments

    loader = patchpack.make_loader(shards, seq_len=64, patch_size=P, max_patches=16, batch_size=2,
                                   max_per_seq=6, epochs=None, training=False, shuffle_shards=False)

    class PackedTrainer(Trainer):
        def get_train_dataloader(self):
            return loader

    model = PackedClassifier(num_classes=5)
    before = [p.detach().clone() for p in model.parameters()]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, learning_rate=1e-3, logging_steps=1,
                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = PackedTrainer(model=model, args=args, train_dataset=loader.dataset)
    result = trainer.train()
    assert result.global_step == 3
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    changed = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())]
    assert all(changed), "every parameter of the tower and head trained"


def test_batch_unpacks_into_a_model(shards):
    loader = patchpack.make_loader(shards, seq_len=64, patch_size=P, max_patches=16, batch_size=2, max_per_seq=6,
                                   training=False)
    batch = next(iter(loader))
    model = PackedClassifier(num_classes=5).eval()
    with torch.no_grad():
        out = model(**batch)
    assert out["logits"].shape == (batch.num_examples, 5)
    assert set(batch) == {"patches", "segment_ids", "positions", "grids", "labels"}
    assert batch["patches"] is batch.patches
