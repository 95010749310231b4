"""A hostile corpus built on the fly: damaged tars, poison labels, tampered shards, folder hazards.

Each builder returns bytes or writes files and returns their paths; every case is small
except :func:`png16_solid` at its full 13000 x 13000 size (its PNG is a few hundred KB,
written row by row so the builder itself stays small in memory). ``ok_sample(i)`` makes
the good samples the damaged ones are mixed with, so tests can assert
``packed + reported == inputs``.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "ok_image", "ok_sample", "tar_bytes", "member_offsets", "flip_header_byte", "cut_inside_member",
    "special_members", "special_members_tar", "sparse_tar", "sparse_header", "oversize_tar", "non_utf8_tar",
    "POISON_LABELS", "poison_label_samples", "holey_member_tar", "tamper_arrow_rows", "flip_file_byte", "fifo_folder",
    "devzero_folder", "solid_png", "png16_solid", "large_jpeg", "ico_embedding", "solid_webp", "many_scans_jpeg",
    "lying_video",
]

Member = tuple[str, bytes]


def ok_image(seed: int = 0, size: tuple[int, int] = (24, 40)) -> bytes:
    """A small PNG (``size`` = (height, width)) with seed-dependent pixels."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def ok_sample(i: int, label: int | None = None) -> list[Member]:
    """Members of good sample ``i``: ``s{i:04d}.png`` and ``s{i:04d}.cls``."""
    key = f"s{i:04d}"
    return [(f"{key}.png", ok_image(i)), (f"{key}.cls", str(i % 7 if label is None else label).encode())]


def tar_bytes(members: Sequence[Member | tarfile.TarInfo], fmt: int = tarfile.GNU_FORMAT,
              encoding: str = "utf-8") -> bytes:
    """A tar of ``(name, bytes)`` regular members (or ready :class:`tarfile.TarInfo` with no data).

    Names may carry surrogate escapes (``b"\\xff".decode("utf-8", "surrogateescape")``) to
    write raw non-UTF-8 bytes.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding=encoding, errors="surrogateescape") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
                continue
            name, data = m
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mutate(data: bytes, mutations, zero_run: int = 1) -> bytes:
    """``data`` with each ``(op, pos, arg)`` applied in turn: ``"flip"`` xors byte ``pos`` with
    ``arg``, ``"cut"`` drops everything from ``pos``, ``"insert"`` puts ``arg`` bytes at ``pos``,
    ``"zero"`` zeroes ``arg * zero_run`` bytes from ``pos`` (``pos`` taken modulo the length)."""
    b = bytearray(data)
    for op, pos, arg in mutations:
        if not b:
            break
        pos %= len(b)
        if op == "flip":
            b[pos] ^= arg
        elif op == "cut":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = bytes((pos + k) % 251 for k in range(arg))
        else:
            n = arg * zero_run
            b[pos:pos + n] = bytes(len(b[pos:pos + n]))
    return bytes(b)


def member_offsets(data: bytes) -> list[tuple[str, int, int]]:
    """``(name, header offset, data offset)`` of each member of a valid tar."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as tf:
        return [(m.name, m.offset, m.offset_data) for m in tf.getmembers()]


def flip_header_byte(data: bytes, name: str, field_offset: int = 130) -> bytes:
    """``data`` with one byte of member ``name``'s header changed (default: inside the size field,
    so the header checksum no longer matches; Python's tarfile then stops as if the tar ended)."""
    off = next(o for n, o, _ in member_offsets(data) if n == name)
    b = bytearray(data)
    b[off + field_offset] ^= 0x04
    return bytes(b)


def cut_inside_member(data: bytes, name: str, keep: int = 10) -> bytes:
    """``data`` cut ``keep`` bytes into member ``name``'s data (the tar ends inside that member)."""
    start = next(d for n, _, d in member_offsets(data) if n == name)
    return data[: start + keep]


