"""Geometry of the OpenCV resize: exact regions (fractional starts, a JPEG's partial last DCT block,
crop boxes), EXIF orientation and flips, and token counts the header predicts for every
geometric option."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from media import encode, encode_oriented, pattern, textured_photo
from patchpack.decode.image import ImageConfig, materialize_image, read_image_header
from patchpack.decode.resize import antialias_kernel, box_factor, resize_region
from patchpack.example import CropBox
from patchpack.fit import FitConfig, plan_example
from patchpack.tokenize import tubeletize


def ramp(h: int, w: int) -> np.ndarray:
    """uint8 ``[h, w, 3]``: channel 0 = 2 x column, channel 1 = 2 x row (linear: any interpolation is exact)."""
    y, x = np.mgrid[:h, :w]
    return np.stack([2 * x, 2 * y, np.full_like(x, 77)], -1).astype(np.uint8)


@pytest.mark.parametrize("region,size", [((0, 0, 120, 100), (50, 60)), ((10.25, 3.5, 70.25, 63.5), (30, 30)),
                                         ((0, 0, 120, 100), (80, 96)), ((7, 9, 47, 49), (40, 40))])
def test_a_region_lands_where_it_lies(region, size):
    a = ramp(100, 120)
    out = resize_region(a, region, size).astype(float)
    x0, y0, x1, y1 = region
    h, w = size
    cx = x0 + (np.arange(w) + 0.5) * (x1 - x0) / w - 0.5  # centres of output pixels in input pixels
    cy = y0 + (np.arange(h) + 0.5) * (y1 - y0) / h - 0.5
    inner = (slice(3, -3), slice(3, -3))  # away from the image's replicated border
    assert np.abs(out[..., 0] - 2 * cx[None, :])[inner].max() <= 1.0
    assert np.abs(out[..., 1] - 2 * cy[:, None])[inner].max() <= 1.0
    assert np.all(out[..., 2] == 77)


def test_identity_region_is_a_copy():
    a = ramp(40, 50)
    out = resize_region(a, (0, 0, 50, 40), (40, 50))
    assert np.array_equal(out, a) and out is not a
    assert box_factor(3.9) == 1 and box_factor(4.0) == 2 and box_factor(13.0) == 6


@pytest.mark.parametrize("r", [1.3, 1.5, 1.9, 2.5, 3.7])
def test_antialias_kernel_is_the_documented_windowed_sinc(r):
    """h[n] = 2 f_c sinc(2 f_c (n - d)) sinc((n - d) / a), f_c = 1/(2r), a = 2r + 1, |n| <= ceil(2r), sum 1;
    it passes half the output band, halves the output's Nyquist frequency and stops what would alias."""
    for shift in (0.0, 0.3):
        n = np.arange(-np.ceil(2 * r), np.ceil(2 * r) + 1)
        t = n - shift
        want = 2 * (0.5 / r) * np.sinc(2 * (0.5 / r) * t) * np.sinc(t / (2 * r + 1))
        assert np.allclose(antialias_kernel(r, shift), want / want.sum(), atol=1e-6)
    k = antialias_kernel(r).astype(np.float64)
    n = np.arange(len(k)) - len(k) // 2

    def response(f):
        return abs(np.sum(k * np.cos(2 * np.pi * f * n)))

    assert abs(response(0.25 / r) - 1) < 0.03 and abs(response(0.5 / r) - 0.5) < 0.03
    assert response(min(0.5, 0.75 / r)) < (0.2 if r < 1.5 else 0.03)


def test_jpeg_partial_last_dct_block_is_not_stretched():
    """A 1001-wide JPEG decodes at 1/8 as 126 pixels covering 1008 source pixels: the resize maps
    the 1001 that exist, so the output matches a full decode resized (Pillow's path stretches)."""
    photo = ramp(600, 1001) // 2 * 2
    data = encode(photo, "JPEG", quality=98)
    plan = plan_example(read_image_header(data), FitConfig(patch_size=8, max_patches=16 * 16), None, None)
    full = np.asarray(Image.open(io.BytesIO(data)).resize(plan.size[::-1], Image.Resampling.LANCZOS)).astype(float)
    ours = materialize_image(data, plan, ImageConfig())[0].astype(float)
    pillow = materialize_image(data, plan, ImageConfig(resize="pillow"))[0].astype(float)
    right = (slice(4, -4), slice(-12, -4))  # the columns a stretch moves most
    assert np.abs(ours - full)[right].mean() < 1.0
    assert np.abs(pillow - full)[right].mean() > 2 * np.abs(ours - full)[right].mean()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_and_crop_flip_match_the_pillow_path(orientation):
    shown = textured_photo(180, 260, seed=orientation)
    data = encode_oriented(shown, orientation, "PNG")
    header = read_image_header(data)
    box = CropBox(20, 30, 144, 200, flip=orientation % 2 == 0)
    plan = plan_example(replace(header, source_size=box.size), FitConfig(patch_size=8, max_patches=None), None, None)
    plan.source_size, plan.crop = header.source_size, box
    ours = materialize_image(data, plan, ImageConfig())[0].astype(float)
    pillow = materialize_image(data, plan, ImageConfig(resize="pillow"))[0].astype(float)
    want = shown[20:164, 30:230][:, ::-1] if box.flip else shown[20:164, 30:230]
    assert ours.shape == want.shape
    assert np.abs(ours - want).mean() < 1.0  # native-size crop: the pixels themselves
    assert np.abs(ours - pillow).mean() < 1.0


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 300), w=st.integers(8, 300), orientation=st.integers(1, 8),
       fmt=st.sampled_from(["JPEG", "PNG", "WEBP"]), p=st.sampled_from([4, 8, 16]),
       budget=st.one_of(st.none(), st.integers(1, 96)), crop=st.tuples(st.floats(0, 0.9), st.floats(0, 0.9),
                                                                      st.floats(0.05, 1), st.floats(0.05, 1)),
       flip=st.booleans(), resize=st.sampled_from(["opencv", "pillow"]), upsample=st.booleans())
def test_header_predicted_tokens_equal_decoded_tokens_for_every_geometric_option(
        h, w, orientation, fmt, p, budget, crop, flip, resize, upsample):
    data = encode_oriented(pattern(h, w, seed=h + w), orientation, fmt)
    header = read_image_header(data)
    sh, sw = header.source_size
    top, left = int(crop[0] * sh), int(crop[1] * sw)
    box = CropBox(top, left, max(1, min(sh - top, int(crop[2] * sh))), max(1, min(sw - left, int(crop[3] * sw))), flip)
    fit = FitConfig(patch_size=p, max_patches=budget, allow_upsample=upsample)
    plan = plan_example(replace(header, source_size=box.size), fit, None, None)
    plan.source_size, plan.crop = header.source_size, box
    pixels = materialize_image(data, plan, ImageConfig(resize=resize))
    patches, positions = tubeletize(pixels, p, 1)
    assert pixels.shape == (1, *plan.size, 3) and len(patches) == plan.tokens == len(positions)
