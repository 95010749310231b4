"""Helpers for the storage tests: small shards written directly, and tampering with stored cells.

``tamper(src, dst, row, **cells)`` copies a shard with whole cells of ``row`` replaced
(``lengths=[0, 12]``, ``num_tokens=0``, ``positions=b"..."``); ``refresh_manifest(folder)``
rewrites the folder's manifest entries (bytes, sha256) so a tampered shard passes the checksum
and only the row checks can catch it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from patchpack.storage.manifest import MANIFEST, sha256_file
from patchpack.tokenize import Tokens, patchify

P = 4


def example(key: str, gh: int, gw: int, seed: int, *, labels=(), fields=None, keep=None, ids=None) -> Tokens:
    """An image example of a ``gh x gw`` grid of ``P``-pixel patches (``keep``: the token subset)."""
    img = np.random.default_rng(seed).integers(0, 256, (gh * P, gw * P, 3), dtype=np.uint8)
    patches, pos = patchify(img, P)
    if keep is not None:
        patches, pos = patches[keep], pos[keep]
    meta = {"source_size": (gh * 10, gw * 10), "source_shard": "in-000.tar", "kind": "image"}
    return Tokens(key, patches, pos, (1, gh, gw), meta=meta, label_set=tuple(labels), fields=dict(fields or {}),
                  text_ids=dict(ids or {}))


def read_table(path) -> pa.Table:
    """The shard's table in memory (not mapped: it may be written back over its file)."""
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).read_all()


def write_table(table: pa.Table, dst) -> str:
    with pa.OSFile(str(dst), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return str(dst)


def with_cells(table: pa.Table, row: int, **cells) -> pa.Table:
    """``table`` with the cells of ``row`` replaced (schema and metadata kept)."""
    for name, value in cells.items():
        i = table.schema.get_field_index(name)
        values = table.column(name).to_pylist()
        values[row] = value
        table = table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))
    return table


def tamper(src, dst, row: int, **cells) -> str:
    """A copy of shard ``src`` at ``dst`` with the cells of ``row`` replaced."""
    return write_table(with_cells(read_table(src), row, **cells), dst)


def refresh_manifest(folder) -> None:
    """Make the manifest of ``folder`` agree with its shards' current bytes (size and sha256)."""
    path = Path(folder) / MANIFEST
    manifest = json.loads(path.read_text())
    for e in manifest["shards"]:
        if e.get("output"):
            shard = Path(folder) / e["output"]
            e["bytes"], e["sha256"] = shard.stat().st_size, sha256_file(shard)
    path.write_text(json.dumps(manifest))
