#!/usr/bin/env python
"""Describe and verify a folder written by ``patchpack preprocess`` (or single ``.arrow`` shards).

Prints the manifest (format, producing version, kind, completeness, totals, error kinds),
the schema metadata of the shards (geometry, rows) and one line per shard (samples,
examples, rows, tokens, errors, bytes), then checks every shard against its manifest
entry: present, same size and, unless ``--no-verify``, same sha256. Exit status 1 when
anything does not match (or the run is incomplete), 0 otherwise.

    python tools/shard_info.py OUT_DIR [--json] [--no-verify]
    python tools/shard_info.py shard.arrow ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchpack.storage.format import ShardFormatError  # noqa: E402
from patchpack.storage.manifest import entry_ok, read_manifest, sha256_file, verify_folder  # noqa: E402
from patchpack.storage.reader import read_shard_metadata  # noqa: E402


def folder_info(out: Path, verify: bool) -> dict:
    manifest = read_manifest(out)
    if manifest is None:
        return {"folder": str(out), "problems": [f"{out}: no manifest.json (not a preprocess output folder)"]}
    shards = []
    for e in manifest.get("shards", []):
        row = {k: e.get(k) for k in ("input", "output", "samples", "examples", "rows", "tokens", "errors", "bytes")}
        path = out / e["output"]
        if path.is_file():
            try:
                md = read_shard_metadata(path)
                row.update(format=md.get("format"), patch_size=md.get("patch_size"), tubelet=md.get("tubelet"))
            except (ShardFormatError, OSError) as exc:
                row["unreadable"] = str(exc)
        row["ok"] = entry_ok(out, e, verify)
        shards.append(row)
    if verify:
        problems = verify_folder(out)
    else:
        problems = [f"{s['output']}: missing or size differs" for s in shards if not s["ok"]]
        if not manifest.get("complete"):
            problems.append("manifest is not complete (the run did not finish)")
    return {
        "folder": str(out),
        "format": manifest.get("format"),
        "version": manifest.get("version"),
        "patchpack_version": manifest.get("patchpack_version"),
        "kind": manifest.get("kind"),
        "complete": manifest.get("complete"),
        "totals": manifest.get("totals"),
        "error_kinds": manifest.get("error_kinds"),
        "config": manifest.get("config"),
        "shards": shards,
        "verified": "sha256" if verify else "size",
        "problems": problems,
    }


def shard_file_info(path: Path) -> dict:
    try:
        md = read_shard_metadata(path)
    except (ShardFormatError, OSError) as exc:
        return {"shard": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path),
                "problems": [f"{path}: {exc}"]}
    return {"shard": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path), **md, "problems": []}


def print_folder(info: dict) -> None:
    print(f"{info['folder']}: {info.get('format')} v{info.get('version')} (patchpack {info.get('patchpack_version')}), "
          f"{info.get('kind')} shards, {'complete' if info.get('complete') else 'INCOMPLETE'}")
    t = info.get("totals") or {}
    if t:
        print(f"  totals: {t.get('samples', 0):,} samples, {t.get('examples', 0):,} examples, {t.get('rows', 0):,} rows, "
              f"{t.get('tokens', 0):,} tokens, {t.get('errors', 0):,} errors, {t.get('bytes', 0) / 2**20:.1f} MiB")
    if info.get("error_kinds"):
        print("  errors: " + ", ".join(f"{k}={v}" for k, v in info["error_kinds"].items()))
    for s in info.get("shards", []):
        print(f"  {s['output']:<40} {s['samples']:>7} samples {s['examples']:>7} examples {s['rows']:>7} rows "
              f"{s['tokens']:>10} tokens {s['errors']:>5} errors  p={s.get('patch_size')} pt={s.get('tubelet')}  "
              f"{'ok' if s['ok'] else 'MISMATCH'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="a preprocess output folder, or .arrow shard files")
    ap.add_argument("--json", action="store_true", help="print one JSON object per path")
    ap.add_argument("--no-verify", action="store_true", help="check sizes only, not sha256")
    args = ap.parse_args(argv)
    bad = 0
    for p in map(Path, args.paths):
        if p.is_dir():
            info = folder_info(p, not args.no_verify)
        elif p.is_file():
            info = shard_file_info(p)
        else:
            info = {"path": str(p), "problems": [f"{p}: no such file or folder"]}
        if args.json:
            print(json.dumps(info, sort_keys=True))
        elif "folder" in info and "format" in info:
            print_folder(info)
        elif "shard" in info:
            print(f"{info['shard']}: {info.get('format')} shard v{info.get('version')}, {info.get('rows')} rows, "
                  f"p={info.get('patch_size')} pt={info.get('tubelet')}, {info['bytes']:,} bytes, sha256 {info['sha256']}")
        for problem in info["problems"]:
            print(f"PROBLEM {problem}", file=sys.stderr)
        bad += len(info["problems"])
    if bad:
        print(f"shard_info: {bad} problem(s)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
