"""A run folder's ``report.md``: what ran, its final figures and its files; ``patchpack eval`` adds a section.

Sections start with ``## ``; :func:`replace_section` swaps one (or appends it), so writing the
report again after an evaluation keeps the evaluation's section and the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .run import CHECKPOINT, LOADER_FILE, LOG, REPORT, RUN_FILE, TOKENIZER_FILE, atomic_write

__all__ = ["write_report", "replace_section"]


def _sections(text: str) -> list[str]:
    """``text`` cut before each line starting with ``## `` (the first part is the title block)."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    if current:
        parts.append("".join(current))
    return parts


def replace_section(folder: str | Path, heading: str, body: str) -> Path:
    """Put ``body`` (starting with ``heading``, a ``## `` line) in ``folder/report.md`` in place of the
    section with that heading, or at its end."""
    path = Path(folder) / REPORT
    parts = _sections(path.read_text(encoding="utf-8")) if path.exists() else ["# patchpack run\n\n"]
    body = body if body.endswith("\n") else body + "\n"
    for i, part in enumerate(parts):
        if part.startswith(heading):
            parts[i] = body + "\n"
            break
    else:
        parts.append(("\n" if not parts[-1].endswith("\n\n") else "") + body + "\n")
    atomic_write(path, "".join(parts).rstrip("\n") + "\n")
    return path


def _figures(result: Any, task: Any) -> list[str]:
    lines = []
    for row in result.evals[-4:]:
        lines.append(f"- {row.name} at step {row.step}: {task.describe(row.metrics)} ({row.examples} examples)")
    return lines or ["- no evaluation (give held-out shards: --eval-urls)"]


def write_report(folder: str | Path, result: Any, task: Any, header: list[str]) -> Path:
    """Write the run's sections of ``report.md``: the header lines, the final figures, the files."""
    folder = Path(folder)
    if not (folder / REPORT).exists():
        atomic_write(folder / REPORT, f"# patchpack run: {folder}\n")
    files = [f"- `{RUN_FILE}`, `{LOADER_FILE}`: the run and its loader config "
             f"(`patchpack stats --config {LOADER_FILE}` reproduces the loader)",
             f"- `{CHECKPOINT}`: weights at step {result.step}", f"- `{LOG}`: one row per step and per evaluation"]
    if (folder / TOKENIZER_FILE).exists():
        files.append(f"- `{TOKENIZER_FILE}`: the caption tokenizer")
    training = [*(f"- {line}" for line in header), f"- waiting for data: {result.wait_share:.1%} of the step time"]
    for heading, lines in (("## Training", training), ("## Figures", _figures(result, task)), ("## Files", files)):
        replace_section(folder, heading, "\n".join([heading, "", *lines]))
    return folder / REPORT
