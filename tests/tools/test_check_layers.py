"""tools/check_layers.py: clean on this checkout, and names cycles, back-edges and torch below the edge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "check_layers.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"patchpack/__init__.py": "", **files}.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_this_checkout_is_clean():
    r = _run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("\n") == 1 and "no cycle, no back-edge" in r.stdout


def test_back_edge_cycle_and_torch_are_reported(tmp_path):
    root = _package(tmp_path, {
        "patchpack/sources/__init__.py": "def f():\n    from ..loader import make  # function-local still counts\n",
        "patchpack/pack/__init__.py": "import torch\n",
        "patchpack/fit/__init__.py": "from . import a\n",
        "patchpack/fit/a.py": "from . import b\n",
        "patchpack/fit/b.py": "from . import a\n",
        "patchpack/loader/__init__.py": "import torch\n",
        "patchpack/drop.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .tokenize import x\n",
        "patchpack/tokenize.py": "from .drop import y\n",
    })
    r = _run("--root", str(root))
    assert r.returncode == 1
    out = r.stdout
    assert "sources/__init__.py:2: back-edge: patchpack.sources (layer 1) imports patchpack.loader (layer 8)" in out
    assert "pack/__init__.py:1: torch below the edge" in out
    assert "import cycle: patchpack.fit.a -> patchpack.fit.b -> patchpack.fit.a" in out
    assert "loader/__init__.py" not in out  # torch is fine at the edge
    assert "tokenize" not in out.split("import cycle")[1]  # a TYPE_CHECKING import is no runtime cycle


def test_unknown_module_and_allow_comment(tmp_path):
    root = _package(tmp_path, {
        "patchpack/newstage.py": "",
        "patchpack/sources/__init__.py": "import webdataset  # check_layers: allow (test)\n",
    })
    r = _run("--root", str(root))
    assert r.returncode == 1 and "patchpack.newstage is not in the layer table" in r.stdout
    assert "webdataset" not in r.stdout
