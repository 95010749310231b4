"""Image decoding with Pillow in two steps: header facts, then pixels at a given size.

:func:`read_image_header` opens the image lazily (Pillow reads only the header) and
applies the EXIF orientation to the size; :mod:`patchpack.fit` decides the output size
from it, so the packer can place the example before any pixel is decoded.

:func:`materialize_image` decodes at exactly ``plan.size``:

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
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..augment.geometric import stored_box
from ..errors import SampleError
from ..example import Header, Plan
from .png_bands import decode_png_reduced

__all__ = ["ImageConfig", "read_image_header", "materialize_image", "IMAGE_EXTS", "IMAGE_FORMATS", "RESAMPLE"]

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

#: Pillow formats decoded by default: those of :data:`IMAGE_EXTS`. Pillow can open many more
#: (EPS runs Ghostscript, a separate program; PSD, FITS, ... are rare in training data and
#: widen the parsers an adversary can reach), so a payload in any other format is ``not-media``.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "JPEG2000")

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
        formats: Pillow format names tried when an image is opened (default
            :data:`IMAGE_FORMATS`); any other payload is ``not-media`` and is never parsed
            further. ``EPS`` is refused in any case (its decoding runs Ghostscript).
    """

    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int | None = 178_956_970
    resample: str = "bicubic"
    reducing_gap: float | None = 3.0
    draft: bool = True
    exif_orientation: bool = True
    formats: tuple[str, ...] = IMAGE_FORMATS

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(str(f).upper() for f in self.formats))
        if "EPS" in self.formats:
            raise ValueError("formats: EPS is never decoded (it runs Ghostscript, an external program)")
        Image.init()
        unknown = [f for f in self.formats if f not in Image.OPEN]
        if unknown or not self.formats:
            raise ValueError(f"formats must name Pillow formats that can be opened (e.g. {IMAGE_FORMATS}); "
                             + (f"unknown: {unknown}" if unknown else "none given"))
        if self.resample not in RESAMPLE:
            raise ValueError(f"unknown resample filter {self.resample!r}; expected one of {sorted(RESAMPLE)}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError("background must be an RGB triple in 0..255")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError("max_pixels must be >= 1 or None")
        if self.reducing_gap is not None and self.reducing_gap < 1.0:
            raise ValueError("reducing_gap must be >= 1.0 or None")


_LIMIT_LOCK = threading.Lock()
_limit_users = 0  # decodes inside _bomb_limit, over all threads
_limit_saved: int | None = None


@contextlib.contextmanager
def _bomb_limit(cfg: ImageConfig) -> Iterator[None]:
    """Apply ``cfg.max_pixels`` instead of Pillow's global limit while opening.

    Pillow's limit is one global: it is lifted while any thread decodes and put back when
    the last one finishes (with the limit off, Pillow neither warns nor raises).
    """
    global _limit_users, _limit_saved
    with _LIMIT_LOCK:
        if _limit_users == 0:
            _limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # checked explicitly against cfg.max_pixels
        _limit_users += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved


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
            im = Image.open(io.BytesIO(data), formats=cfg.formats)
    except Exception as exc:  # Pillow raises many types for bad headers
        why = f"not an image in the formats read ({', '.join(cfg.formats)})" \
            if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise SampleError(_classify(exc, data), f"cannot open image: {why}", stage="decode") from None
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


def read_image_header(data: bytes, cfg: ImageConfig | None = None) -> Header:
    """Read the header of an encoded image (Pillow opens lazily: no pixel decode).

    Args:
        data: the encoded file (JPEG, PNG, WebP, GIF, BMP, TIFF, ...).
        cfg: decode options (bomb limit, orientation handling).

    Returns:
        A :class:`Header` with ``kind="image"``, ``source_size`` after EXIF rotation, the stored
        (unrotated) size, the EXIF ``orientation``, Pillow's ``format`` and ``mode``.

    Raises:
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated`` or ``too-large``.
    """
    cfg = cfg or ImageConfig()
    im = _open(data, cfg)
    w, h = im.size
    orient = _orientation(im, cfg)
    src = (w, h) if orient >= 5 else (h, w)  # (height, width) as displayed
    return Header("image", (int(src[0]), int(src[1])), stored_size=(int(h), int(w)), orientation=orient,
                  format=str(im.format or ""), mode=str(im.mode))


#: pixels per strip when wide modes are rescaled (bounds the float64 temporaries to ~8 MB)
_STRIP_PIXELS = 1 << 20


def _wide_strips(im: Image.Image, rows: int) -> Iterator[np.ndarray]:
    w, h = im.size
    for y in range(0, h, rows):
        yield np.asarray(im.crop((0, y, w, min(h, y + rows))))


def _to_8bit(im: Image.Image, reduce: int = 1) -> Image.Image:
    """High bit-depth single-channel modes -> ``L`` by rescaling, not clamping (``I;16*``: ``v * 255 / 65535``;
    ``I``: over ``max(65535, peak)``; ``F``: ``[0, 1]`` scaled, else clipped to ``[0, 255]``), box-averaged
    by ``reduce`` first. Works in strips of rows, so no full-size wide (int64/float64) copy exists."""
    w, h = im.size
    k = max(1, int(reduce))
    rows = max(k, _STRIP_PIXELS // max(w, 1) // k * k)
    if im.mode == "F":
        peak = max((float(np.nan_to_num(s, nan=0.0, posinf=255.0, neginf=0.0).max(initial=0.0))
                    for s in _wide_strips(im, rows)), default=0.0)
        scale = 255.0 if peak <= 1.0 else 1.0
    else:  # I;16, I;16B, I;16L, I (PNG 16-bit greyscale decodes to I or I;16)
        peak = 65535 if im.mode.startswith("I;16") else max(
            65535, max((int(s.max(initial=0)) for s in _wide_strips(im, rows)), default=0))
        scale = 255.0 / peak
    out = np.empty((-(-h // k), -(-w // k)), np.uint8)
    cols = np.arange(0, w, k)
    col_n = np.minimum(k, w - cols)
    y = 0
    for strip in _wide_strips(im, rows):
        a = strip.astype(np.float64)
        if im.mode == "F":
            a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        if k > 1:
            starts = np.arange(0, len(a), k)
            a = np.add.reduceat(np.add.reduceat(a, starts, axis=0), cols, axis=1)
            a /= np.minimum(k, len(strip) - starts)[:, None] * col_n[None, :]
        out[y // k : y // k + len(a)] = np.clip(np.rint(a * scale), 0, 255)
        y += len(strip)
    return Image.fromarray(out)


def _wide_reduce(im: Image.Image, request: tuple[int, int], cfg: ImageConfig) -> int:
    """Box factor for a wide-mode image decoded at ``im.size`` and wanted at ``request`` (w, h):
    what ``resize(reducing_gap=...)`` would reduce by first; 1 without a reducing gap."""
    if not cfg.reducing_gap or not (im.mode in ("I", "F") or im.mode.startswith("I;16")):
        return 1
    scale = min(im.size[0] / max(request[0], 1), im.size[1] / max(request[1], 1))
    return max(1, int(scale // cfg.reducing_gap))


#: PNGs of at least this many pixels are decoded in bands when downscaled (:mod:`.png_bands`)
_BANDED_PIXELS = 16 * 2**20


def _png_in_bands(data: bytes, im: Image.Image, request: tuple[int, int], cfg: ImageConfig) -> Image.Image | None:
    """A large still PNG decoded band by band and box-reduced by what ``resize(reducing_gap=...)``
    would reduce by first, or ``None`` (then it is decoded whole)."""
    if (im.format != "PNG" or not cfg.reducing_gap or im.size[0] * im.size[1] < _BANDED_PIXELS
            or getattr(im, "n_frames", 1) > 1):
        return None
    k = int(min(im.size[0] / max(request[0], 1), im.size[1] / max(request[1], 1)) // cfg.reducing_gap)
    return decode_png_reduced(data, k, _to_8bit) if k >= 2 else None


def _normalise_mode(im: Image.Image, reduce: int = 1) -> Image.Image:
    """Return an ``RGB``, ``L`` or ``RGBA`` image (``RGBA`` only when there is alpha); wide
    single-channel modes are box-reduced by ``reduce`` while they are rescaled."""
    mode = im.mode
    if mode in ("RGB", "L", "RGBA"):
        return im
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_8bit(im, reduce)
    if mode in ("LA", "La", "PA", "RGBa", "RGBX"):
        return im.convert("RGBA") if mode != "RGBX" else im.convert("RGB")
    if mode == "P":
        return im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _crop_of(plan: Plan, stored: tuple[int, int], orient: int):
    """``(box in stored pixels (l, t, r, b), stored (w, h), flip)`` of the augmentation crop
    ``plan.crop`` (displayed orientation), or ``None`` for the whole image unflipped."""
    box = plan.crop
    if box is None:
        return None
    h, w = (stored[0], stored[1]) if orient >= 5 else (stored[1], stored[0])  # displayed size
    if box.is_identity(h, w):
        return None
    return stored_box(box, h, w, orient), stored, box.flip


def _draft_request(size: tuple[int, int], box, target: tuple[int, int]) -> tuple[int, int]:
    """The whole-image size to ``draft()`` toward so that the box still covers ``target``."""
    bw, bh = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
    return -(-size[0] * target[0] // bw), -(-size[1] * target[1] // bh)


def _scaled_box(box, stored: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """``box`` (stored pixels) in an image drafted from ``stored`` to ``size`` (JPEG DCT scale 1/k)."""
    kx = max(1, round(stored[0] / size[0]))
    ky = max(1, round(stored[1] / size[1]))
    return (min(box[0] / kx, size[0]), min(box[1] / ky, size[1]), min(box[2] / kx, size[0]),
            min(box[3] / ky, size[1]))


def materialize_image(data: bytes, plan: Plan, cfg: ImageConfig | None = None) -> np.ndarray:
    """Decode ``data`` to uint8 ``[1, H, W, 3]`` with ``(H, W) = plan.size``.

    Raises:
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated``, ``too-large``.
    """
    cfg = cfg or ImageConfig()
    im = _open(data, cfg)
    out_h, out_w = plan.size
    orient = plan.orientation if cfg.exif_orientation else 1
    # target in stored (unrotated) orientation, as PIL (width, height)
    target = (out_h, out_w) if orient >= 5 else (out_w, out_h)
    crop = _crop_of(plan, im.size, orient)
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        request = target if crop is None else _draft_request(im.size, crop[0], target)
        if cfg.draft and im.format == "JPEG":
            im.draft(None, request)
        banded = _png_in_bands(data, im, request, cfg)
        if banded is not None:
            im = banded
        else:
            with _bomb_limit(cfg):
                im.load()
        im = _normalise_mode(im, _wide_reduce(im, request, cfg))
        if crop is not None:  # crop before the resize; the box follows any draft downscale
            im = im.resize(target, RESAMPLE[cfg.resample], box=_scaled_box(crop[0], crop[1], im.size),
                           reducing_gap=cfg.reducing_gap)
        elif im.size != target:
            im = im.resize(target, RESAMPLE[cfg.resample], reducing_gap=cfg.reducing_gap)
        if orient in _TRANSPOSE:
            im = im.transpose(_TRANSPOSE[orient])
        if crop is not None and crop[2]:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
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

