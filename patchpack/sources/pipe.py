"""``pipe:`` urls: a shell command's standard output as a shard, read to the end before its status.

webdataset's ``gopen`` checks the command's status after every read and raises as soon as the
command has exited with a failure, dropping bytes still waiting in the pipe; how much of a
shard arrives then depends on timing. :class:`PipeReader` reads the pipe as a plain stream and
only looks at the status when the stream is finished (:meth:`PipeReader.finish`: the rest
drained, up to a bound, and the exit status checked), so a failing command gives every byte it
wrote, then one error. A reader closed early kills the command and reports nothing; so does
one whose command goes on writing past the end of the data.
"""

from __future__ import annotations

import io
import subprocess

__all__ = ["PipeReader", "PipeError", "IGNORED_STATUS"]

#: exit statuses that are not failures: 0, and 141 (SIGPIPE in a shell), as webdataset has it
IGNORED_STATUS = (0, 141)
#: seconds a command cut off after the data's end has to stop before it is killed
_CUT_OFF_WAIT_S = 5.0


class PipeError(OSError):
    """A ``pipe:`` command that exited with a failure status."""


class PipeReader(io.RawIOBase):
    """The standard output of ``command`` (run by the shell) as a read-only binary stream."""

    def __init__(self, command: str, chunk: int = 1 << 20, *, proc: subprocess.Popen | None = None,
                 ignored: tuple[int, ...] = IGNORED_STATUS, what: str = "pipe command", owner: object = None):
        """``proc``: a process already started (its ``stdout`` a pipe) to read instead of running
        ``command``, and ``owner`` the object that started it (kept alive: webdataset's ``Pipe``
        closes the pipe when collected); ``ignored``: exit statuses that are not failures;
        ``what`` names it in errors."""
        self.command, self.chunk, self.ignored, self.what, self.owner = command, chunk, ignored, what, owner
        self.proc = proc if proc is not None else \
            subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self.proc.stdout.readinto(b)

    def finish(self, drain: int = 1 << 20) -> None:
        """The stream's end: drain up to ``drain`` more bytes, wait for the command and raise
        :class:`PipeError` on a failure status. A command still writing after ``drain`` bytes
        (data past the end of the archive, possibly without end) is cut off: its pipe is
        closed, it is stopped, and no status is reported."""
        stdout, left = self.proc.stdout, drain
        while left > 0:
            data = stdout.read(min(self.chunk, left))
            if not data:
                break
            left -= len(data)
        else:
            stdout.close()  # a writer gets EPIPE / SIGPIPE
            try:
                self.proc.wait(timeout=_CUT_OFF_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            return
        status = self.proc.wait()
        if status not in self.ignored:
            raise PipeError(f"{self.what} {self.command!r}: exit {status}")

    def close(self) -> None:
        """Kill the command if it is still running (the reader stopped early); no status."""
        if not self.closed:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
        super().close()
