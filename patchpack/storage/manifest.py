"""The manifest of a preprocessed folder: listing, reading and sha256 verification (no pyarrow)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Sequence

__all__ = [
    "MANIFEST", "MANIFEST_FORMAT", "MANIFEST_VERSION", "ERRORS_DIR", "ERRORS_FILE", "SHARD_SUFFIX",
    "ManifestError", "read_manifest", "list_shards", "is_patchpack_folder", "sha256_file", "entry_ok",
    "verify_folder", "VERIFY_MODES", "check_shard",
]

#: How a shard is checked against its manifest entry when it is read: ``"sha256"`` (hash the
#: whole file once per process and file version: one extra sequential read of the shard),
#: ``"size"`` (one ``stat``), ``"none"``.
VERIFY_MODES = ("sha256", "size", "none")
_CHECKED: dict[tuple, str | None] = {}

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "patchpack-shards"
MANIFEST_VERSION = 1
ERRORS_DIR = "errors"
ERRORS_FILE = "errors.jsonl"
SHARD_SUFFIX = ".arrow"
#: largest manifest read (bytes): ~1 KB per shard, so room for far more shards than any run has
MAX_MANIFEST_BYTES = 256 * 2**20


class ManifestError(RuntimeError):
    """The output folder holds a manifest that does not match this run (other config or format)."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_manifest(out_dir: str | Path) -> dict | None:
    """The manifest of an output folder, or ``None`` when it has none.

    Raises:
        ManifestError: the file is no patchpack manifest: over :data:`MAX_MANIFEST_BYTES`, not
            JSON (or nested too deep to parse), not an object, or shard entries that are not
            objects or name files outside the folder.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: over {MAX_MANIFEST_BYTES} bytes, not a patchpack manifest")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({type(exc).__name__}: {exc})") from None
    entries = data.get("shards", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ManifestError(f"{path}: not a patchpack manifest (no object with a list of shards)")
    for e in entries:
        if not isinstance(e, dict) or not all(_inside(e.get(k)) for k in ("output", "errors_file")):
            raise ManifestError(f"{path}: shard entry {str(e)[:80]!r} is not an object naming files in the folder")
    return data


def _inside(name: object) -> bool:
    """Whether a manifest's file name stays inside its folder (``None``: no file)."""
    if name is None:
        return True
    if not isinstance(name, str) or not name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in name


def list_shards(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard files of a patchpack dataset: a folder (its ``manifest.json`` order when present,
    else ``*.arrow`` sorted by name), a single shard, or a list of either."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in list_shards(s)]
    path = Path(source)
    if path.is_file():
        return [path]
    manifest = read_manifest(path)
    if manifest is not None:
        return [path / e["output"] for e in manifest.get("shards", []) if e.get("output")]
    return sorted(p for p in path.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))


def is_patchpack_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``patchpack preprocess`` (has its manifest)."""
    try:
        manifest = read_manifest(path)
    except ManifestError:  # another tool's file, or a damaged one: not a patchpack folder
        return False
    return manifest is not None and manifest.get("format") == MANIFEST_FORMAT


def entry_ok(out: str | Path, entry: dict, verify: bool = True) -> bool:
    """Whether a manifest entry's shard and error file exist with the recorded size (and sha256)."""
    out = Path(out)
    shard = out / entry["output"]
    errs = out / entry.get("errors_file", "")
    if not shard.is_file() or not errs.is_file() or shard.stat().st_size != entry["bytes"]:
        return False
    return not verify or sha256_file(shard) == entry["sha256"]


def check_shard(path: str | Path, verify: str = "sha256") -> str | None:
    """What is wrong with a shard against its folder's manifest entry (``None``: fine, or no
    manifest / entry to check against). ``verify`` is one of :data:`VERIFY_MODES`; a sha256
    result is remembered per process for the file's (path, size, mtime)."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    path = Path(path)
    if verify == "none":
        return None
    try:
        st = path.stat()
        manifest = read_manifest(path.parent)
    except (OSError, ValueError, ManifestError) as exc:
        return f"cannot check {path.name}: {exc}"
    entry = next((e for e in (manifest or {}).get("shards", []) if e.get("output") == path.name), None)
    if entry is None:
        return None
    if st.st_size != entry.get("bytes"):
        return f"{path.name} is {st.st_size} bytes, the manifest says {entry.get('bytes')}"
    if verify == "size":
        return None
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, entry.get("sha256"))
    if memo not in _CHECKED:
        digest = sha256_file(path)
        _CHECKED[memo] = None if digest == entry.get("sha256") else \
            f"{path.name}: sha256 {digest[:16]}... differs from the manifest's {str(entry.get('sha256'))[:16]}..."
    return _CHECKED[memo]


def verify_folder(out: str | Path) -> list[str]:
    """Problems found in a preprocessed folder (empty when every shard matches its manifest entry)."""
    out = Path(out)
    try:
        manifest = read_manifest(out)
    except ManifestError as exc:
        return [str(exc)]
    if manifest is None:
        return [f"{out}: no {MANIFEST}"]
    if manifest.get("format") != MANIFEST_FORMAT:
        return [f"{out / MANIFEST}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}"]
    problems = []
    for e in manifest.get("shards", []):
        shard = out / e["output"]
        if not shard.is_file():
            problems.append(f"{e['output']}: missing")
        elif shard.stat().st_size != e["bytes"]:
            problems.append(f"{e['output']}: {shard.stat().st_size} bytes, manifest says {e['bytes']}")
        elif sha256_file(shard) != e["sha256"]:
            problems.append(f"{e['output']}: sha256 differs from the manifest")
        if not (out / e.get("errors_file", "")).is_file():
            problems.append(f"{e.get('errors_file')}: error file missing")
    if not manifest.get("complete"):
        problems.append("manifest is not complete (the run did not finish)")
    return problems
