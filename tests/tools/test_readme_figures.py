"""tools/readme_figures.py: picks the README's lines out of benchmark output; refuses unknown benchmarks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "readme_figures.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_figures", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_are_picked_from_benchmark_output():
    mod = _module()
    out = "\n".join([
        "  256  none        bfd     0.158     0.559  -0.401    176,000      1949",
        "  256  none   first-fit    1.000     0.559  +0.441     50,000        10",
        "  256  none    next-fit   21.000     0.559 +20.441    300,000        10",
        "noise",
    ])
    picked = mod.pick(out, mod.ROWS["packing"][1])
    assert len(picked) == 2 and picked[0].split()[2] == "bfd" and "next-fit" in picked[1]
    share = mod.pick("  packing + collation share of patchpack time    1.2%\n", mod.ROWS["pipeline"][1])
    assert share == ["packing + collation share of patchpack time    1.2%"]
    assert set(mod.ROWS) >= {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"interop"}


def test_unknown_benchmark_is_refused():
    r = subprocess.run([sys.executable, str(TOOL), "--only", "nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no benchmark named nope" in r.stderr
