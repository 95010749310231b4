"""Video display orientation: the container's display matrix, read from the bytes, and applied to frames.

Phones store portrait video as landscape frames plus a display matrix that says how to turn
them (like EXIF orientation for photos). FFmpeg reports it on decoded frames only, so the
header reads it from the container itself, without decoding:

* MP4/MOV: the video track's ``tkhd`` matrix (times the ``mvhd`` movie matrix);
* Matroska/WebM: the video track's ``Projection`` pose (``ProjectionPoseRoll``, and
  ``ProjectionPoseYaw`` of 180 for a mirror), read the way FFmpeg reads it.

The orientation is kept as the matrix's 2x2 part ``(a, b, c, d)`` rounded to -1/0/1: a
display pixel ``(x', y') = (a x + c y, b x + d y)`` (plus the offset that keeps it on
screen), FFmpeg's ``AV_PKT_DATA_DISPLAYMATRIX`` convention. Rotations by 90/180/270 degrees
and mirrors are exact; other angles are ignored (frames are used as stored).
"""

from __future__ import annotations

import math
import struct

import numpy as np

__all__ = ["IDENTITY", "display_transform", "rotation_degrees", "mirrored", "transposes", "orient"]

IDENTITY = (1, 0, 0, 1)

_CONTAINERS = frozenset({b"moov", b"trak", b"mdia"})


def _boxes(data: bytes, start: int, end: int):
    """``(type, payload start, box end)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, typ = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield typ, pos + head, pos + size
        pos += size


def _iso_matrix(data: bytes, payload: int, end: int, offset_v0: int, offset_v1: int) -> tuple[float, ...] | None:
    """``(a, b, c, d)`` of the matrix in an ``mvhd``/``tkhd`` payload (16.16 fixed point)."""
    off = payload + (offset_v1 if data[payload] == 1 else offset_v0)
    if off + 36 > end:
        return None
    m = struct.unpack_from(">9i", data, off)
    return m[0] / 65536, m[1] / 65536, m[3] / 65536, m[4] / 65536


def _mp4_transform(data: bytes) -> tuple[float, ...] | None:
    for typ, start, end in _boxes(data, 0, len(data)):
        if typ != b"moov":
            continue
        movie = None
        for t2, s2, e2 in _boxes(data, start, end):
            if t2 == b"mvhd":
                movie = _iso_matrix(data, s2, e2, 36, 48)
            elif t2 == b"trak":
                track, handler = None, None
                for t3, s3, e3 in _boxes(data, s2, e2):
                    if t3 == b"tkhd":
                        track = _iso_matrix(data, s3, e3, 40, 52)
                    elif t3 == b"mdia":
                        for t4, s4, _ in _boxes(data, s3, e3):
                            if t4 == b"hdlr":
                                handler = data[s4 + 8 : s4 + 12]
                if handler == b"vide" and track is not None:
                    if movie is None or movie == (1.0, 0.0, 0.0, 1.0):
                        return track
                    a, b, c, d = track
                    ma, mb, mc, md = movie  # row vectors: the track's matrix first, then the movie's
                    return a * ma + b * mc, a * mb + b * md, c * ma + d * mc, c * mb + d * md
        return None
    return None


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """EBML variable-length integer at ``pos``: ``(value, length)``; an all-ones size is -1."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        return None
    value = data[pos] if keep_marker else data[pos] & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = -1
    return value, length


def _elements(data: bytes, start: int, end: int):
    """``(id, payload start, payload end)`` of the EBML elements in ``data[start:end]``."""
    pos = start
    while pos < end:
        ident = _vint(data, pos, True)
        if ident is None:
            return
        size = _vint(data, pos + ident[1], False)
        if size is None:
            return
        payload = pos + ident[1] + size[1]
        stop = end if size[0] < 0 else min(end, payload + size[0])
        yield ident[0], payload, stop
        pos = stop


_SEGMENT, _TRACKS, _TRACK, _TRACK_TYPE, _VIDEO, _PROJECTION = 0x18538067, 0x1654AE6B, 0xAE, 0x83, 0xE0, 0x7670
_CLUSTER, _YAW, _PITCH, _ROLL = 0x1F43B675, 0x7673, 0x7674, 0x7675


