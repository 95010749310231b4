#!/usr/bin/env python
"""Run the benchmarks and print the README's "Measured" table rows from their output.

Each benchmark in ``benchmarks/`` runs as a subprocess (``--quick`` with ``--quick``, the
full run otherwise; full runs take tens of minutes on 2 cores). Its output is kept in
``--logs`` and the lines the README quotes are picked out and printed as Markdown table
rows (``| what | figure |``), so the table can be refreshed from one command. A benchmark
that fails or prints nothing recognisable gives a row saying so; the exit status is then 1.

    python tools/readme_figures.py [--quick] [--only packing,pipeline] [--logs DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: benchmark -> (README row title, regexes of the lines to quote)
ROWS: dict[str, tuple[str, list[str]]] = {
    "packing": ("padding and speed, streaming packer", [r"^\s*\d+\s+(none|beta)\s+bfd\s.*$", r"^\s*\d+\s+none\s+next-fit\s.*$"]),
    "pipeline": ("shard bytes to packed batch, one core", [r"patchpack \(probe.*x$", r"packing \+ collation share.*$",
                                                          r"peak RSS.*$"]),
    "video": ("video", [r".*(decode-all|sampled|RSS).*\d+(\.\d+)?x.*$", r".*peak RSS.*$"]),
    "offline": ("offline shards", [r"preprocess\s+scaling.*$", r"^loader\s.*vs JPEG.*$"]),
    "model": ("model, CPU training", [r".*(tokens/s|FLOPs|step time).*\d+(\.\d+)?(x|%).*$"]),
    "memory": ("memory", [r".*ratio.*$"]),
    "interop": ("interop", [r".*\d+(\.\d+)?x.*$"]),
    "contrastive": ("contrastive two-tower, packed vs padded", [r".*packed.*\d+(\.\d+)?x.*$", r".*chunked.*$"]),
    "adversary": ("hostile input, case by case", [r"^\d+ cases, \d+ not accounted for.*$"]),
    "gpu": ("GPU (H100), packed vs padded", [r"^\s+\S+/L\d+/packed-\S+\s.*vs_padded=.*$", r"^\s+run\s.*wait_share=.*$"]),
}


def run(name: str, quick: bool, logs: Path) -> tuple[int, str, float]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py")] + (["--quick"] if quick else [])
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    out = r.stdout + r.stderr
    (logs / f"{name}.log").write_text(out)
    return r.returncode, out, time.perf_counter() - t


def pick(out: str, patterns: list[str]) -> list[str]:
    lines = []
    for line in out.splitlines():
        if any(re.search(p, line) for p in patterns) and line.strip() not in lines:
            lines.append(line.strip())
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="run every benchmark with --quick (CI sizes)")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (default: every one)")
    ap.add_argument("--logs", default=None, help="folder for the full outputs (default: a temporary one)")
    args = ap.parse_args(argv)
    names = [p.stem for p in sorted((ROOT / "benchmarks").glob("*.py"))]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            print(f"readme_figures: no benchmark named {', '.join(unknown)}; have {', '.join(names)}", file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    if args.logs:
        logs = Path(args.logs)
        logs.mkdir(parents=True, exist_ok=True)
    else:
        import tempfile

        logs = Path(tempfile.mkdtemp(prefix="patchpack-figures-"))
    failed = 0
    print("| what | figure |")
    print("|---|---|")
    for name in names:
        title, patterns = ROWS.get(name, (name, [r".*\d+(\.\d+)?x\b.*$"]))
        rc, out, seconds = run(name, args.quick, logs)
        quoted = pick(out, patterns)
        if rc != 0 or not quoted:
            failed += 1
            last = out.strip().splitlines()[-1] if out.strip() else "no output"
            print(f"| {title} | benchmarks/{name}.py failed (exit {rc}): {last} |")
            continue
        print(f"| {title} | " + "; ".join(re.sub(r"\s+", " ", q).replace("|", "/") for q in quoted) + " |")
        print(f"benchmarks/{name}.py: {seconds:.0f} s, log {logs / (name + '.log')}", file=sys.stderr)
    mode = "quick (CI sizes, not the README's figures)" if args.quick else "full"
    print(f"\n{len(names)} benchmark(s), {mode}; logs in {logs}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
