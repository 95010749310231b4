"""Local files opened safely: regular files only, and never blocked by a FIFO.

:func:`open_regular` opens without blocking (``O_NONBLOCK``), checks the open file itself
(``fstat``, links followed) and refuses a FIFO, a device, a socket or a folder with
:class:`SpecialFileError` before a byte is read: opening a FIFO would wait for a writer, and a
device such as ``/dev/zero`` never ends. Both the tar reader (a shard path) and the folder
reader (each member file) open local files through it.
"""

from __future__ import annotations

import os
import stat
from typing import IO

__all__ = ["open_regular", "not_regular", "SpecialFileError"]

_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))


class SpecialFileError(OSError):
    """A path that is not a regular file (also via a symlink); the message says what it is."""


def not_regular(path: str, mode: int) -> str | None:
    """Why ``path`` (whose ``stat`` mode, links followed, is ``mode``) is not read, or ``None``
    for a regular file."""
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _KINDS if test(mode)), "non-regular file")
    via = f" (symlink to {os.readlink(path)!r})" if os.path.islink(path) else ""
    return f"{path} is a {what}{via}; only regular files are read"


def open_regular(path: str) -> IO[bytes]:
    """``path`` opened for binary reading if it is a regular file.

    Raises:
        SpecialFileError: a FIFO, device, socket or directory (also behind a symlink).
        OSError: the path cannot be opened (``FileNotFoundError`` for a missing file or a
            dangling symlink).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        why = not_regular(path, os.fstat(fd).st_mode)
        if why is not None:
            raise SpecialFileError(why)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
