#!/usr/bin/env python
"""Check the shape of patchpack's code: short functions, small pipeline stages, no reach into other
modules' private names.

Three rules, read from the source with :mod:`ast`:

1. **Functions.** No function or method in ``patchpack/`` has more than :data:`MAX_FUNCTION`
   lines of code (its docstring not counted).
2. **Stages.** No class in ``patchpack/pipeline/`` has more than :data:`MAX_STAGE` lines of code.
3. **Private names.** No module imports another module's ``_private`` name, and none reads
   ``something._private`` off a name other than ``self``/``cls`` (a module, an object of another
   class). Python's own protocols (``_value_`` of an enum member) are allowed.

Exit status 0 and a one-line summary when clean; 1 and one line per problem otherwise.

    python tools/check_shape.py [--root DIR]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_FUNCTION = 60
MAX_STAGE = 120
#: attribute names of Python's own protocols that look private
PROTOCOL_NAMES = {"_value_", "_name_", "_missing_", "_asdict", "_replace", "_fields", "_make"}


def _code_lines(node: ast.AST) -> int:
    """Lines of ``node`` without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        lines -= body[0].end_lineno - body[0].lineno + 1
    return lines


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PROTOCOL_NAMES


def check_file(path: Path, rel: str) -> list[str]:
    problems = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_pipeline = rel.startswith("patchpack/pipeline/")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_FUNCTION:
            problems.append(f"{rel}:{node.lineno}: function {node.name} has {_code_lines(node)} lines of code "
                            f"(at most {MAX_FUNCTION})")
        elif isinstance(node, ast.ClassDef) and in_pipeline and _code_lines(node) > MAX_STAGE:
            problems.append(f"{rel}:{node.lineno}: class {node.name} has {_code_lines(node)} lines of code "
                            f"(at most {MAX_STAGE} in pipeline/)")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name):
                    problems.append(f"{rel}:{node.lineno}: imports {node.module}.{alias.name}, another module's "
                                    "private name")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id not in ("self", "cls"):
            problems.append(f"{rel}:{node.lineno}: reads {node.value.id}.{node.attr}, a private name of "
                            "something else")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="repository root")
    args = parser.parse_args(argv)
    root = Path(args.root)
    files = sorted((root / "patchpack").rglob("*.py"))
    problems = [p for f in files for p in check_file(f, f.relative_to(root).as_posix())]
    for p in problems:
        print(p)
    if problems:
        print(f"check_shape: {len(problems)} problem(s)")
        return 1
    print(f"check_shape: {len(files)} modules: functions <= {MAX_FUNCTION} lines, pipeline classes <= {MAX_STAGE}, "
          "no private-name reach")
    return 0


if __name__ == "__main__":
    sys.exit(main())
