"""A PackedBatch is a mapping of its tensors, for trainers, without losing attribute access."""

import warnings

import numpy as np
import pytest
import torch

import patchpack
from interop_cases import image, image_tokens, pack

TENSORS = ("patches", "segment_ids", "positions", "grids", "labels")


@pytest.fixture
def batch():
    toks = [image_tokens(image(h, w, i), f"k{i}", label=i) for i, (h, w) in enumerate([(2, 3), (1, 4), (3, 3)])]
    b = pack([toks[:2], toks[2:]], seq_len=12, max_per_seq=2)
    b.info = "kept"  # whatever the loader attached travels with the batch
    return b


def test_mapping_of_the_tensors(batch):
    assert list(batch) == list(TENSORS) and len(batch) == 5
    assert batch["patches"] is batch.patches and "labels" in batch and "sample_keys" not in batch
    assert set(dict(batch)) == set(TENSORS)

    def model(patches, segment_ids, positions, grids, labels):
        return patches.shape, labels.tolist()

    assert model(**batch) == ((2, 12, 48), [[0, 1], [2, -1]])
    with pytest.raises(KeyError, match="sample_keys"):
        batch["keys"]


def test_sample_keys_and_the_mapping_keys(batch):
    assert batch.sample_keys == [["k0", "k1"], ["k2"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(batch.keys()) == list(TENSORS)  # the mapping protocol, nothing else
    with pytest.raises(TypeError):
        patchpack.PackedBatch(*(batch[n] for n in TENSORS), keys=[["a"], ["b"]])


def test_optional_tensors_join_the_mapping_when_present(batch):
    b = patchpack.PackedBatch({**dict(batch), "targets": torch.zeros(2, 2, 5)})
    assert list(b) == list(TENSORS) + ["targets"] and b["targets"].shape == (2, 2, 5)
    with pytest.raises(KeyError, match="text_ids"):
        batch["text_ids"]
    with pytest.raises(TypeError, match="unknown"):
        patchpack.PackedBatch({**dict(batch), "pixels": batch.patches})


def test_rebuilt_from_its_mapping_as_trainers_do(batch):
    rebuilt = type(batch)({k: v.clone() for k, v in batch.items()})
    assert all(torch.equal(rebuilt[n], batch[n]) for n in TENSORS)
    assert rebuilt.num_examples == batch.num_examples == 3 and rebuilt.sample_keys == []
    with pytest.raises(TypeError, match="missing"):
        patchpack.PackedBatch({"patches": batch.patches})


def test_device_moves_keep_keys_and_info(batch):
    moved = batch.to("cpu")
    assert moved.sample_keys == batch.sample_keys and moved.info == "kept" and moved == batch
    from torch.utils.data._utils.pin_memory import pin_memory

    if torch.cuda.is_available():
        pinned = pin_memory(batch)
        assert isinstance(pinned, patchpack.PackedBatch) and pinned.info == "kept"


def test_cu_seqlens_without_padding(batch):
    cu, longest = batch.cu_seqlens(padding=False)
    assert cu.tolist() == [0, 6, 10, 19] and longest == 9
    real = batch.patches[batch.segment_ids > 0]
    assert real.shape[0] == cu[-1]
    assert np.array_equal(real[6:10].numpy(), batch.patches[0, 6:10].numpy())
    cu_all, _ = batch.cu_seqlens()
    assert cu_all[-1] == batch.segment_ids.numel()  # the default still covers padding runs
