#!/usr/bin/env python
"""Check patchpack's import graph: no cycles, no back-edges against the layer table, torch only at the edge.

Every ``import`` / ``from ... import`` in ``patchpack/`` is read with :mod:`ast`, including
imports inside functions (lazy imports are still dependencies). Three rules:

1. **Layers.** A module may import only modules of its own layer or lower ones (the table
   below, the same as the README's module table). A higher one is a back-edge.
2. **Cycles.** The module graph of imports that run (``if TYPE_CHECKING:`` blocks excluded)
   has no cycle.
3. **torch at the edge.** Below layer 8 (the torch edge ``patchpack.loader``) no module
   imports torch or a library whose import pulls torch in (``webdataset``, ``torchvision``,
   ``timm``, ``transformers``).

An import line ending in ``# check_layers: allow (reason)`` is exempt from rules 1 and 3 and
counted in the summary. Exit status 0 and a one-line summary when clean; 1 and one line per
problem otherwise.

    python tools/check_layers.py [--root DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

#: module prefix -> layer (the longest matching prefix wins). Keep in step with the README.
LAYERS: dict[str, int] = {
    "patchpack": 0,  # the package itself re-exports lazily and imports nothing
    "patchpack.errors": 0,
    "patchpack.registry": 0,  # the one registry shape (sources, packers, models, attention backends)
    "patchpack.example": 0,  # Header and Plan: what a header says and what the fit decided
    "patchpack.rng": 0,
    "patchpack.tokenize": 0,  # Tokens and grid positions: plain numpy, used by storage/ below the fit
    "patchpack.text": 0,  # texts and label sets as arrays (token ids, masks, multi-hot targets)
    "patchpack.sources": 1,
    "patchpack.storage": 1,
    "patchpack.decode": 2,
    "patchpack.fit": 3,
    "patchpack.drop": 4,
    "patchpack.augment": 2,  # crop boxes and pixel ops applied while decoding
    "patchpack.pack": 5,
    "patchpack.stats": 5,
    "patchpack.config": 6,
    "patchpack.configfile": 6,  # loader config files (TOML, YAML) read into a LoaderConfig
    "patchpack.pipeline": 7,
    "patchpack.offline": 7,
    "patchpack.loader": 8,
    "patchpack.interop": 9,
    "patchpack.model": 9,
    "patchpack.train": 10,
    "patchpack.viz": 10,
    "patchpack.cli": 11,
    "patchpack.synth": 11,
}

#: first layer allowed to import torch
TORCH_EDGE = 8
#: third-party packages whose import imports torch
TORCH_IMPORTING = ("torch", "torchvision", "timm", "webdataset", "transformers")
ALLOW = "# check_layers: allow"


def layer_of(module: str) -> int | None:
    """Layer of ``module``: its longest prefix in :data:`LAYERS` (``"patchpack"`` matches only itself)."""
    if module == "patchpack":
        return LAYERS[module]
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        layer = LAYERS.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class Import:
    __slots__ = ("target", "line", "runtime", "allowed")

    def __init__(self, target: str, line: int, runtime: bool, allowed: bool) -> None:
        self.target, self.line, self.runtime, self.allowed = target, line, runtime, allowed


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def parse_imports(path: Path, module: str, modules: set[str]) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    src_lines = source.splitlines()
    tree = ast.parse(source, str(path))
    typing_only = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = []
            for a in node.names:
                sub = f"{prefix}.{a.name}"
                targets.append(sub if sub in modules else prefix)
        else:
            continue
        end = getattr(node, "end_lineno", node.lineno)
        text = " ".join(src_lines[node.lineno - 1 : end])
        for t in dict.fromkeys(targets):
            out.append(Import(t, node.lineno, node.lineno not in typing_only, ALLOW in text))
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def check(root: Path) -> tuple[list[str], str]:
    """``(problems, summary)`` for the ``patchpack`` package under ``root``."""
    pkg = root / "patchpack"
    files = sorted(pkg.rglob("*.py"))
    names = {module_name(f, root): f for f in files}
    modules = set(names)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    n_imports = allowed = 0
    for module, path in sorted(names.items()):
        rel = path.relative_to(root)
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{rel}: module {module} is not in the layer table of tools/check_layers.py")
            continue
        for imp in parse_imports(path, module, modules):
            n_imports += 1
            top = imp.target.split(".")[0]
            if imp.target.startswith("patchpack"):
                target = imp.target
                if imp.runtime and target in modules and target != module:
                    graph[module].add(target)
                tl = layer_of(target)
                if tl is not None and tl > layer:
                    if imp.allowed:
                        allowed += 1
                    else:
                        problems.append(f"{rel}:{imp.line}: back-edge: {module} (layer {layer}) imports "
                                        f"{target} (layer {tl}); a stage may import only its own or lower layers")
            elif top in TORCH_IMPORTING and layer < TORCH_EDGE:
                if imp.allowed:
                    allowed += 1
                else:
                    why = "" if top == "torch" else f" (importing {top} imports torch)"
                    problems.append(f"{rel}:{imp.line}: torch below the edge: {module} (layer {layer}) imports "
                                    f"{imp.target}{why}; torch belongs to layers >= {TORCH_EDGE} (patchpack.loader and up)")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    summary = (f"check_layers: {len(modules)} modules, {n_imports} imports, {len(LAYERS)} layer entries: "
               f"no cycle, no back-edge, torch only at layers >= {TORCH_EDGE}"
               + (f" ({allowed} allowed exception{'s' if allowed != 1 else ''})" if allowed else ""))
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                    help="repository root holding patchpack/ (default: this checkout)")
    ap.add_argument("--verbose", action="store_true", help="print the layer of every module")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not (root / "patchpack").is_dir():
        print(f"check_layers: no patchpack/ under {root}", file=sys.stderr)
        return 2
    problems, summary = check(root)
    if args.verbose:
        for f in sorted((root / "patchpack").rglob("*.py")):
            m = module_name(f, root)
            print(f"{layer_of(m)!s:>4}  {m}")
    if problems:
        for p in problems:
            print(p)
        print(f"check_layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
