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


def test_a_download_command_started_by_webdataset_is_read_to_its_end_then_its_status(monkeypatch):
    """Remote urls go through webdataset's gopen; its download pipe is read like a ``pipe:`` url."""
    import gc
    import importlib

    from patchpack.sources.wds import open_url

    wds_gopen = importlib.import_module("webdataset.gopen")  # the module (the package exports the function)

    def fake(url, mode="rb", bufsize=8192):
        return wds_gopen.Pipe(["sh", "-c", "printf abc; printf def; exit 22"], mode=mode, bufsize=bufsize,
                              ignore_status=[141, 23])

    monkeypatch.setitem(wds_gopen.gopen_schemes, "fake", fake)
    stream = open_url("fake://host/shard.tar")
    raw = stream.raw
    _wait_exit(raw)
    gc.collect()  # webdataset's Pipe object stays alive with the reader: the pipe is not closed under it
    assert stream.read() == b"abcdef"
    with pytest.raises(PipeError, match=r"download of 'fake://host/shard.tar': exit 22"):
        raw.finish()
    stream.close()


def test_pipe_urls_are_refused_under_webdataset_security_switch(monkeypatch):
    from patchpack.sources import read_shard

    monkeypatch.setenv("WDS_SECURE", "1")
    recs = list(read_shard("pipe:echo pwned > /dev/null"))
    assert len(recs) == 1 and recs[0].kind == "unreadable" and "refused under WDS_SECURE=1" in recs[0].message
