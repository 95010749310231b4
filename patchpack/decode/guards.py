"""Bounds checked before an image is decoded: what its bytes say the decode will cost.

A header's declared size bounds most decodes (``ImageConfig.max_pixels``), but not all of them:

* **progressive JPEG scans** (:func:`jpeg_scan_count`): every scan is a pass of the entropy
  decoder over all the image's blocks, and the standard sets no limit on their number. A
  658 KB file of thousands of tiny scans keeps one decode busy for minutes (Pillow ~75 ms a
  scan at its size). libjpeg's default progression writes 10 scans (6 for greyscale); the SOS
  markers are counted before decoding and a file over ``ImageConfig.max_scans`` is ``too-slow``;
* **ICO directories** (:func:`ico_embedded_sizes`): Pillow decodes the largest entry while it
  *opens* the file, at the size of the PNG or BMP embedded there, not the 1-256 px the
  directory declares; the embedded headers are read first;
* **memory by format** (:func:`decode_peak_bytes`): the bytes a decode holds at its peak differ
  by format, measured with Pillow 13 (bytes per decoded pixel, over the encoded bytes):

  ======================================  =================================================
  WebP (any)                              16: libwebp's animation decoder holds two canvases,
                                          Pillow copies one out and then into the image
  JPEG, baseline                          4 per pixel *after* the DCT scale (``draft``)
  JPEG, progressive                       + 2 per coefficient of the whole image (the
                                          coefficient buffer: 3 per pixel at 4:2:0, 6 at 4:4:4)
  PNG decoded in bands                    4 per pixel of the reduced image, + 2 bands
  anything decoded whole                  Pillow's bytes per pixel of its mode (1 for L/P,
                                          2 for I;16, 4 otherwise)
  each full-size conversion               + 4 per pixel: 1 for P, CMYK, YCbCr, ... (to RGB)
                                          and RGBA (premultiplied), 2 for LA, PA and P with
                                          transparency (to RGBA, then premultiplied)
  ======================================  =================================================

  A decode whose estimate exceeds ``ImageConfig.max_decode_bytes`` is ``too-large`` before any
  pixel is decoded.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import SampleError

__all__ = ["jpeg_scan_count", "check_scans", "ico_embedded_sizes", "check_ico", "decode_peak_bytes",
           "jpeg_coefficients", "check_memory", "MODE_BYTES", "WEBP_BYTES_PER_PIXEL"]

_PNG = b"\x89PNG\r\n\x1a\n"
#: Pillow's bytes per pixel by mode (its RGB is stored as 4 bytes a pixel); others 4
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
#: Peak bytes per pixel while Pillow decodes a WebP (measured: 16.2 at 6000 x 6000, any mode)
WEBP_BYTES_PER_PIXEL = 17
#: full-size copies (4 bytes a pixel) a mode is converted through before the resize; others 1
_CONVERSIONS = {"RGB": 0, "L": 0, "1": 0, "I": 0, "F": 0, "I;16": 0, "I;16B": 0, "I;16L": 0, "I;16N": 0,
                "LA": 2, "La": 2, "PA": 2}


def _entropy_end(data: bytes, pos: int) -> int:
    """Index of the first marker after entropy-coded data starting at ``pos`` (``len(data)`` if none):
    ``0xFF`` followed by anything but a stuffed zero, a restart marker or a fill byte."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1 if nxt == 0xFF else 2
            continue
        return pos


def jpeg_scan_count(data: bytes) -> int:
    """Scans (SOS segments) in a JPEG, walking its marker segments (the payloads of APPn segments,
    e.g. an EXIF thumbnail, are skipped); a damaged stream counts up to where it breaks."""
    count, pos, n = 0, 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return count
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return count
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        end = pos + 2 + struct.unpack(">H", data[pos + 2: pos + 4])[0]
        if marker == 0xDA:
            count += 1
            end = _entropy_end(data, end)
        pos = end
    return count


def _marker_pairs(data: bytes, second: int) -> int:
    """How many times ``FF <second>`` occurs in ``data`` (numpy, one pass)."""
    a = np.frombuffer(data, np.uint8)
    ff = np.flatnonzero(a[:-1] == 0xFF)
    return int(np.count_nonzero(a[ff + 1] == second))


