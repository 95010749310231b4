"""Image decoding with Pillow in two steps: header probe, then pixels at the fitted size.

:func:`probe_image` opens the image lazily (Pillow reads only the header), applies the
EXIF orientation to the size and asks :func:`patchpack.fit.fit` for the output size,
so the packer can place the example before any pixel is decoded.

:func:`materialize_image` decodes at exactly ``probe.size``:

1. ``Image.draft()`` toward the fitted size (JPEG: the decoder scales the DCT by
   1/2, 1/4 or 1/8, never below the fitted size), then the full decode;
2. modes normalised: ``1``/``L``/``P``/``CMYK``/``YCbCr``/``LAB``/``HSV`` -> RGB;
   16-bit and 32-bit integer modes rescaled to 8 bits (``v * 255 / 65535``,
   rounded; values are not clamped to 255 first); float mode ``F`` scaled from
   ``[0, 1]`` (or clipped to ``[0, 255]`` when its range is larger);
   modes with alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency) are resized
   with alpha and then composited onto ``ImageConfig.background``;
3. a high-quality resize (``ImageConfig.resample``, antialiased) in the source
   orientation, then the EXIF transpose on the small image;
4. animated images (GIF, WebP, APNG) give their first frame.

Sizes are ``(height, width)`` in pixels. EXIF orientation is read from the header;
a PNG whose ``eXIf`` chunk follows the image data is treated as unrotated.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SampleError
from ..fit import FitConfig, fit
from . import Probe

__all__ = ["ImageConfig", "probe_image", "materialize_image", "IMAGE_EXTS", "RESAMPLE"]

#: Member extensions treated as images.
IMAGE_EXTS = frozenset(
    {"jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm",
     "tga", "ico", "jp2", "j2k", "jpx"}
)

#: Resampling filters by name.
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# EXIF orientation -> transpose applied to the decoded image (None: as stored)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Leading bytes of formats Pillow reads: a payload starting with one of these that
# fails to open is "corrupt"; anything else is "not-media".
_MAGIC = (
    b"\xff\xd8", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*", b"P1", b"P2", b"P3", b"P4",
    b"P5", b"P6", b"\x00\x00\x00\x0cjP", b"\xff\x4f\xff\x51",
)


@dataclass(frozen=True)
class ImageConfig:
    """How images are decoded.

    Attributes:
        background: RGB colour (0-255) that transparent pixels are composited onto.
        max_pixels: decompression-bomb limit: images whose header declares more
            than this many pixels are refused (``too-large``) before decoding;
            ``None`` disables the check (Pillow's own limit is then not applied either).
        resample: resize filter, a key of :data:`RESAMPLE`.
        reducing_gap: Pillow ``reducing_gap`` for large downscales (integer box
            reduction first while the scale exceeds this factor); ``None`` for a
            plain resize.
        draft: use ``Image.draft()`` (JPEG DCT scaling) before the full decode.
        exif_orientation: honour the EXIF orientation tag.
    """

    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int | None = 178_956_970
    resample: str = "bicubic"
    reducing_gap: float | None = 3.0
    draft: bool = True
    exif_orientation: bool = True

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE:
            raise ValueError(f"unknown resample filter {self.resample!r}; expected one of {sorted(RESAMPLE)}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError("background must be an RGB triple in 0..255")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError("max_pixels must be >= 1 or None")
        if self.reducing_gap is not None and self.reducing_gap < 1.0:
            raise ValueError("reducing_gap must be >= 1.0 or None")


@contextlib.contextmanager
def _bomb_limit(cfg: ImageConfig) -> Iterator[None]:
    """Apply ``cfg.max_pixels`` instead of Pillow's global limit while opening."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # checked explicitly against cfg.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _classify(exc: BaseException, data: bytes) -> str:
    msg = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in msg or "end of file" in msg or "premature" in msg:
        return "truncated"
    if isinstance(exc, Image.DecompressionBombError):
        return "too-large"
    if isinstance(exc, UnidentifiedImageError) and not data.startswith(_MAGIC):
        return "not-media"
    return "corrupt"


def _open(data: bytes, cfg: ImageConfig) -> Image.Image:
    if not data:
        raise SampleError("empty", "zero-byte image payload", stage="decode")
    try:
        with _bomb_limit(cfg):
            im = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises many types for bad headers
        raise SampleError(_classify(exc, data), f"cannot open image: {exc}", stage="decode") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise SampleError("corrupt", f"image header declares size {w}x{h}", stage="decode")
    if cfg.max_pixels is not None and w * h > cfg.max_pixels:
        raise SampleError(
            "too-large", f"{w}x{h} = {w * h} pixels exceeds the limit of {cfg.max_pixels}", stage="decode"
        )
    return im


def _orientation(im: Image.Image, cfg: ImageConfig) -> int:
    """EXIF orientation (1..8) from the header only; 1 when absent or unreadable."""
    if not cfg.exif_orientation:
        return 1
    try:
        if im.format == "PNG":  # PngImageFile.getexif() would decode the whole image
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(0x0112, 1))
    except Exception:  # a broken EXIF block does not make the pixels unusable
        return 1
    return value if 1 <= value <= 8 else 1


