"""Test data made on the fly: Pillow-encoded images, broken payloads, webdataset shards.

Everything is deterministic for a seed and small, so tests stay fast. Images carry a
smooth, asymmetric pattern (a colour gradient plus a bright top-left marker) so that
orientation mistakes and resize errors are visible in pixel comparisons.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "pattern",
    "encode",
    "encode_oriented",
    "image_bytes",
    "BROKEN",
    "broken_payloads",
    "write_shards",
    "write_folder",
    "truncate_file",
    "write_raw_tar",
    "make_samples",
    "valid_keys",
    "textured_photo",
    "photo_sizes",
]

# EXIF orientation -> transpose that turns the *displayed* image into the stored one
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 ``[H, W, 3]``: smooth gradients with a seed-dependent phase and a white
    top-left quadrant marker (so flips and rotations change the pixels)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    a, b = rng.uniform(0, 2 * np.pi, 2)
    r = 0.5 + 0.5 * np.sin(2 * np.pi * x + a) * np.ones_like(y)
    g = 0.5 + 0.5 * np.cos(2 * np.pi * y + b) * np.ones_like(x)
    bl = (x + y) / 2 * np.ones_like(r)
    img = np.stack([r, g, bl], axis=-1) * 200
    img[: max(1, height // 4), : max(1, width // 4)] = 255
    return img.astype(np.uint8)


def _textures() -> list[np.ndarray]:
    """The photographs and textures shipped with scikit-image, as RGB (greyscale ones repeated)."""
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
                 "brick", "grass", "gravel", "camera", "moon", "page", "text", "coins"):
        a = getattr(data, name)()
        out.append(np.ascontiguousarray(a[..., :3] if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)))
    return out


def _collage(height: int, width: int, rng: np.random.Generator, tiles: list[np.ndarray]) -> np.ndarray:
    """Crops of real photographs at their native scale (random flips), tiled to fill the canvas."""
    img = np.zeros((height, width, 3), np.uint8)
    y = 0
    while y < height:
        x, th = 0, int(rng.integers(120, 400))
        while x < width:
            t = tiles[int(rng.integers(len(tiles)))][:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            ch, cw = min(th, t.shape[0], height - y), min(int(rng.integers(120, 400)), t.shape[1], width - x)
            oy, ox = rng.integers(0, t.shape[0] - ch + 1), rng.integers(0, t.shape[1] - cw + 1)
            img[y: y + ch, x: x + cw] = t[oy: oy + ch, ox: ox + cw]
            x += cw
        y += th
    return img


def _dead_leaves(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The dead-leaves model of natural images: occluding discs with radii ~ 1/r^3 (edges at every
    scale), then a camera-like blur of 0.7 px."""
    import cv2

    img = np.zeros((height, width, 3), np.uint8)
    rmin, rmax = 2.0, max(height, width) / 4
    for _ in range(height * width // 2000 + 200):
        r = rmin / (1 - rng.random() * (1 - rmin / rmax))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, centre, int(r), tuple(int(c) for c in rng.integers(0, 256, 3)), -1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 0.7)


def textured_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 ``[H, W, 3]`` with real texture at native scale (no smooth upscaling), for resize
    quality tests: seeds cycle through a collage of scikit-image photographs, a dead-leaves image,
    and the average of a photograph resized to the canvas and a collage."""
    global _TILES
    if _TILES is None:
        _TILES = _textures()
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:
        return _collage(height, width, rng, _TILES)
    if seed % 3 == 1:
        return _dead_leaves(height, width, rng)
    smooth = np.asarray(Image.fromarray(_TILES[seed % 7]).resize((width, height), Image.Resampling.LANCZOS))
    return ((smooth.astype(np.uint16) + _collage(height, width, rng, _TILES)) // 2).astype(np.uint8)


_TILES: list[np.ndarray] | None = None


def photo_sizes(n: int, seed: int = 0, sides: Sequence[int] = (300, 500, 700, 900, 1200, 1600, 2200)
                ) -> list[tuple[int, int]]:
    """``n`` ``(height, width)`` pairs: long-ish sides from ``sides`` (+-20 %), aspect ratios 1:3 to 3:1."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        side = float(rng.choice(sides)) * rng.uniform(0.8, 1.2)
        aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
        out.append((max(32, int(side / np.sqrt(aspect))), max(32, int(side * np.sqrt(aspect)))))
    return out