def _float(data: bytes, start: int, end: int) -> float:
    n = end - start
    return struct.unpack_from(">d" if n == 8 else ">f", data, start)[0] if n in (4, 8) else 0.0


def _mkv_transform(data: bytes) -> tuple[float, ...] | None:
    for ident, start, end in _elements(data, 0, len(data)):
        if ident != _SEGMENT:
            continue
        for i2, s2, e2 in _elements(data, start, end):
            if i2 == _CLUSTER:
                return None  # media data before any track list: nothing to find cheaply
            if i2 != _TRACKS:
                continue
            for i3, s3, e3 in _elements(data, s2, e2):
                if i3 != _TRACK:
                    continue
                kind, pose = None, None
                for i4, s4, e4 in _elements(data, s3, e3):
                    if i4 == _TRACK_TYPE:
                        kind = int.from_bytes(data[s4:e4], "big")
                    elif i4 == _VIDEO:
                        for i5, s5, e5 in _elements(data, s4, e4):
                            if i5 == _PROJECTION:
                                pose = {i6: _float(data, s6, e6) for i6, s6, e6 in _elements(data, s5, e5)}
                if kind == 1:  # the first video track
                    return _pose_transform(pose or {})
            return None
    return None


def _pose_transform(pose: dict[int, float]) -> tuple[float, ...] | None:
    """FFmpeg's reading of a Matroska projection pose (2-D rotations and a yaw-180 mirror only)."""
    yaw, pitch, roll = pose.get(_YAW, 0.0), pose.get(_PITCH, 0.0), pose.get(_ROLL, 0.0)
    if pitch != 0.0 or yaw not in (0.0, 180.0, -180.0) or math.isnan(roll):
        return None
    hflip = yaw != 0.0
    theta = -math.radians(roll * (2 * hflip - 1))  # as av_display_rotation_set() takes it
    c, s = math.cos(theta), math.sin(theta)
    a, b, cc, d = c, -s, s, c
    if hflip:
        a, cc = -a, -cc
    return a, b, cc, d


def display_transform(data: bytes) -> tuple[int, int, int, int]:
    """The clip's display orientation ``(a, b, c, d)`` (see module doc); :data:`IDENTITY` when none."""
    try:
        head = data[:12]
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
            m = _mp4_transform(data)
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            m = _mkv_transform(data)
        else:
            m = None
    except (struct.error, IndexError, ValueError, OverflowError):
        m = None
    if m is None:
        return IDENTITY
    q = tuple(int(round(v / max(abs(v) for v in m))) if any(m) else 0 for v in m)
    a, b, c, d = q
    if abs(a * d - b * c) != 1:  # not a quarter-turn or mirror: used as stored
        return IDENTITY
    return a, b, c, d  # type: ignore[return-value]


def transposes(t: tuple[int, int, int, int]) -> bool:
    """Whether the display swaps height and width (a 90 or 270 degree turn)."""
    return t[0] == 0


def mirrored(t: tuple[int, int, int, int]) -> bool:
    """Whether the display mirrors the picture (after turning it)."""
    return t[0] * t[3] - t[1] * t[2] < 0


def rotation_degrees(t: tuple[int, int, int, int]) -> int:
    """Counter-clockwise turn of the display in degrees (``VideoFrame.rotation``'s convention),
    before the mirror when :func:`mirrored` (FFmpeg's ``av_display_matrix_flip`` undone)."""
    a, b, c, d = t
    if mirrored(t):
        a, c = -a, -c
    return int(round(-math.degrees(math.atan2(b, a)))) % 360


def orient(frame: np.ndarray, t: tuple[int, int, int, int]) -> np.ndarray:
    """A stored ``[H, W, C]`` frame as displayed (a view; transposed for 90/270 degrees)."""
    a, b, c, d = t
    if a == 0:  # x' = c y, y' = b x
        frame = frame.swapaxes(0, 1)
        if c < 0:
            frame = frame[:, ::-1]
        if b < 0:
            frame = frame[::-1]
        return frame
    if a < 0:
        frame = frame[:, ::-1]
    if d < 0:
        frame = frame[::-1]
    return frame
