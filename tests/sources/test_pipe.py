import time

import pytest

from patchpack.sources.pipe import PipeError, PipeReader


def _wait_exit(reader: PipeReader) -> None:
    while reader.proc.poll() is None:
        time.sleep(0.01)


def test_bytes_written_before_a_failing_exit_all_arrive_then_the_status():
    """The command has exited (status 3) before anything is read: its bytes still all arrive."""
    r = PipeReader("printf abc; printf def; exit 3")
    _wait_exit(r)
    assert r.read(2) == b"ab" and r.readall() == b"cdef"
    with pytest.raises(PipeError, match="exit 3"):
        r.finish()
    r.close()


def test_finish_drains_unread_output_and_accepts_success_and_sigpipe():
    r = PipeReader("head -c 300000 /dev/zero")
    assert r.read(10) == bytes(10)
    r.finish()  # the rest drained, status 0
    r.close()
    r = PipeReader("exit 141")
    r.finish()
    r.close()


def test_close_before_the_end_kills_the_command_and_reports_nothing():
    r = PipeReader("yes; exit 5")
    assert r.read(4) == b"y\ny\n"
    r.close()
    assert r.proc.returncode is not None and r.closed


def test_a_command_writing_without_end_after_the_data_is_cut_off_not_drained_forever():
    r = PipeReader("printf abc; cat /dev/zero")
    assert r.read(3) == b"abc"
    r.finish(drain=1 << 16)  # returns: the command is stopped, no status
    assert r.proc.returncode is not None
    r.close()
