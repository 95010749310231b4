"""Running a command in-process for the command-line tests: its exit code, stdout and stderr."""

from __future__ import annotations

from patchpack.cli import main


def run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``patchpack ARGV``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, command: str) -> str:
    """The single line a mistake prints (asserted to be one ``patchpack COMMAND: error: ...`` line)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"patchpack {command}: error: "), err
    return lines[0]