def encode(img: Image.Image | np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    """Encode with Pillow (``fmt``: ``JPEG``, ``PNG``, ``WEBP``, ``GIF``, ``BMP``, ``TIFF``)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if fmt.upper() == "JPEG":
        kw.setdefault("quality", 95)
    if fmt.upper() == "WEBP":
        kw.setdefault("lossless", True)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def encode_oriented(displayed: np.ndarray, orientation: int, fmt: str = "JPEG", **kw) -> bytes:
    """Bytes whose stored pixels, once the EXIF ``orientation`` is applied, show ``displayed``."""
    im = Image.fromarray(displayed)
    stored = im.transpose(_STORE[orientation]) if orientation in _STORE else im
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **kw)


def image_bytes(height: int, width: int, fmt: str = "PNG", mode: str = "RGB", seed: int = 0, **kw) -> bytes:
    """A pattern image of ``height x width`` converted to ``mode`` and encoded as ``fmt``."""
    im = Image.fromarray(pattern(height, width, seed))
    if mode != "RGB":
        im = im.convert(mode)
    return encode(im, fmt, **kw)


def _truncated_jpeg() -> bytes:
    data = image_bytes(64, 80, "JPEG", seed=3)
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(image_bytes(48, 48, "PNG", seed=4))
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)  # clobber the compressed stream
    return bytes(data)


#: name -> (member ext, payload, expected error kind)
BROKEN: dict[str, tuple[str, bytes, str]] = {
    "zero": ("jpg", b"", "empty"),
    "text": ("jpg", b"this is not an image at all\n" * 4, "not-media"),
    "truncjpeg": ("jpg", _truncated_jpeg(), "truncated"),
    "corruptpng": ("png", _corrupt_png(), "corrupt"),
    "headeronly": ("png", image_bytes(32, 32, "PNG")[:40], "corrupt"),
    "truncpng": ("png", image_bytes(64, 80, "PNG")[: len(image_bytes(64, 80, "PNG")) * 3 // 5], "truncated"),
    "notimage-png": ("png", b"<html><body>404 not found</body></html>", "not-media"),
}


def broken_payloads() -> dict[str, tuple[str, bytes, str]]:
    return dict(BROKEN)


def make_samples(
    n: int,
    *,
    sizes: Sequence[tuple[int, int]] = ((24, 40), (64, 48), (40, 40), (100, 30), (17, 70), (48, 96)),
    formats: Sequence[str] = ("PNG", "JPEG", "WEBP"),
    seed: int = 0,
    prefix: str = "s",
    labels: int = 5,
) -> list[dict]:
    """``n`` webdataset samples (``__key__``, image member, ``cls``) of varied sizes and formats."""
    out = []
    ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        fmt = formats[i % len(formats)]
        out.append({
            "__key__": f"{prefix}{i:05d}",
            ext[fmt]: image_bytes(h, w, fmt, seed=seed * 100003 + i),
            "cls": str(i % labels).encode(),
        })
    return out


def valid_keys(samples: Iterable[dict]) -> set[str]:
    return {s["__key__"] for s in samples}


def write_shards(directory: str | os.PathLike, samples: Sequence[dict], per_shard: int, name: str = "shard") -> list[str]:
    """Write ``samples`` with ``webdataset.ShardWriter``; returns the shard paths in order."""
    import webdataset as wds

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pattern_ = str(directory / f"{name}-%06d.tar")
    with wds.ShardWriter(pattern_, maxcount=per_shard, verbose=0) as sink:
        for s in samples:
            sink.write(dict(s))
    return sorted(str(p) for p in directory.glob(f"{name}-*.tar"))


def write_raw_tar(path: str | os.PathLike, files: Sequence[tuple[str, bytes]]) -> str:
    """A tar with exactly these ``(name, bytes)`` members (for members webdataset's writer refuses)."""
    with tarfile.open(path, "w") as tf:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return str(path)


def truncate_file(path: str | os.PathLike, keep: int | float) -> None:
    """Cut a file to ``keep`` bytes (or that fraction of its size when a float < 1)."""
    size = os.path.getsize(path)
    n = int(size * keep) if isinstance(keep, float) else int(keep)
    with open(path, "r+b") as fh:
        fh.truncate(n)


def write_folder(root: str | os.PathLike, classes: dict[str, int], size: tuple[int, int] = (32, 48)) -> list[str]:
    """An image folder ``root/<class>/<i>.png``; returns the relative keys."""
    root = Path(root)
    keys = []
    for c, count in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / c / f"img{i:03d}.png").write_bytes(image_bytes(*size, "PNG", seed=i))
            keys.append(f"{c}/img{i:03d}")
    return keys


def keys_of(batches) -> list[str]:
    """Every sample key of a sequence of ``PackedBatch``es, in batch, row, slot order."""
    return [k for b in batches for row in b.sample_keys for k in row]
