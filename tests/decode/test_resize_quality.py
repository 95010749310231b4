"""Resize quality: the OpenCV path against the Pillow path, both against a full decode + Pillow
``LANCZOS`` to the same size, on textured photos of varied size and aspect ratio.

Per input kind (JPEG, PNG, WebP, 16-bit PNG, PNG with alpha, EXIF-rotated JPEG): the median PSNR
is within 0.6 dB of the Pillow path's and no image is more than 2 dB below what the Pillow path
gives it. A naive reduction (integer box, then plain cubic) fails that bound, so the bound is not
loose.

Near-unity scales (under 1.2 input pixels per output pixel once any DCT scale is applied) are
held to 3 dB instead: no antialiasing is needed there, and OpenCV's cubic (Keys, a = -0.75) is
up to ~2.8 dB further from Lanczos than Pillow's (a = -0.5, which like Lanczos reproduces
quadratics exactly) on smooth content above ~45 dB; OpenCV offers no a = -0.5 cubic, and its
Lanczos is 10x the cost of its cubic.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from media import encode_oriented, photo_sizes, textured_photo
from patchpack.decode.image import ImageConfig, materialize_image, read_image_header
from patchpack.fit import FitConfig, plan_example

FIT = FitConfig(patch_size=16, max_patches=256)
OPENCV, PILLOW = ImageConfig(), ImageConfig(resize="pillow")
SIZES = photo_sizes(8, seed=7, sides=(300, 500, 700, 900, 1200, 1600))
KINDS = ("jpeg", "png", "webp", "png16", "alpha", "exif")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def encoded(kind: str, photo: np.ndarray, i: int) -> bytes:
    buf = io.BytesIO()
    if kind == "exif":
        return encode_oriented(photo, 1 + i % 8, "JPEG", quality=90)
    if kind == "png16":
        grey = photo.astype(np.float64) @ [0.299, 0.587, 0.114]
        Image.fromarray(np.rint(grey * 257).astype(np.uint16)).save(buf, "PNG", compress_level=1)
    elif kind == "alpha":
        h, w = photo.shape[:2]
        y, x = np.mgrid[:h, :w]
        alpha = (128 + 127 * np.sin(x / 37.0) * np.cos(y / 23.0)).astype(np.uint8)
        alpha[: h // 5] = 0
        Image.fromarray(np.dstack([photo, alpha])).save(buf, "PNG", compress_level=1)
    else:
        kw = {"quality": 90} if kind in ("jpeg", "webp") else {"compress_level": 1}
        Image.fromarray(photo).save(buf, {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[kind], **kw)
    return buf.getvalue()


def lanczos_float(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each channel of a float ``[H, W, C]`` array resized with Pillow ``LANCZOS`` in mode ``F``."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c]), "F").resize(
        (size[1], size[0]), Image.Resampling.LANCZOS)) for c in range(a.shape[2])], axis=-1)


def reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Full decode (EXIF applied), Pillow ``LANCZOS`` to ``size``, rounded once: 8-bit colour directly;
    16-bit and alpha in float (alpha premultiplied, composited onto white after the resize): an
    8-bit ``RGBa`` chain rounds four times, and the ``"pillow"`` path, which rounds at the same
    steps, would share that noise with the reference instead of being measured against it."""
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if im.mode.startswith("I"):
        grey = lanczos_float(np.asarray(im).astype(np.float32)[..., None] * np.float32(255 / 65535), size)
        return np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8), 3, axis=2)
    if im.mode == "RGBA":
        a = np.asarray(im).astype(np.float32)
        small = lanczos_float(np.concatenate([a[..., :3] * (a[..., 3:] / 255), a[..., 3:]], axis=-1), size)
        alpha = np.clip(small[..., 3:], 0, 255)
        rgb = np.clip(small[..., :3], 0, alpha) + 255 * (1 - alpha / 255)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.Resampling.LANCZOS))


def cases(kind: str):
    for i, (h, w) in enumerate(SIZES):
        data = encoded(kind, textured_photo(h, w, seed=i), i)
        plan = plan_example(read_image_header(data), FIT, None, None)
        yield data, plan, reference(data, plan.size)


@pytest.mark.parametrize("kind", KINDS)
def test_opencv_resize_is_as_good_as_pillows_on_every_image(kind):
    ours, pillow = [], []
    for data, plan, ref in cases(kind):
        ours.append(psnr(materialize_image(data, plan, OPENCV)[0], ref))
        pillow.append(psnr(materialize_image(data, plan, PILLOW)[0], ref))
    ours, pillow = np.array(ours), np.array(pillow)
    assert np.median(ours) >= np.median(pillow) - 0.6, (ours.round(1), pillow.round(1))
    assert (ours - pillow).min() >= -2.0, (ours.round(1), pillow.round(1))


NEAR_UNITY = [(258, 262), (300, 170), (170, 420), (335, 268), (161, 400)]


@pytest.mark.parametrize("kind", ["jpeg", "png", "png16", "alpha"])
def test_near_unity_scales_stay_within_3_db_of_pillows(kind):
    worst = 0.0
    for i, (h, w) in enumerate(NEAR_UNITY):
        data = encoded(kind, textured_photo(h, w, seed=3 * i + 1), i)
        plan = plan_example(read_image_header(data), FIT, None, None)
        ref = reference(data, plan.size)
        worst = min(worst, psnr(materialize_image(data, plan, OPENCV)[0], ref)
                    - psnr(materialize_image(data, plan, PILLOW)[0], ref))
    assert worst >= -3.0


def naive(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Integer box reduction (INTER_AREA) to within 2x, then plain INTER_CUBIC: no antialiasing."""
    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    k = int(min(a.shape[0] / size[0], a.shape[1] / size[1]))
    if k >= 2:
        a = cv2.resize(a, (a.shape[1] // k, a.shape[0] // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def test_the_bound_catches_a_naive_reduction():
    worst = min(psnr(naive(data, plan.size), ref) - psnr(materialize_image(data, plan, PILLOW)[0], ref)
                for data, plan, ref in cases("png"))
    assert worst < -2.0