def special_members() -> list[tarfile.TarInfo]:
    """One member of each kind a reader must not read: symlink, hard link, FIFO, character and
    block devices, directory; keys ``link-sym``, ``link-hard``, ``fifo``, ``chr``, ``blk``, ``adir``."""
    out = []
    for name, kind, target in [
        ("link-sym.jpg", tarfile.SYMTYPE, "/dev/zero"),
        ("link-hard.jpg", tarfile.LNKTYPE, "s0000.png"),
        ("fifo.jpg", tarfile.FIFOTYPE, ""),
        ("chr.jpg", tarfile.CHRTYPE, ""),
        ("blk.jpg", tarfile.BLKTYPE, ""),
        ("adir", tarfile.DIRTYPE, ""),
    ]:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mtime = kind, target, 0
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 5
        out.append(info)
    return out


def special_members_tar(n_good: int = 3) -> bytes:
    """Good samples around every special member (good ones first and last)."""
    members: list = []
    for i in range(n_good - 1):
        members += ok_sample(i)
    members += special_members()
    members += ok_sample(n_good - 1)
    return tar_bytes(members)


def sparse_header(name: str, realsize: int, stored: int) -> bytes:
    """An old-GNU sparse (type ``S``) header claiming ``realsize`` bytes with ``stored`` stored."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\x00"
    h[108:116] = b"0000000\x00"
    h[116:124] = b"0000000\x00"
    h[124:136] = b"%011o\x00" % stored
    h[136:148] = b"00000000000\x00"
    h[156:157] = b"S"
    h[257:265] = b"ustar  \x00"
    # one sparse entry: the stored bytes sit at the end of the claimed file
    h[386:398] = b"%011o\x00" % (realsize - stored)
    h[398:410] = b"%011o\x00" % stored
    h[482] = 0  # not extended
    h[483:495] = b"%011o\x00" % realsize
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def sparse_tar(realsize: int = 2 * 2**30, stored: int = 6 * 1024, n_good: int = 2) -> bytes:
    """Good samples, then a GNU-sparse ``sparse.jpg`` claiming ``realsize`` bytes in ``stored``,
    then one more good sample. (Python's tarfile would materialise all of ``realsize``.)"""
    head = tar_bytes([m for i in range(n_good) for m in ok_sample(i)])[:-1024]
    head = head[: len(head) - len(head) % 512]
    while head.endswith(bytes(512)):
        head = head[:-512]
    body = sparse_header("sparse.jpg", realsize, stored) + b"\x07" * stored + bytes(-stored % 512)
    tail = tar_bytes(ok_sample(n_good))
    return head + body + tail


def oversize_tar(member_bytes: int, n_good: int = 2) -> bytes:
    """Good samples around ``big.jpg`` of ``member_bytes`` bytes (test with a smaller cap)."""
    members = [m for i in range(n_good - 1) for m in ok_sample(i)]
    members += [("big.jpg", b"\xff\xd8" + bytes(member_bytes - 2)), ("big.cls", b"1")]
    members += ok_sample(n_good - 1)
    return tar_bytes(members)


def non_utf8_tar(fmt: int = tarfile.GNU_FORMAT) -> tuple[bytes, str]:
    """A tar whose middle sample's name holds raw Latin-1 bytes; returns ``(tar, expected key)``
    (the key as the reader spells it: undecodable bytes as ``\\xNN``)."""
    raw = "caf\udce9"  # b"caf\xe9" through surrogateescape
    members = ok_sample(0) + [(f"{raw}.png", ok_image(9)), (f"{raw}.cls", b"3")] + ok_sample(1)
    return tar_bytes(members, fmt=fmt), "caf\\xe9"


#: Labels that must become ``bad-label`` records, never a crash: name -> (member ext, bytes).
POISON_LABELS = {
    "cls-23-digits": ("cls", b"12345678901234567890123"),
    "cls-negative-huge": ("cls", b"-99999999999999999999"),
    "json-infinity": ("json", b'{"label": Infinity}'),
    "json-nan": ("json", b'{"label": NaN}'),
    "json-float": ("json", b'{"label": 1e30}'),
    "json-deep": ("json", b'{"label": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
    "json-deep-unlabelled": ("json", b"[" * 200_000 + b"]" * 200_000),
}


def poison_label_samples(member: str = "cls") -> tuple[list[Member], set[str]]:
    """Good samples (label in a ``member`` member: ``cls`` text or ``json`` ``{"label": i}``)
    interleaved with one sample per :data:`POISON_LABELS` entry of that member (key = its
    name); returns ``(members, poison keys)``."""
    def good(i: int) -> list[Member]:
        key = f"s{i:04d}"
        raw = str(i % 7).encode() if member == "cls" else b'{"label": %d}' % (i % 7)
        return [(f"{key}.png", ok_image(i)), (f"{key}.{member}", raw)]

    members: list[Member] = []
    poison = {name for name, (ext, _) in POISON_LABELS.items() if ext == member}
    for i, name in enumerate(sorted(poison)):
        members += good(i)
        members += [(f"{name}.png", ok_image(100 + i)), (f"{name}.{member}", POISON_LABELS[name][1])]
    members += good(len(poison))
    return members, poison


def holey_member_tar(path: str | os.PathLike, size: int) -> str:
    """A tar on disk: sample ``a``, a regular member ``big.jpg`` of ``size`` bytes, sample ``b``.
    The member's bytes are a hole in the file (cheap to make at any size)."""
    head = tar_bytes([("a.png", ok_image(1)), ("a.cls", b"1")])
    while head.endswith(bytes(512)):
        head = head[:-512]
    info = tarfile.TarInfo("big.jpg")
    info.size, info.mtime = size, 0
    tail = tar_bytes([("b.png", ok_image(2)), ("b.cls", b"2")])
    with open(path, "wb") as fh:
        fh.write(head + info.tobuf(tarfile.GNU_FORMAT) + b"\xff\xd8")
        fh.seek(size - 2 + (-size % 512), 1)
        fh.write(tail)
    return str(path)


def tamper_arrow_rows(src: str | os.PathLike, dst: str | os.PathLike, row: int, **columns) -> str:
    """Copy a patchpack ``examples`` shard, overwriting ``columns`` (e.g. ``num_tokens=999`` or
    ``grid=[1, 100000, 100000]``) in row ``row``; schema and metadata are kept."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(src)) as f:
        table = ipc.open_file(f).read_all()
    for name, value in columns.items():
        i = table.schema.get_field_index(name)
        values = table.column(name).to_pylist()
        values[row] = value
        table = table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))
    with pa.OSFile(str(dst), "wb") as f, ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    return str(dst)


def flip_file_byte(path: str | os.PathLike, offset: int) -> None:
    """XOR one byte of a file in place (``offset`` may be negative: from the end)."""
    with open(path, "r+b") as fh:
        fh.seek(offset, 0 if offset >= 0 else 2)
        pos = fh.tell()
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ 0x01]))


def _folder_with(root: str | os.PathLike, n_good: int, name: str, make) -> list[str]:
    """``root/a/`` with ``n_good`` good PNGs and ``make(path)`` at ``a/name``; returns all keys (that one last)."""
    d = Path(root) / "a"
    d.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n_good):
        (d / f"{i}.png").write_bytes(ok_image(i))
        keys.append(f"a/{i}.png")
    make(d / name)
    return keys + ["a/" + name]  # a folder key is the file's path, extension kept


def fifo_folder(root: str | os.PathLike, n_good: int = 2) -> list[str]:
    """``root/<cls>/`` with good PNGs and a FIFO named ``x.jpg``; returns all keys (FIFO last)."""
    return _folder_with(root, n_good, "x.jpg", os.mkfifo)


def devzero_folder(root: str | os.PathLike, n_good: int = 2) -> list[str]:
    """``root/<cls>/`` with good PNGs and ``z.jpg``, a symlink to ``/dev/zero``; returns all keys."""
    return _folder_with(root, n_good, "z.jpg", lambda path: os.symlink("/dev/zero", path))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def solid_png(width: int, height: int, bit_depth: int = 8, value: int = 0,
              path: str | os.PathLike | None = None) -> bytes | str:
    """A solid greyscale PNG of ``width x height`` pixels (``bit_depth`` 1, 8 or 16; sample ``value``),
    written row by row (the builder holds one row). Returns the bytes, or the path when ``path`` is given."""
    if bit_depth == 16:
        row = b"\x00" + struct.pack(">H", value) * width  # filter byte 0, big-endian samples
    elif bit_depth == 8:
        row = b"\x00" + bytes([value]) * width
    else:
        row = b"\x00" + (b"\xff" if value else b"\x00") * -(-width * bit_depth // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    if path is None:
        return data
    Path(path).write_bytes(data)
    return str(path)


def png16_solid(side: int = 13000, value: int = 0x8123, path: str | os.PathLike | None = None) -> bytes | str:
    """A solid 16-bit greyscale PNG of ``side x side`` pixels (value ``value``): :func:`solid_png`."""
    return solid_png(side, side, 16, value, path)


def ico_embedding(png: bytes, declared: int = 16) -> bytes:
    """An ICO whose directory declares one ``declared x declared`` icon and embeds ``png`` (any
    size) as its image: Pillow decodes the embedded image while *opening* the file."""
    entry = struct.pack("<BBBBHHII", declared % 256, declared % 256, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def solid_webp(width: int, height: int, rgb: tuple[int, int, int] = (30, 60, 90)) -> bytes:
    """A lossless WebP (VP8L) of one colour in ~32 bytes at any size up to 16384 x 16384: every
    prefix code holds a single symbol, which costs zero bits a pixel."""
    acc, n = 0, 0

    def put(value: int, bits: int) -> None:
        nonlocal acc, n
        acc |= (value & ((1 << bits) - 1)) << n
        n += bits

    put(0x2F, 8)
    put(width - 1, 14)
    put(height - 1, 14)
    put(0, 4)  # no alpha hint, version 0
    put(0, 3)  # no transform, no colour cache, no meta prefix codes
    for symbol in (rgb[1], rgb[0], rgb[2], 255):  # green, red, blue, alpha: one 8-bit symbol each
        put(0b101, 3)  # simple code, one symbol, 8-bit symbol (read low bit first)
        put(symbol, 8)
    put(0b0001, 4)  # distance code: simple, one symbol, 1-bit symbol 0
    body = acc.to_bytes((n + 7) // 8, "little")
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each segment of a JPEG (a scan runs to the next marker)."""
    pos, out = 2, []
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        end = pos + 2 + struct.unpack(">H", data[pos + 2: pos + 4])[0]
        if marker == 0xDA:
            while True:
                end = data.find(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, pos, end))
        pos = end
    return out


def many_scans_jpeg(side: int = 2048, extra_scans: int = 1000) -> bytes:
    """A progressive JPEG of ``side x side`` pixels whose smallest scan (with the Huffman table
    before it) is repeated ``extra_scans`` times: each copy is a few dozen bytes, yet each is a
    pass of the decoder over every block of the image (libjpeg warns and goes on)."""
    y, x = np.mgrid[: side // 16, : side // 16]
    small = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR).save(buf, "JPEG", progressive=True,
                                                                                 quality=60)
    data = buf.getvalue()
    segments = _jpeg_segments(data)
    scans = [(segments[i - 1][1] if segments[i - 1][0] == 0xC4 else a, b)
             for i, (m, a, b) in enumerate(segments) if m == 0xDA]
    start, end = min(scans, key=lambda s: s[1] - s[0])
    eoi = segments[-1][1]
    return data[:eoi] + data[start:end] * extra_scans + data[eoi:]


def lying_video(declared: int = 16, real: int = 2000, frames: int = 4) -> bytes:
    """A Matroska MJPEG clip whose stream (and first frame) says ``declared x declared`` pixels
    while every later frame is ``real x real``: the header probe sees only the declared size."""
    import av
    from fractions import Fraction

    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width = stream.height = declared
        stream.pix_fmt = "yuvj420p"
        stream.time_base = Fraction(1, 10)
        for i in range(frames):
            side = declared if i == 0 else real
            buf = io.BytesIO()
            Image.new("L", (side, side), 40 + 30 * i).save(buf, "JPEG", quality=50)
            packet = av.Packet(buf.getvalue())
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 10)
            packet.stream = stream
            packet.is_keyframe = True
            container.mux(packet)
    return out.getvalue()


def large_jpeg(height: int = 2000, width: int = 3000, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-sized JPEG with smooth content plus noise (a few hundred KB to ~1 MB)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    img = (y * 0.5 + x * 0.5 + rng.normal(0, 12, (height, width, 3)).astype(np.float32)).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