def probe_image(
    data: bytes, fit_cfg: FitConfig, cfg: ImageConfig | None = None, rng: np.random.Generator | None = None
) -> Probe:
    """Read the header of an encoded image and decide its fitted size.

    Args:
        data: the encoded file (JPEG, PNG, WebP, GIF, BMP, TIFF, ...).
        fit_cfg: the resolution policy.
        cfg: decode options (bomb limit, orientation handling).
        rng: generator for sampled fit modes.

    Returns:
        A :class:`Probe` with ``kind="image"``, ``source_size`` after EXIF rotation,
        the fitted ``size`` and ``grid = (1, H/p, W/p)``. ``info`` holds ``format``,
        ``mode``, ``orientation`` and the stored (unrotated) size.

    Raises:
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated`` or ``too-large``.
    """
    cfg = cfg or ImageConfig()
    im = _open(data, cfg)
    w, h = im.size
    orient = _orientation(im, cfg)
    src = (w, h) if orient >= 5 else (h, w)  # (height, width) as displayed
    fh, fw = fit(src[0], src[1], fit_cfg, rng)
    p = fit_cfg.patch_size
    info = {"format": im.format, "mode": im.mode, "orientation": orient, "stored_size": [h, w]}
    return Probe("image", (int(src[0]), int(src[1])), (fh, fw), (1, fh // p, fw // p), [], info)


def _to_8bit(im: Image.Image) -> Image.Image:
    """High bit-depth single-channel modes -> ``L`` by rescaling, not clamping."""
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        out = np.clip(np.rint(a * scale), 0, 255)
    else:  # I;16, I;16B, I;16L, I (PNG 16-bit greyscale decodes to I or I;16)
        a = a.astype(np.int64)
        peak = 65535 if (not a.size or a.max() <= 65535) else int(a.max())
        out = np.clip(np.rint(a.astype(np.float64) * (255.0 / peak)), 0, 255)
    return Image.fromarray(out.astype(np.uint8))


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Return an ``RGB``, ``L`` or ``RGBA`` image (``RGBA`` only when there is alpha)."""
    mode = im.mode
    if mode in ("RGB", "L", "RGBA"):
        return im
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_8bit(im)
    if mode in ("LA", "La", "PA", "RGBa", "RGBX"):
        return im.convert("RGBA") if mode != "RGBX" else im.convert("RGB")
    if mode == "P":
        return im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def materialize_image(data: bytes, probe: Probe, cfg: ImageConfig | None = None) -> np.ndarray:
    """Decode ``data`` to uint8 ``[1, H, W, 3]`` with ``(H, W) = probe.size``.

    Raises:
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated``, ``too-large``.
    """
    cfg = cfg or ImageConfig()
    im = _open(data, cfg)
    out_h, out_w = probe.size
    orient = int(probe.info.get("orientation", 1)) if cfg.exif_orientation else 1
    # target in stored (unrotated) orientation, as PIL (width, height)
    target = (out_h, out_w) if orient >= 5 else (out_w, out_h)
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if cfg.draft and im.format == "JPEG":
            im.draft(None, target)
        with _bomb_limit(cfg):
            im.load()
        im = _normalise_mode(im)
        if im.size != target:
            im = im.resize(target, RESAMPLE[cfg.resample], reducing_gap=cfg.reducing_gap)
        if orient in _TRANSPOSE:
            im = im.transpose(_TRANSPOSE[orient])
        if im.mode == "RGBA":
            bg = Image.new("RGBA", im.size, (*(int(c) for c in cfg.background), 255))
            im = Image.alpha_composite(bg, im).convert("RGB")
        elif im.mode != "RGB":
            im = im.convert("RGB")
        arr = np.asarray(im)
    except SampleError:
        raise
    except Exception as exc:  # decoder errors surface only here for lazily-opened files
        raise SampleError(_classify(exc, data), f"cannot decode image: {exc}", stage="decode") from None
    if arr.shape != (out_h, out_w, 3):  # pragma: no cover - guarded by construction
        raise SampleError("corrupt", f"decoded shape {arr.shape} != fitted {(out_h, out_w, 3)}", stage="decode")
    return arr[None]

