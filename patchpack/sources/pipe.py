"""``pipe:`` urls: a shell command's standard output as a shard, read to the end before its status.

webdataset's ``gopen`` checks the command's status after every read and raises as soon as the
command has exited with a failure, dropping bytes still waiting in the pipe; how much of a
shard arrives then depends on timing. :class:`PipeReader` reads the pipe as a plain stream and
only looks at the status when the stream is finished (:meth:`PipeReader.finish`: the rest
drained, the exit status checked), so a failing command gives every byte it wrote, then one
error. A reader closed early kills the command and reports nothing.
"""

from __future__ import annotations

import io
import subprocess

__all__ = ["PipeReader", "PipeError", "IGNORED_STATUS"]

#: exit statuses that are not failures: 0, and 141 (SIGPIPE in a shell), as webdataset has it
IGNORED_STATUS = (0, 141)


class PipeError(OSError):
    """A ``pipe:`` command that exited with a failure status."""


class PipeReader(io.RawIOBase):
    """The standard output of ``command`` (run by the shell) as a read-only binary stream."""

    def __init__(self, command: str, chunk: int = 1 << 20):
        self.command, self.chunk = command, chunk
        self.proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self.proc.stdout.readinto(b)

    def finish(self) -> None:
        """Drain what the command still writes, wait for it, raise :class:`PipeError` on a
        failure status."""
        while self.proc.stdout.read(self.chunk):
            pass
        status = self.proc.wait()
        if status not in IGNORED_STATUS:
            raise PipeError(f"pipe command {self.command!r}: exit {status}")

    def close(self) -> None:
        """Kill the command if it is still running (the reader stopped early); no status."""
        if not self.closed:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
        super().close()
