"""Image decoding with Pillow in two steps: header facts, then pixels at a given size.

:func:`read_image_header` opens the image lazily (Pillow reads only the header) and
applies the EXIF orientation to the size; :mod:`patchpack.fit` decides the output size
from it, so the packer can place the example before any pixel is decoded.

:func:`materialize_image` decodes at exactly ``plan.size``:

1. the bounds of :mod:`.guards` are checked from the bytes (progressive JPEG scans, the sizes
   an ICO really embeds, the memory the decode will take), then ``Image.draft()`` toward the
   fitted size (JPEG: the decoder scales the DCT by 1/2, 1/4 or 1/8, never below the fitted
   size), then the decode (large PNGs in bands, :mod:`.png_bands`); the decoded size is
   checked against the header's;
2. modes normalised (:mod:`.modes`): ``1``/``L``/``P``/``CMYK``/... -> ``L``/``RGB``/``RGBA``;
   16-bit and 32-bit modes rescaled to 8 bits (not clamped);
3. the resize (``ImageConfig.resize``), in the source orientation:

   * ``"opencv"`` (default): an integer box reduction in Pillow (``Image.reduce``) while the
     remaining scale is over 2 x :data:`~.resize.BOX_GAP`, then :func:`.resize.resize_region`:
     an antialiasing windowed-sinc prefilter and one OpenCV ``INTER_CUBIC`` step, mapping the
     exact region (a JPEG's partial last DCT block, a crop box in source pixels) onto the
     output. Pillow's pixels reach OpenCV without a copy where Pillow allows it;
   * ``"pillow"``: Pillow's antialiased ``resize`` (``ImageConfig.resample``,
     ``reducing_gap``), the output of earlier patchpack versions;

   alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency) is composited onto
   ``ImageConfig.background`` (premultiplied, so transparent pixels' colours never bleed in);
4. the EXIF transpose and the augmentation crop's flip on the small image;
5. animated images (GIF, WebP, APNG) give their first frame.

Sizes are ``(height, width)`` in pixels. EXIF orientation is read from the header;
a PNG whose ``eXIf`` chunk follows the image data is treated as unrotated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..augment.geometric import stored_box
from ..errors import SampleError
from ..example import Header, Plan
from .modes import is_wide, normalise_mode, to_8bit
from .pillow_io import classify_error, load_image, open_image
from .png_bands import decode_png_reduced
from .resize import box_factor, pixel_view, resize_region, use_one_opencv_thread

__all__ = ["ImageConfig", "read_image_header", "materialize_image", "IMAGE_EXTS", "IMAGE_FORMATS", "RESAMPLE",
           "RESIZERS"]

#: Member extensions treated as images.
IMAGE_EXTS = frozenset(
    {"jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm",
     "tga", "ico", "jp2", "j2k", "jpx"}
)

#: Resampling filters by name (``resize="pillow"``).
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

#: ``ImageConfig.resize`` values.
RESIZERS = ("opencv", "pillow")

# EXIF orientation -> transpose applied to the decoded image (None: as stored), Pillow and numpy
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TURN = {  # the same with OpenCV on the small output (each a SIMD copy)
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}

#: Pillow formats decoded by default: those of :data:`IMAGE_EXTS`. Pillow can open many more
#: (EPS runs Ghostscript, a separate program; PSD, FITS, ... are rare in training data and
#: widen the parsers an adversary can reach), so a payload in any other format is ``not-media``.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "JPEG2000")



@dataclass(frozen=True)
class ImageConfig:
    """How images are decoded.

    Memory: one image's decode takes at most about ``max_decode_bytes`` (estimated from its
    header before decoding, by how its format decodes: :mod:`patchpack.decode.guards`) plus
    its encoded bytes and the output; ``max_pixels`` holds on what is actually decoded (an
    ICO's embedded image, a decoded size that differs from the header's). Time: a progressive
    JPEG's decode grows with ``scans x pixels``, bounded by ``max_scans x max_pixels``.

    Attributes:
        background: RGB colour (0-255) that transparent pixels are composited onto.
        max_pixels: decompression-bomb limit: images whose header (or, for an ICO, embedded
            image) declares more than this many pixels are refused (``too-large``) before
            decoding; ``None`` disables the check (Pillow's own limit is then not applied either).
        max_decode_bytes: peak memory one image's decode may take (default 1 GiB): a decode
            estimated above it is refused (``too-large``) before decoding (a WebP decodes whole at
            ~16 bytes a pixel, so this caps WebPs near 63 Mpx; a progressive JPEG buffers 3-8
            bytes per source pixel whatever its DCT scale); ``None``: no bound but ``max_pixels``.
        max_scans: most scans a progressive JPEG may have (default 64; libjpeg's default
            progression writes 10); each scan is a pass over the whole image, and a file of
            thousands of tiny scans takes minutes, so more is ``too-slow``; ``None``: no limit.
        resize: ``"opencv"`` (default): box reduction, antialiasing prefilter and OpenCV's
            cubic step (module doc; sets ``cv2.setNumThreads(1)`` once per process);
            ``"pillow"``: Pillow's ``resize`` with ``resample`` and ``reducing_gap`` (the pixels of
            earlier versions; about 1.7x the draft decode's time instead of 1.2x).
        resample: Pillow resize filter, a key of :data:`RESAMPLE` (``resize="pillow"``).
        reducing_gap: Pillow ``reducing_gap`` for large downscales (integer box reduction
            first while the scale exceeds this factor; ``None`` for a plain resize);
            ``resize="pillow"`` only.
        draft: use ``Image.draft()`` (JPEG DCT scaling) before the full decode.
        exif_orientation: honour the EXIF orientation tag.
        formats: Pillow format names tried when an image is opened (default
            :data:`IMAGE_FORMATS`); any other payload is ``not-media`` and is never parsed
            further. ``EPS`` is refused in any case (its decoding runs Ghostscript).
    """

    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int | None = 178_956_970
    max_decode_bytes: int | None = 1 << 30
    max_scans: int | None = 64
    resize: str = "opencv"
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
        if self.resize not in RESIZERS:
            raise ValueError(f"unknown resize {self.resize!r}; expected one of {RESIZERS}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"unknown resample filter {self.resample!r}; expected one of {sorted(RESAMPLE)}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError("background must be an RGB triple in 0..255")
        for name in ("max_pixels", "max_decode_bytes", "max_scans"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if self.reducing_gap is not None and self.reducing_gap < 1.0:
            raise ValueError("reducing_gap must be >= 1.0 or None")


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
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated``, ``too-large`` or ``too-slow``.
    """
    cfg = cfg or ImageConfig()
    im = open_image(data, cfg)
    w, h = im.size
    orient = _orientation(im, cfg)
    src = (w, h) if orient >= 5 else (h, w)  # (height, width) as displayed
    return Header("image", (int(src[0]), int(src[1])), stored_size=(int(h), int(w)), orientation=orient,
                  format=str(im.format or ""), mode=str(im.mode))


#: PNGs of at least this many pixels are decoded in bands when downscaled (:mod:`.png_bands`)
_BANDED_PIXELS = 16 * 2**20


def _png_in_bands(data: bytes, im: Image.Image, k: int) -> Image.Image | None:
    """A large still PNG decoded band by band and box-reduced by ``k`` (>= 2), or ``None`` (then it is
    decoded whole)."""
    if im.format != "PNG" or k < 2 or im.size[0] * im.size[1] < _BANDED_PIXELS or getattr(im, "is_animated", False):
        return None
    return decode_png_reduced(data, k, to_8bit)


def _composite(im: Image.Image, cfg: ImageConfig) -> Image.Image:
    """An ``RGBA`` image over ``cfg.background`` (alpha is left at 255); other modes as they are."""
    if im.mode != "RGBA":
        return im
    return Image.alpha_composite(Image.new("RGBA", im.size, (*(int(c) for c in cfg.background), 255)), im)


#: fraction bits kept between the resize and the compositing of premultiplied alpha
_ALPHA_BITS = 6


def _over_background(premultiplied: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """Premultiplied ``[h, w, 4]`` pixels (``RGBa``, int16 times ``2 ** _ALPHA_BITS``) composited onto
    ``cfg.background`` and rounded once: ``[h, w, 3]`` uint8 RGB. The resize's over- and undershoot
    is clipped as an ``RGBa`` image holds it: alpha to ``[0, 255]``, colour to ``[0, alpha]``."""
    a = premultiplied.astype(np.float32) * np.float32(1 / (1 << _ALPHA_BITS))
    alpha = np.clip(a[:, :, 3:], 0, 255)
    rgb = np.clip(a[:, :, :3], 0, alpha) + np.asarray(cfg.background, np.float32) * (1 - alpha * np.float32(1 / 255))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _crop_of(plan: Plan, stored: tuple[int, int], orient: int):
    """``(box in stored pixels (l, t, r, b), flip)`` of the augmentation crop ``plan.crop``
    (displayed orientation), or ``None`` for the whole image unflipped."""
    box = plan.crop
    if box is None:
        return None
    h, w = (stored[0], stored[1]) if orient >= 5 else (stored[1], stored[0])  # displayed size
    if box.is_identity(h, w):
        return None
    return stored_box(box, h, w, orient), box.flip


def _draft_request(size: tuple[int, int], box, target: tuple[int, int]) -> tuple[int, int]:
    """The whole-image size to ``draft()`` toward so that the box still covers ``target``."""
    bw, bh = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
    return -(-size[0] * target[0] // bw), -(-size[1] * target[1] // bh)


def _decode_reduced(data: bytes, im: Image.Image, stored: tuple[int, int], region, k: int, cfg: ImageConfig):
    """Decode ``im`` to ``L``/``RGB``/``RGBa`` (alpha premultiplied) or ``RGBA`` (from bands) box-reduced
    by ``k``: ``(image, region in its pixels)``.

    Large PNGs are reduced band by band, wide modes while they are rescaled, anything else by
    ``Image.reduce`` over the part the region needs (plus a margin for the resize's filter)."""
    banded = _png_in_bands(data, im, k)
    if banded is not None:
        return normalise_mode(banded), tuple(v / k for v in region)
    load_image(im, stored, cfg)
    if is_wide(im.mode):
        return normalise_mode(im, k), tuple(v / k for v in region)
    im = normalise_mode(im)
    if im.mode == "RGBA":  # premultiplied before any averaging, and only once
        im = im.convert("RGBa")
    if k < 2:
        return im, region
    pad = 12 * k  # the prefilter and cubic taps reach ~10 reduced pixels past the region
    x0, y0 = max(0, int(region[0]) - pad), max(0, int(region[1]) - pad)
    x1, y1 = min(im.size[0], math.ceil(region[2]) + pad), min(im.size[1], math.ceil(region[3]) + pad)
    reduced = im.reduce(k, (x0, y0, x1, y1))
    return reduced, ((region[0] - x0) / k, (region[1] - y0) / k, (region[2] - x0) / k, (region[3] - y0) / k)


def _opencv_pixels(data: bytes, im: Image.Image, target: tuple[int, int], crop, cfg: ImageConfig) -> np.ndarray:
    """``[h, w]`` (grey) or ``[h, w, 3]`` pixels at ``target`` (PIL ``(w, h)``, stored orientation), alpha
    already composited onto the background."""
    use_one_opencv_thread()
    stored = im.size
    box = crop[0] if crop is not None else (0, 0, *stored)
    scale = 1.0
    if cfg.draft and im.format == "JPEG":
        drafted = im.draft(None, target if crop is None else _draft_request(stored, box, target))
        if drafted is not None:
            scale = stored[0] / drafted[1][2]
    region = tuple(v / scale for v in box)
    k = box_factor(min((region[2] - region[0]) / target[0], (region[3] - region[1]) / target[1]))
    im, region = _decode_reduced(data, im, stored, region, k, cfg)
    if im.mode not in ("RGBA", "RGBa"):
        pixels = pixel_view(im)
        if pixels.shape[2] == 4:  # Pillow's RGB is RGBX: filter and resize three channels, not four
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2RGB)
        return resize_region(pixels, region, (target[1], target[0]))
    # resized premultiplied, then composited, as Pillow resizes alpha: no colour bleeds from transparent pixels
    premultiplied = resize_region(pixel_view(im if im.mode == "RGBa" else im.convert("RGBa")), region,
                                  (target[1], target[0]), fraction_bits=_ALPHA_BITS)
    return _over_background(premultiplied, cfg)


def _as_rgb(pixels: np.ndarray, orient: int, flip: bool) -> np.ndarray:
    """``[h, w(, C)]`` stored-orientation pixels as a new ``[H, W, 3]`` RGB array as displayed
    (OpenCV's channel conversion and transposes: numpy's strided copies of 3-byte pixels cost ~50x more)."""
    a = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if pixels.ndim == 2 or pixels.shape[2] == 1 else pixels
    if orient in _TURN:
        a = _TURN[orient](a)
    if flip:
        a = cv2.flip(a, 1)
    return np.ascontiguousarray(a)


def _pillow_pixels(data: bytes, im: Image.Image, target: tuple[int, int], crop, orient: int,
                   cfg: ImageConfig) -> np.ndarray:
    """``resize="pillow"``: Pillow's resize, transposes and compositing; ``[H, W, 3]`` as displayed."""
    stored = im.size
    request = target if crop is None else _draft_request(stored, crop[0], target)
    if cfg.draft and im.format == "JPEG":
        im.draft(None, request)
    wide = cfg.reducing_gap and (is_wide(im.mode) or im.format == "PNG")
    k = int(min(im.size[0] / max(request[0], 1), im.size[1] / max(request[1], 1)) // cfg.reducing_gap) if wide else 1
    banded = _png_in_bands(data, im, k)
    if banded is not None:
        im = banded
    else:
        load_image(im, stored, cfg)
    im = normalise_mode(im, k if is_wide(im.mode) else 1)
    resample = RESAMPLE[cfg.resample]
    if crop is not None:  # crop before the resize; the box follows any draft downscale
        kx, ky = max(1, round(stored[0] / im.size[0])), max(1, round(stored[1] / im.size[1]))
        b = crop[0]
        fbox = (min(b[0] / kx, im.size[0]), min(b[1] / ky, im.size[1]), min(b[2] / kx, im.size[0]),
                min(b[3] / ky, im.size[1]))
        im = im.resize(target, resample, box=fbox, reducing_gap=cfg.reducing_gap)
    elif im.size != target:
        im = im.resize(target, resample, reducing_gap=cfg.reducing_gap)
    if orient in _TRANSPOSE:
        im = im.transpose(_TRANSPOSE[orient])
    if crop is not None and crop[1]:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = _composite(im, cfg)
    return np.asarray(im.convert("RGB") if im.mode != "RGB" else im)


def materialize_image(data: bytes, plan: Plan, cfg: ImageConfig | None = None) -> np.ndarray:
    """Decode ``data`` to uint8 ``[1, H, W, 3]`` with ``(H, W) = plan.size``.

    Raises:
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated``, ``too-large``, ``too-slow``.
    """
    cfg = cfg or ImageConfig()
    im = open_image(data, cfg)
    out_h, out_w = plan.size
    orient = plan.orientation if cfg.exif_orientation else 1
    # target in stored (unrotated) orientation, as PIL (width, height)
    target = (out_h, out_w) if orient >= 5 else (out_w, out_h)
    crop = _crop_of(plan, im.size, orient)
    try:
        if getattr(im, "is_animated", False):
            im.seek(0)
        if cfg.resize == "pillow":
            arr = _pillow_pixels(data, im, target, crop, orient, cfg)
        else:
            arr = _as_rgb(_opencv_pixels(data, im, target, crop, cfg), orient, crop is not None and crop[1])
    except SampleError:
        raise
    except Exception as exc:  # decoder errors surface only here for lazily-opened files
        raise SampleError(classify_error(exc, data), f"cannot decode image: {exc}", stage="decode") from None
    if arr.shape != (out_h, out_w, 3):  # pragma: no cover - guarded by construction
        raise SampleError("corrupt", f"decoded shape {arr.shape} != fitted {(out_h, out_w, 3)}", stage="decode")
    return arr[None]
