"""Large PNGs decoded in bands of rows and box-reduced on the way, so the full raster never exists.

Pillow decodes a PNG whole: a 13000 x 13000 16-bit greyscale PNG of a few hundred KB becomes a
338 MB raster before anything can be reduced. :func:`decode_png_reduced` instead inflates the
``IDAT`` stream progressively (``zlib``), cuts it into bands of ``rows`` scanlines, and has
Pillow decode each band as a small PNG of its own (same header, palette and transparency).
The first scanline of a band is filtered against the last one of the band before, so each
band PNG starts with that row again, reconstructed and unfiltered (filter type 0). Each
decoded band is box-reduced by ``k`` (``Image.reduce``; wide modes through ``rescale``) and
the bands are stacked: the result equals ``Image.reduce(k)`` of the whole image up to the
box edges at band joints (bands are multiples of ``k`` rows, so there are none).

Only non-interlaced PNGs whose decoded rows Pillow keeps exactly are handled: 8-bit grey,
grey+alpha, RGB, RGBA and palette, and 16-bit grey; anything else returns ``None`` and the
caller decodes as usual. Peak memory is about two bands plus the reduced image.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from typing import Callable

from PIL import Image

__all__ = ["decode_png_reduced", "BAND_BYTES"]

#: target size of one band's raw scanlines (bytes)
BAND_BYTES = 8 * 2**20

_SIG = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) -> (channels, Pillow raw mode of a decoded band's rows)
_EXACT = {(8, 0): (1, "L"), (8, 2): (3, "RGB"), (8, 3): (1, "P"), (8, 4): (2, "LA"), (8, 6): (4, "RGBA"),
          (16, 0): (1, "I;16B")}
_KEEP = {b"PLTE", b"tRNS", b"sBIT"}  # chunks a band needs to decode to the same pixels


def _chunks(data: bytes):
    pos = len(_SIG)
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + n > len(data):
            raise ValueError("chunk runs past the end of the file")
        body = memoryview(data)[pos + 8:pos + 8 + n]
        yield kind, body
        pos += 12 + n
        if kind == b"IEND":
            return


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + bytes(body) + struct.pack(">I", zlib.crc32(kind + bytes(body)))


def _band(raw: bytes, context: bytes | None, w: int, n: int, depth: int, ctype: int, kept: bytes) -> Image.Image:
    """``n`` filtered rows decoded as a PNG of their own (after the row before them, ``context``, whose
    pixels the filters of the first row refer to; that row is cut off again)."""
    head = b"" if context is None else b"\x00" + context
    band_png = (_SIG + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, n + (context is not None), depth, ctype, 0, 0, 0))
                + kept + _chunk(b"IDAT", zlib.compress(head + raw, 0)) + _chunk(b"IEND", b""))
    band = Image.open(io.BytesIO(band_png))
    band.load()
    return band if context is None else band.crop((0, 1, w, n + 1))


def _reduced(band: Image.Image, k: int, rescale) -> Image.Image:
    """One decoded band box-reduced by ``k`` (wide modes rescaled to 8 bits, palettes expanded)."""
    if band.mode.startswith("I;16"):
        return rescale(band, k) if rescale is not None else band.reduce(k)
    if band.mode == "P":
        band = band.convert("RGBA" if "transparency" in band.info else "RGB")
    return band.reduce(k)


def decode_png_reduced(data: bytes, k: int, rescale: Callable[[Image.Image, int], Image.Image] | None = None
                       ) -> Image.Image | None:
    """The PNG ``data`` decoded and box-reduced by ``k`` (see module doc), or ``None`` when this
    PNG is not one of the handled kinds or is damaged (the caller then decodes it as usual).

    ``rescale(band, k)`` turns a decoded wide-mode band (``I;16``) into a reduced 8-bit one.
    """
    if not data.startswith(_SIG) or k < 2:
        return None
    try:
        chunks = list(_chunks(data))
        kind, ihdr = chunks[0]
        if kind != b"IHDR" or len(ihdr) != 13 or chunks[-1][0] != b"IEND":
            return None
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
        if interlace or (depth, ctype) not in _EXACT or w < 1 or h < 1:
            return None
        channels, rawmode = _EXACT[(depth, ctype)]
        stride = w * channels * depth // 8
        kept = b"".join(_chunk(c, b) for c, b in chunks if c in _KEEP)
        rows = max(k, (BAND_BYTES // (stride + 1)) // k * k)
        inflate = zlib.decompressobj()
        pending = bytearray()
        bands: list[Image.Image] = []
        context: bytes | None = None
        idat = (b for c, b in chunks if c == b"IDAT")
        tail: bytes | memoryview = b""
        done = 0
        while done < h:
            want = min(rows, h - done) * (stride + 1)
            while len(pending) < want:
                if not tail:
                    tail = next(idat, b"")
                    if not tail:
                        return None  # the image data ends early: let the usual decoder report it
                pending += inflate.decompress(tail, want - len(pending))  # bounded: one band at a time
                tail = inflate.unconsumed_tail
            raw, pending = bytes(pending), bytearray()
            n = want // (stride + 1)
            band = _band(raw, context, w, n, depth, ctype, kept)
            context = band.crop((0, n - 1, w, n)).tobytes("raw", rawmode)
            bands.append(_reduced(band, k, rescale))
            done += n
        for chunk in itertools.chain([tail], idat):  # the rest of the stream must be there and end cleanly
            while chunk and not inflate.eof:
                inflate.decompress(chunk, 4096)
                chunk = inflate.unconsumed_tail
        if not inflate.eof:
            return None
    except (zlib.error, OSError, ValueError, struct.error, StopIteration):
        return None
    out = Image.new(bands[0].mode, (bands[0].width, sum(b.height for b in bands)))
    y = 0
    for b in bands:
        out.paste(b, (0, y))
        y += b.height
    return out
