"""LoaderConfig: one name for E (max_per_seq), the old spelling accepted with a warning; no torch needed."""

from __future__ import annotations

import pytest

from patchpack.config import LoaderConfig
from patchpack.pack import PackConfig


def test_max_per_seq_is_the_slot_count_and_the_packer_cap():
    cfg = LoaderConfig().with_overrides(max_per_seq=6, seq_len=128)
    assert cfg.max_per_seq == 6 and cfg.pack.max_per_seq == 6 and cfg.row_slots == 6
    assert LoaderConfig(max_per_seq=4).pack.max_per_seq == 4  # an uncapped packer is capped to the slots
    assert LoaderConfig(pack=PackConfig(max_per_seq=3)).row_slots == 3
    assert LoaderConfig().row_slots is None  # then the batch's largest row
    with pytest.raises(ValueError, match="exceeds"):
        LoaderConfig(max_per_seq=2, pack=PackConfig(max_per_seq=5))


def test_max_examples_is_not_an_option_any_more():
    with pytest.raises(TypeError):
        LoaderConfig(max_examples=5)
    with pytest.raises(TypeError, match="did you mean 'max_per_seq'"):
        LoaderConfig().with_overrides(max_per_sq=3)


def test_collate_takes_max_per_seq():
    import numpy as np

    from patchpack.loader.batch import collate
    from patchpack.tokenize import Tokens, patchify

    patches, pos = patchify(np.zeros((4, 4, 3), np.uint8), 2)
    rows = [[Tokens("a", patches, pos, (1, 2, 2))]]
    assert collate(rows, 8, max_per_seq=3).max_per_seq == 3
    with pytest.raises(TypeError):
        collate(rows, 8, max_examples=2)
