"""Photometric augmentation on uint8 pixels: shapes, exact definitions, determinism, the user hook."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from patchpack.augment import RAND_OPS, AugmentConfig, TransformError, apply_pixels
from patchpack.augment.photometric import (
    _jitter_matrices, autocontrast, color_jitter, equalize, grayscale, posterize, rand_augment, solarize, sharpness,
)


def _pixels(seed: int, shape=(2, 17, 23, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


EVERYTHING = AugmentConfig(hue=0.2, grayscale=0.5, rand_ops=3, rand_magnitude=7)


@settings(max_examples=60, deadline=None)
@given(f=st.integers(1, 3), h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 10**6),
       op=st.sampled_from(RAND_OPS))
def test_every_operation_keeps_shape_and_dtype(f, h, w, seed, op):
    px = _pixels(seed, (f, h, w, 3))
    cfg = AugmentConfig(hue=0.3, grayscale=0.5, rand_ops=2, rand_choices=(op,))
    out = apply_pixels(px, cfg, np.random.default_rng(seed))
    assert out.shape == px.shape and out.dtype == np.uint8
    single = apply_pixels(px[0], cfg, np.random.default_rng(seed))  # [H, W, 3] works too
    assert single.shape == px[0].shape


def test_deterministic_for_a_seed():
    px = _pixels(0)
    a = apply_pixels(px, EVERYTHING, np.random.default_rng(5))
    b = apply_pixels(px, EVERYTHING, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, apply_pixels(px, EVERYTHING, np.random.default_rng(s))) for s in range(6, 9))


def test_video_frames_get_one_draw():
    frame = _pixels(1, (1, 16, 16, 3))
    clip = np.repeat(frame, 4, axis=0)
    for seed in range(10):
        out = apply_pixels(clip, EVERYTHING, np.random.default_rng(seed))
        assert all(np.array_equal(out[0], out[i]) for i in range(1, 4))


def test_nothing_enabled_returns_the_input():
    px = _pixels(2)
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0)
    assert not cfg.photometric and apply_pixels(px, cfg, np.random.default_rng(0)) is px


def test_brightness_is_a_scale_by_the_drawn_factor():
    px = _pixels(3)
    out = color_jitter(px, np.random.default_rng(7), brightness=0.4)
    rng = np.random.default_rng(7)
    f = rng.uniform(0.6, 1.4)
    expected = np.clip(np.floor(px.astype(np.float64) * f + 0.5), 0, 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_saturation_zero_is_grayscale_and_grayscale_has_equal_channels():
    px = _pixels(4)
    g = grayscale(px)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    luma = px.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert np.abs(g[..., 0] - luma).max() <= 1
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, grayscale=1.0)
    assert np.array_equal(apply_pixels(px, cfg, np.random.default_rng(0)), g)


def test_composed_jitter_map_equals_the_operations_in_sequence():
    px = _pixels(5).astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    ops = [("hue", 0.1), ("contrast", 1.3), ("saturation", 0.7), ("brightness", 1.2), ("contrast", 0.6)]
    x = px.copy()
    for name, f in ops:
        if name == "brightness":
            x = x * f
        elif name == "saturation":
            g = (x @ luma)[..., None]
            x = g + f * (x - g)
        elif name == "contrast":
            m = (x @ luma).mean(axis=(1, 2))[:, None, None, None]
            x = m + f * (x - m)
        else:
            yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
            a = 2 * math.pi * f
            rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
            x = x @ (np.linalg.inv(yiq) @ rot @ yiq).T
    mu = px.reshape(len(px), -1, 3).mean(axis=1)
    m, v = _jitter_matrices(mu, ops)
    y = np.einsum("dc,fhwc->fhwd", m, px) + v[:, None, None, :]
    np.testing.assert_allclose(y, x, atol=1e-9)


def test_hue_keeps_gray_and_luma():
    gray = np.full((1, 4, 4, 3), 100, np.uint8)
    assert np.array_equal(color_jitter(gray, np.random.default_rng(0), hue=0.5), gray)
    px = _pixels(6)
    out = color_jitter(px, np.random.default_rng(1), hue=0.25)
    luma = np.array([0.299, 0.587, 0.114])
    inside = (out > 0).all(-1) & (out < 255).all(-1)  # where nothing clipped, luma is kept
    assert np.abs((out.astype(float) @ luma - px.astype(float) @ luma)[inside]).max() <= 1.0


def test_lookup_operations_match_their_definitions():
    px = _pixels(7, (1, 32, 40, 3))
    px[..., 0] //= 3  # a channel that does not span 0..255
    im = Image.fromarray(px[0])
    np.testing.assert_array_equal(equalize(px)[0], np.asarray(ImageOps.equalize(im)))
    assert np.abs(autocontrast(px)[0].astype(int) - np.asarray(ImageOps.autocontrast(im))).max() <= 1
    np.testing.assert_array_equal(posterize(px, 3), px & 0b11100000)
    np.testing.assert_array_equal(solarize(px, 128), np.where(px >= 128, 255 - px, px))
    flat = np.full((1, 5, 5, 3), 9, np.uint8)
    assert np.array_equal(autocontrast(flat), flat) and np.array_equal(sharpness(flat, 2.0), flat)


def test_rand_augment_at_magnitude_zero_changes_nothing_but_the_lookups():
    px = _pixels(8)
    for op in ("posterize", "solarize", "sharpness", "brightness", "contrast", "color", "identity"):
        out = rand_augment(px, np.random.default_rng(0), 2, 0.0, (op,))
        assert np.abs(out.astype(int) - px).max() <= 1, op


def _invert(pixels, rng):
    return 255 - pixels


def test_user_transform_runs_last_with_the_example_rng():
    px = _pixels(9)
    seen = []

    def hook(pixels, rng):
        seen.append(rng.integers(1 << 30))
        return _invert(pixels, rng)

    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, transform=hook)
    np.testing.assert_array_equal(apply_pixels(px, cfg, np.random.default_rng(3)), 255 - px)
    apply_pixels(px, cfg, np.random.default_rng(3))
    assert seen[0] == seen[1]


@pytest.mark.parametrize("bad", [
    lambda p, r: p[:, :-1],
    lambda p, r: p.astype(np.float32),
    lambda p, r: p.tolist(),
    lambda p, r: None,
])
def test_user_transform_must_keep_shape_and_dtype(bad):
    cfg = AugmentConfig(transform=bad)
    with pytest.raises(TransformError, match="same shape"):
        apply_pixels(_pixels(10), cfg, np.random.default_rng(0))


def test_read_only_pixels_reach_the_hook_writable():
    px = _pixels(11)
    px.flags.writeable = False

    def inplace(pixels, rng):
        pixels[..., 0] = 0
        return pixels

    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, transform=inplace)
    assert apply_pixels(px, cfg, np.random.default_rng(0))[..., 0].max() == 0


@pytest.mark.parametrize("kwargs", [
    {"scale": (0.0, 1.0)}, {"scale": (0.5, 0.2)}, {"scale": (0.1, 1.5)}, {"ratio": (0, 1)}, {"ratio": (2, 1)},
    {"hflip": 1.5}, {"grayscale": -0.1}, {"brightness": -1}, {"hue": 0.6}, {"rand_ops": -1},
    {"rand_magnitude": 11}, {"rand_choices": ("rotate",)}, {"rand_choices": ()}, {"scale": "big"},
])
def test_config_rejects_bad_values_in_one_line(kwargs):
    with pytest.raises((ValueError, TypeError)) as info:
        AugmentConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_transform_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        AugmentConfig(transform=3)
