"""Opening and decoding an image with Pillow under patchpack's limits, and typing what goes wrong.

:func:`open_image` checks what the bytes say before Pillow parses them further (the sizes an
ICO really embeds: :mod:`.guards`), the declared size against ``max_pixels`` and a progressive
JPEG's scan count; :func:`load_image` checks the memory the decode will take, decodes, and checks
that what was decoded is the size the header declared. Pillow's own bomb limit is a
process-wide global: it is lifted while any thread opens or decodes (:func:`bomb_limit`) and
the configured limits are checked explicitly instead. Failures are
:class:`~patchpack.errors.SampleError` of the kinds :func:`classify_error` picks.
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import TYPE_CHECKING, Iterator

from PIL import Image, UnidentifiedImageError

from ..errors import SampleError
from .guards import check_ico, check_memory, check_scans, decode_peak_bytes, jpeg_coefficients

if TYPE_CHECKING:
    from .image import ImageConfig

__all__ = ["open_image", "load_image", "bomb_limit", "classify_error"]

# Leading bytes of formats Pillow reads: a payload starting with one of these that
# fails to open is "corrupt"; anything else is "not-media".
_MAGIC = (
    b"\xff\xd8", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*", b"P1", b"P2", b"P3", b"P4",
    b"P5", b"P6", b"\x00\x00\x00\x0cjP", b"\xff\x4f\xff\x51",
)
_ICO = b"\x00\x00\x01\x00"

_LIMIT_LOCK = threading.Lock()
_limit_users = 0  # decodes inside bomb_limit, over all threads
_limit_saved: int | None = None


@contextlib.contextmanager
def bomb_limit(cfg: "ImageConfig") -> Iterator[None]:
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


def classify_error(exc: BaseException, data: bytes) -> str:
    """The error kind of an exception Pillow raised on ``data``."""
    msg = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in msg or "end of file" in msg or "premature" in msg:
        return "truncated"
    if isinstance(exc, Image.DecompressionBombError):
        return "too-large"
    if isinstance(exc, UnidentifiedImageError) and not data.startswith(_MAGIC):
        return "not-media"
    return "corrupt"


def open_image(data: bytes, cfg: "ImageConfig") -> Image.Image:
    """``data`` opened lazily by Pillow (header only), within ``cfg``'s limits.

    Raises:
        SampleError: ``empty``, ``not-media``, ``corrupt``, ``truncated``, ``too-large`` (declared or
            embedded size over ``max_pixels``) or ``too-slow`` (progressive JPEG over ``max_scans``).
    """
    if not data:
        raise SampleError("empty", "zero-byte image payload", stage="decode")
    if data.startswith(_ICO):  # Pillow decodes an ICO's largest image while opening it
        check_ico(data, cfg.max_pixels)
    try:
        with bomb_limit(cfg):
            im = Image.open(io.BytesIO(data), formats=cfg.formats)
    except Exception as exc:  # Pillow raises many types for bad headers
        why = f"not an image in the formats read ({', '.join(cfg.formats)})" \
            if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise SampleError(classify_error(exc, data), f"cannot open image: {why}", stage="decode") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise SampleError("corrupt", f"image header declares size {w}x{h}", stage="decode")
    if cfg.max_pixels is not None and w * h > cfg.max_pixels:
        raise SampleError(
            "too-large", f"{w}x{h} = {w * h} pixels exceeds the limit of {cfg.max_pixels}", stage="decode"
        )
    if im.info.get("progressive") and im.format in ("JPEG", "MPO"):
        check_scans(data, cfg.max_scans)
    return im


def load_image(im: Image.Image, stored: tuple[int, int], cfg: "ImageConfig") -> None:
    """Decode ``im`` whole (``stored``: its size before any DCT scale), after checking the memory its
    format will take; then check that what was decoded is the size the header (and the DCT scale) said.

    Raises:
        SampleError: ``too-large`` (estimated memory over ``max_decode_bytes``, or a decoded size
            over ``max_pixels``), ``corrupt`` (a decoded size that differs from the header's).
    """
    before = im.size
    coefficients = jpeg_coefficients(im) if im.format in ("JPEG", "MPO") else 0
    peak = decode_peak_bytes(str(im.format), im.mode, stored, before, progressive_coefficients=coefficients,
                             transparency="transparency" in im.info)
    check_memory(peak, cfg.max_decode_bytes, f"this {im.format} of {stored[0]}x{stored[1]}")
    with bomb_limit(cfg):
        im.load()
    if im.size != before:
        w, h = im.size
        kind = "too-large" if cfg.max_pixels is not None and w * h > cfg.max_pixels else "corrupt"
        raise SampleError(kind, f"decoded {w}x{h}, but the header declared {before[0]}x{before[1]}", stage="decode")
