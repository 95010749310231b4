"""Geometric augmentation drawn from the header size: crop boxes, flips, EXIF mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from patchpack.augment import AugmentConfig, CropBox, apply_box, crop_box, draw_crop, stored_box

sizes = st.integers(1, 4000)


@st.composite
def ranges(draw):
    lo = draw(st.floats(0.01, 1.0))
    hi = draw(st.floats(lo, 1.0))
    rlo = draw(st.floats(0.1, 4.0))
    rhi = draw(st.floats(rlo, 8.0))
    return (lo, hi), (rlo, rhi)


def _consistent(h: int, w: int, scale, ratio, base: float, area: float) -> bool:
    """Whether some area fraction in ``scale`` and ratio in ``ratio`` round to ``h x w``."""
    a_lo, a_hi = (h - 0.5) * (w - 0.5) / area, (h + 0.5) * (w + 0.5) / area
    r_lo, r_hi = (w - 0.5) / (h + 0.5) / base, (w + 0.5) / max(h - 0.5, 1e-9) / base
    eps = 1e-9
    return a_lo <= scale[1] + eps and a_hi >= scale[0] - eps and r_lo <= ratio[1] + eps and r_hi >= ratio[0] - eps


@settings(max_examples=400, deadline=None)
@given(sizes, sizes, ranges(), st.booleans(), st.integers(0, 2**32 - 1))
def test_crop_box_inside_and_within_ranges(height, width, rng_ranges, relative, seed):
    scale, ratio = rng_ranges
    top, left, h, w, drawn = crop_box(height, width, scale, ratio, np.random.default_rng(seed), relative)
    assert 1 <= h <= height and 1 <= w <= width
    assert 0 <= top <= height - h and 0 <= left <= width - w
    base = width / height if relative else 1.0
    if drawn:
        assert _consistent(h, w, scale, ratio, base, float(height * width))
    else:  # centred, aspect clamped into the ratio range (whole image when in range)
        assert top == (height - h) // 2 and left == (width - w) // 2
        own, lo, hi = width / height, base * ratio[0], base * ratio[1]
        if lo <= own <= hi:
            assert (h, w) == (height, width)
        else:
            assert h == height or w == width


def test_relative_ratio_keeps_the_native_aspect():
    """A 1:4 panorama cropped with relative ratios stays panoramic; absolute ratios do not."""
    rng = np.random.default_rng(0)
    rel = [crop_box(200, 800, (0.3, 1.0), (3 / 4, 4 / 3), rng, True) for _ in range(200)]
    assert all(r[4] for r in rel)
    aspects = np.array([w / h for _, _, h, w, _ in rel])
    assert aspects.min() > 4 * 0.7 and aspects.max() < 4 * 1.4
    absolute = [crop_box(200, 800, (0.3, 1.0), (3 / 4, 4 / 3), rng, False) for _ in range(200)]
    assert max(w / h for _, _, h, w, _ in absolute) < 1.4


def test_fallback_for_impossible_draws():
    # a 1-pixel-high strip cannot hold a 3/4..4/3 crop of a tenth of its area (absolute ratios)
    top, left, h, w, drawn = crop_box(1, 1000, (0.1, 0.1), (3 / 4, 4 / 3), np.random.default_rng(0), False)
    assert not drawn and h == 1 and w == round(4 / 3) and left == (1000 - w) // 2
    assert crop_box(1, 1, (0.08, 1.0), (0.75, 1.33), np.random.default_rng(1))[2:4] == (1, 1)


def test_draw_is_deterministic_for_a_seed_and_varies_across_seeds():
    cfg = AugmentConfig()
    a = [draw_crop(480, 640, cfg, np.random.default_rng(s)) for s in range(50)]
    b = [draw_crop(480, 640, cfg, np.random.default_rng(s)) for s in range(50)]
    assert a == b
    assert len(set(a)) == 50


def test_crop_off_keeps_the_whole_image_and_flip_probability():
    rng = np.random.default_rng(0)
    assert draw_crop(37, 91, AugmentConfig(crop=False, hflip=0.0), rng) == CropBox(0, 0, 37, 91, False)
    assert all(draw_crop(5, 5, AugmentConfig(crop=False, hflip=1.0), rng).flip for _ in range(20))
    n = 4000
    flips = sum(draw_crop(64, 64, AugmentConfig(hflip=0.5), rng).flip for _ in range(n))
    assert abs(flips - n / 2) < 4 * math.sqrt(n / 4)  # 4 sigma binomial tolerance


def test_crop_box_json_round_trip():
    box = CropBox(3, 4, 5, 6, True)
    assert CropBox.from_list(box.to_list()) == box and box.size == (5, 6)
    assert CropBox.whole(7, 8).is_identity(7, 8) and not box.is_identity(5, 6)


# EXIF orientation -> transpose that turns the stored image into the displayed one (as the decoder)
_DISPLAY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# and its inverse (displayed -> stored)
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", range(1, 9))
@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 10**6))
def test_stored_box_maps_a_displayed_crop_for_every_orientation(orientation, h, w, seed):
    rng = np.random.default_rng(seed)
    displayed = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(displayed)
    stored = im.transpose(_STORE[orientation]) if orientation in _STORE else im
    box = draw_crop(h, w, AugmentConfig(scale=(0.05, 1.0), hflip=0.0), rng)
    crop = stored.crop(stored_box(box, h, w, orientation))
    shown = crop.transpose(_DISPLAY[orientation]) if orientation in _DISPLAY else crop
    np.testing.assert_array_equal(np.asarray(shown), apply_box(displayed, box))


def test_apply_box_on_frames_crops_and_flips_every_frame_alike():
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    out = apply_box(frames, CropBox(1, 2, 2, 3, True))
    assert out.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(out, frames[:, 1:3, 2:5][:, :, ::-1])
