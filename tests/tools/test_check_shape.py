"""tools/check_shape.py: it finds long functions, large pipeline stages and private-name reach, and
passes code that has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "check_shape.py"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root)], capture_output=True, text=True)


def test_clean_code_passes(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    root = _tree(tmp_path, {"patchpack/a.py": f'def f():\n    """A docstring\n    of lines."""\n{body}\n    return 1\n',
                            "patchpack/b.py": "from enum import Enum\nclass E(Enum):\n    A = 1\nv = E.A._value_\n"})
    r = _run(root)
    assert r.returncode == 0, r.stdout


def test_each_rule_is_reported(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(70))
    stage = "class Stage:\n" + "\n".join(f"    a{i} = {i}" for i in range(130)) + "\n"
    root = _tree(tmp_path, {
        "patchpack/a.py": f"def f():\n{long_body}\n",
        "patchpack/pipeline/s.py": stage,
        "patchpack/c.py": "from patchpack.a import _hidden\nimport os\nos._exit\n",
    })
    r = _run(root)
    assert r.returncode == 1
    out = r.stdout
    assert "function f has 71 lines" in out and "class Stage has 131 lines" in out
    assert "imports patchpack.a._hidden" in out and "reads os._exit" in out