def check_scans(data: bytes, max_scans: int | None) -> None:
    """Raise ``too-slow`` when the JPEG ``data`` has more than ``max_scans`` scans. The count of
    ``FF DA`` byte pairs (one numpy pass) bounds the scans from above: entropy-coded data never holds
    one, so the segments are walked only when that bound is over the limit."""
    if max_scans is None or _marker_pairs(data, 0xDA) <= max_scans:
        return
    scans = jpeg_scan_count(data)
    if scans > max_scans:
        raise SampleError("too-slow", f"JPEG of {scans} scans exceeds max_scans={max_scans} (each scan is a pass "
                          "over the whole image)", stage="decode")


def ico_embedded_sizes(data: bytes) -> list[tuple[int, int]]:
    """``(width, height)`` of each image an ICO file embeds, from the embedded PNG's ``IHDR`` or
    the BMP's info header (what Pillow would decode), not from the directory."""
    if len(data) < 6:
        return []
    count = struct.unpack("<H", data[4:6])[0]
    sizes = []
    for i in range(count):
        entry = data[6 + 16 * i: 22 + 16 * i]
        if len(entry) < 16:
            break
        offset = struct.unpack("<I", entry[12:16])[0]
        head = data[offset: offset + 26]
        if head[:8] == _PNG and len(head) >= 24:
            sizes.append(struct.unpack(">II", head[16:24]))
        elif len(head) >= 12 and struct.unpack("<I", head[:4])[0] == 12:  # OS/2 BITMAPCOREHEADER
            sizes.append(struct.unpack("<HH", head[4:8]))
        elif len(head) >= 12:
            w, h = struct.unpack("<ii", head[4:12])
            sizes.append((abs(w), abs(h)))
    return sizes


def check_ico(data: bytes, max_pixels: int | None) -> None:
    """Raise ``too-large`` when an image embedded in the ICO ``data`` exceeds ``max_pixels``."""
    if max_pixels is None:
        return
    for w, h in ico_embedded_sizes(data):
        if w * h > max_pixels:
            raise SampleError("too-large", f"ICO embeds a {w}x{h} image: {w * h} pixels exceeds the limit of "
                              f"{max_pixels} (its directory declares at most 256x256)", stage="decode")


def decode_peak_bytes(fmt: str, mode: str, size: tuple[int, int], decoded: tuple[int, int], *,
                      progressive_coefficients: int = 0, banded: bool = False, transparency: bool = False) -> int:
    """Estimated peak bytes of decoding an image (module doc table).

    Args:
        fmt, mode: Pillow's format and mode.
        size: the stored ``(width, height)``.
        decoded: ``(width, height)`` the decoder produces (after a JPEG's DCT scale; a PNG
            decoded in bands: the reduced size).
        progressive_coefficients: DCT coefficients of a progressive JPEG (0 otherwise).
        banded: the PNG is decoded in bands.
        transparency: a palette image with a transparent entry (converted to RGBA, then premultiplied).
    """
    pixels = decoded[0] * decoded[1]
    if fmt == "WEBP":
        return WEBP_BYTES_PER_PIXEL * size[0] * size[1]
    if banded:
        from .png_bands import BAND_BYTES

        return 4 * pixels + 2 * BAND_BYTES
    conversions = _CONVERSIONS.get(mode, 1) + (mode == "P" and transparency)
    return (MODE_BYTES.get(mode, 4) + 4 * conversions) * pixels + 2 * progressive_coefficients


def jpeg_coefficients(im) -> int:
    """DCT coefficients a progressive JPEG's decoder buffers (its whole image, every component at
    its sampling), from Pillow's frame header facts; 0 for a sequential JPEG."""
    if not im.info.get("progressive") or not getattr(im, "layer", None):
        return 0
    hmax = max(h for _, h, _, _ in im.layer) or 1
    vmax = max(v for _, _, v, _ in im.layer) or 1
    w, h = im.size
    blocks = 0
    for _, hs, vs, _ in im.layer:
        cw, ch = -(-w * hs // hmax), -(-h * vs // vmax)
        blocks += -(-cw // 8) * -(-ch // 8)
    return 64 * blocks


def check_memory(peak: int, max_bytes: int | None, what: str) -> None:
    """Raise ``too-large`` when a decode's estimated ``peak`` exceeds ``max_bytes``."""
    if max_bytes is not None and peak > max_bytes:
        raise SampleError("too-large", f"decoding {what} would take ~{peak / 2**20:.0f} MiB, over "
                          f"max_decode_bytes={max_bytes / 2**20:.0f} MiB", stage="decode")
