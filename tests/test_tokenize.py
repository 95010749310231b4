import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpack.tokenize import grid_positions, patchify, tubeletize, unpatchify, untubeletize


@settings(max_examples=100, deadline=None)
@given(gh=st.integers(1, 6), gw=st.integers(1, 6), p=st.integers(1, 5), c=st.integers(1, 4), seed=st.integers(0, 9))
def test_patchify_roundtrip_and_pixel_order(gh, gw, p, c, seed):
    img = np.random.default_rng(seed).integers(0, 256, (gh * p, gw * p, c), dtype=np.uint8)
    patches, pos = patchify(img, p)
    assert patches.shape == (gh * gw, p * p * c) and pos.dtype == np.int32
    for i, (t, y, x) in enumerate(pos):
        assert t == 0 and 0 <= y < gh and 0 <= x < gw
        np.testing.assert_array_equal(patches[i], img[y * p:(y + 1) * p, x * p:(x + 1) * p].reshape(-1))
    np.testing.assert_array_equal(unpatchify(patches, pos, (gh, gw), p, c), img)


@settings(max_examples=60, deadline=None)
@given(gt=st.integers(1, 3), pt=st.integers(1, 3), gh=st.integers(1, 4), gw=st.integers(1, 4), p=st.integers(1, 4),
       seed=st.integers(0, 9), keep=st.floats(0.0, 1.0))
def test_tubelet_roundtrip_with_dropped_tokens(gt, pt, gh, gw, p, seed, keep):
    rng = np.random.default_rng(seed)
    vid = rng.integers(1, 256, (gt * pt, gh * p, gw * p, 3), dtype=np.uint8)
    patches, pos = tubeletize(vid, p, pt)
    assert patches.shape == (gt * gh * gw, pt * p * p * 3)
    t, y, x = pos[-1]
    np.testing.assert_array_equal(
        patches[-1], vid[t * pt:(t + 1) * pt, y * p:(y + 1) * p, x * p:(x + 1) * p].reshape(-1))
    np.testing.assert_array_equal(untubeletize(patches, pos, (gt, gh, gw), p, pt), vid)
    idx = rng.permutation(len(patches))[: max(1, int(keep * len(patches)))]
    out = untubeletize(patches[idx], pos[idx], (gt, gh, gw), p, pt)
    kept = np.zeros(len(patches), bool)
    kept[idx] = True
    back, _ = tubeletize(out, p, pt)
    np.testing.assert_array_equal(back[kept], patches[kept])
    assert not back[~kept].any()


def test_grid_positions_raster_order():
    pos = grid_positions(2, 2, 3)
    assert pos.tolist()[:4] == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0]]
    assert pos[-1].tolist() == [1, 1, 2]


def test_bad_shapes():
    with pytest.raises(ValueError):
        patchify(np.zeros((15, 16, 3), np.uint8), 16)
    with pytest.raises(ValueError):
        tubeletize(np.zeros((3, 16, 16, 3), np.uint8), 16, 2)
    with pytest.raises(ValueError):
        tubeletize(np.zeros((16, 16, 3), np.uint8), 16)
