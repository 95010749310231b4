"""Remote urls through fsspec: a real HTTP server on the loopback and fsspec's memory filesystem.

The same shards read over ``http://127.0.0.1:PORT/...``, from ``memory://`` and from disk give
identical samples; a connection dropped part way is a record (after the samples before it), or
nothing at all when a retry mends it; a 404 is a ``shard`` record; remote urls stay urls.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import uuid
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from media import make_samples, write_shards
from patchpack.errors import ErrorRecord
from patchpack.sources import Sample, ShardTask, expand_sources, fetch_samples, read_shard, read_task
from patchpack.sources import remote as remote_mod
from patchpack.sources.remote import RemoteConfig, RemoteReadError, RemoteStream, open_remote

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.root``; honours ``Range`` unless ``server.ranges`` is false; ``server.drops``
    maps a file name to ``[byte offset, times]``: that many GETs are cut at that offset."""

    def log_message(self, *args):  # quiet
        pass

    def _file(self):
        name = self.path.lstrip("/").split("?")[0]
        path = os.path.join(self.server.root, name)
        self.server.requests.append((self.command, name, self.headers.get("Range")))
        if not os.path.isfile(path):
            self.send_error(404)
            return None, None
        return name, path

    def do_HEAD(self):
        name, path = self._file()
        if path is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.send_header("Accept-Ranges", "bytes" if self.server.ranges else "none")
            self.end_headers()

    def do_GET(self):
        name, path = self._file()
        if path is None:
            return
        size = os.path.getsize(path)
        start, end = 0, size
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m and self.server.ranges:
            start, end = int(m.group(1)), min(size, int(m.group(2) or size - 1) + 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        drop = self.server.drops.get(name)
        cut = drop is not None and drop[1] > 0 and start <= drop[0] < end
        with open(path, "rb") as fh:
            fh.seek(start)
            if cut:
                drop[1] -= 1
                self.wfile.write(fh.read(drop[0] - start))
                self.wfile.flush()
                self.server.client_read.wait(timeout=5)  # when set by a test: once the client has read
                self.close_connection = True
                return  # the connection closes short of Content-Length
            self.wfile.write(fh.read(end - start))


@pytest.fixture
def http_root(tmp_path):
    """``(base url, server)``: a loopback HTTP server over ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root, server.ranges, server.drops, server.requests = str(root), True, {}, []
    server.client_read = threading.Event()
    server.client_read.set()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fast_retries(monkeypatch):
    """Retries without waiting (the default backs off 0.5 s, 1 s, ...) in 4 kB reads: pass it as
    ``read_shard(..., remote=fast_retries)``; it is also the default of readers not told one."""
    config = RemoteConfig(retries=2, backoff_s=0.0, chunk_bytes=4096)
    monkeypatch.setattr(remote_mod, "DEFAULT_REMOTE", config)
    return config


def _split(records):
    return [r for r in records if isinstance(r, Sample)], [r for r in records if isinstance(r, ErrorRecord)]


def _same(remote_records, local_records, remote_url, local_url):
    """Equal samples (key, index, members) and records, up to the shard url."""
    def norm(r, url):
        if isinstance(r, Sample):
            assert r.shard == url
            return ("sample", r.key, r.index, r.members)
        return ("record", r.key.replace(url, "URL"), r.kind)
    assert any(isinstance(r, Sample) for r in local_records)
    assert [norm(r, remote_url) for r in remote_records] == [norm(r, local_url) for r in local_records]


def _shards(tmp_path, n=10, per_shard=5, name="shard"):
    samples = make_samples(n)
    for i, s in enumerate(samples):
        s["txt"] = f"caption {i}".encode()
    return write_shards(tmp_path / "www", samples, per_shard=per_shard, name=name)


def _parquet(path, n=10, row_group_size=3):
    samples = make_samples(n)
    image = [{"bytes": next(v for k, v in s.items() if k in ("png", "jpg", "webp")), "path": None} for s in samples]
    table = pa.table({"__key__": [s["__key__"] for s in samples], "image": image,
                      "txt": [f"caption {i}" for i in range(n)], "cls": [int(s["cls"]) for s in samples]})
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_tar_shards_over_http_equal_the_same_shards_from_disk(tmp_path, http_root):
    base, server = http_root
    for local in _shards(tmp_path):
        url = f"{base}/{os.path.basename(local)}"
        _same(list(read_shard(url)), list(read_shard(local)), url, local)
        _same(list(read_task(ShardTask(url, 1, 3), start=2)), list(read_task(ShardTask(local, 1, 3), start=2)), url, local)
        assert fetch_samples(url, [3, 1])[3].members == fetch_samples(local, [3])[3].members
    assert not [r for r in server.requests if r[2]]  # sequential reads are one streamed GET, no ranges


def test_a_server_without_ranges_still_streams_tar_shards(tmp_path, http_root):
    base, server = http_root
    server.ranges = False
    (local,) = _shards(tmp_path, n=4, per_shard=4)
    url = f"{base}/{os.path.basename(local)}"
    _same(list(read_shard(url)), list(read_shard(local)), url, local)


def test_parquet_over_http_equals_the_same_file_from_disk(tmp_path, http_root):
    base, server = http_root
    local = _parquet(tmp_path / "www" / "train-00000-of-00001.parquet")
    url = f"{base}/train-00000-of-00001.parquet"
    _same(list(read_shard(url)), list(read_shard(local)), url, local)
    _same(list(read_shard(url, start=4, owns=lambda i: i % 2 == 0)),
          list(read_shard(local, start=4, owns=lambda i: i % 2 == 0)), url, local)
    url += "?download=true"  # a query after the name, as Hugging Face download urls have
    _same(list(read_shard(url)), list(read_shard(local)), url, local)


def test_memory_filesystem_urls_equal_disk(tmp_path):
    fs = fsspec.filesystem("memory")
    folder = f"/pp-{uuid.uuid4().hex}"
    try:
        shards = _shards(tmp_path)
        pq_local = _parquet(tmp_path / "m.parquet")
        for local in [*shards, pq_local]:
            fs.pipe(f"{folder}/{os.path.basename(local)}", Path(local).read_bytes())
        urls = expand_sources(f"memory://{folder}/shard-*.tar")
        assert [u.rsplit("/", 1)[1] for u in urls] == [os.path.basename(s) for s in shards]
        for url, local in zip(urls, shards):
            _same(list(read_shard(url)), list(read_shard(local)), url, local)
        url = f"memory://{folder}/m.parquet"
        _same(list(read_shard(url)), list(read_shard(pq_local)), url, pq_local)
    finally:
        fs.rm(folder, recursive=True)


def test_a_connection_dropped_for_good_gives_the_samples_before_it_then_a_record(tmp_path, http_root, fast_retries):
    base, server = http_root
    (local,) = _shards(tmp_path, n=10, per_shard=10)
    name = os.path.basename(local)
    size = os.path.getsize(local)
    server.drops[name] = [size // 2, 100]  # every GET is cut at the middle
    url = f"{base}/{name}"
    got, errors = _split(list(read_shard(url, remote=fast_retries)))
    want, _ = _split(list(read_shard(local)))
    # aiohttp drops bytes it buffered once the connection is gone, so how many samples come
    # through depends on timing; they are always the first ones, complete, then records: the
    # sample cut short (the tar reader may call its cut header bad-header or truncated), last one
    # for the shard saying why
    assert len(got) < len(want)
    assert [(s.key, s.members) for s in got] == [(s.key, s.members) for s in want[:len(got)]]
    assert errors and errors[-1].key == url and errors[-1].scope == "shard"
    assert "RemoteReadError" in errors[-1].message and "after 2 retries" in errors[-1].message
    assert {e.key for e in errors[:-1]} <= {url, want[len(got)].key}
    assert sum(1 for r in server.requests if r[0] == "GET") == 1 + fast_retries.retries  # bounded


@pytest.mark.parametrize("ranges", [True, False])
def test_a_connection_dropped_once_is_mended_by_a_retry(tmp_path, http_root, fast_retries, ranges, monkeypatch):
    base, server = http_root
    server.ranges = ranges
    server.client_read.clear()  # the connection drops once bytes have reached the reader
    readinto = RemoteStream.readinto
    monkeypatch.setattr(RemoteStream, "readinto", lambda self, b: (readinto(self, b), server.client_read.set())[0])
    local = _shards(tmp_path, n=30, per_shard=30)[0]
    pq_local = _parquet(tmp_path / "www" / "d.parquet", n=12)
    for path in (local, pq_local) if ranges else (local,):  # parquet needs ranges
        name = os.path.basename(path)
        server.drops[name] = [os.path.getsize(path) // 3, 1]
        url = f"{base}/{name}"
        _same(list(read_shard(url, remote=fast_retries)), list(read_shard(path)), url, path)
        assert server.drops[name][1] == 0  # the drop happened
    # the tar stream resumed where it stopped with a range request; a server that ignores it
    # sends the whole file, whose bytes already delivered are skipped
    (resumed,) = [r[2] for r in server.requests if r[0] == "GET" and r[1] == os.path.basename(local)][1:]
    assert re.fullmatch(r"bytes=[1-9]\d*-", resumed)


def test_a_parquet_file_whose_reads_keep_failing_gives_the_rows_before_then_a_shard_record(
        tmp_path, http_root, fast_retries):
    base, server = http_root
    path = str(tmp_path / "www" / "p.parquet")
    rng = np.random.default_rng(0)  # 40 kB rows: the row groups lie before pyarrow's 64 kB footer read
    images = [{"bytes": b"\x89PNG\r\n\x1a\n" + rng.bytes(40_000), "path": None} for _ in range(12)]
    pq.write_table(pa.table({"image": images, "txt": [str(i) for i in range(12)]}), path, row_group_size=3,
                   compression="none")
    server.drops["p.parquet"] = [pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset, 1000]
    url = f"{base}/p.parquet"
    got, errors = _split(list(read_shard(url, remote=fast_retries)))  # 4 kB reads: a row group at a time
    assert [s.key for s in got] == [f"p/{i}" for i in range(len(got))] and len(got) in (3, 6)
    assert [(e.key, e.kind) for e in errors] == [(url, "shard")]
    assert f"unreadable after row {len(got)}: RemoteReadError" in errors[0].message


def test_a_missing_remote_shard_is_one_shard_record_without_retries(http_root, fast_retries):
    base, server = http_root
    for url in (f"{base}/nope.tar", f"{base}/nope.parquet"):
        records = list(read_shard(url))
        assert len(records) == 1 and records[0].kind == "unreadable" and records[0].key == url
        assert f"{url}: not found" in records[0].message and "retries" not in records[0].message
    # fsspec asks with HEAD, then GET; a 404 is not retried (that would be 2 more each)
    assert [r[0] for r in server.requests] == ["HEAD", "GET"] * 2


def test_reads_are_chunked_never_the_whole_shard(tmp_path, http_root, monkeypatch):
    base, server = http_root
    (local,) = _shards(tmp_path, n=30, per_shard=30)
    sizes = []
    read = RemoteStream._read
    monkeypatch.setattr(RemoteStream, "_read", lambda self, n: sizes.append(n) or read(self, n))
    config = RemoteConfig(chunk_bytes=4096)
    with open_remote(f"{base}/{os.path.basename(local)}", config) as stream:
        data = b"".join(iter(lambda: stream.read(1000), b""))
    assert data == open(local, "rb").read()
    assert len(sizes) > 2 and max(sizes) <= 4096


def test_a_stream_shorter_than_its_length_is_an_error_not_an_end(tmp_path, http_root):
    base, server = http_root
    (local,) = _shards(tmp_path, n=4, per_shard=4)
    name = os.path.basename(local)
    server.drops[name] = [1000, 100]
    with pytest.raises(RemoteReadError, match="after 1 retries"):
        with open_remote(f"{base}/{name}", RemoteConfig(retries=1, backoff_s=0)) as stream:
            stream.read()


def test_remote_urls_stay_urls_without_local_file_checks(monkeypatch):
    def no_local(path):
        raise AssertionError(f"a file-system check on {path!r}")

    monkeypatch.setattr(os.path, "isdir", no_local)
    monkeypatch.setattr(os.path, "exists", no_local)
    assert expand_sources("http://127.0.0.1:1/d/shard-{000..002}.tar") == [
        f"http://127.0.0.1:1/d/shard-00{i}.tar" for i in range(3)]
    assert expand_sources(["https://h/a.parquet::memory://b/c.tar"]) == ["https://h/a.parquet", "memory://b/c.tar"]


def test_a_remote_glob_that_matches_nothing_is_one_line():
    with pytest.raises(ValueError, match="matches no file"):
        expand_sources(f"memory:///pp-{uuid.uuid4().hex}/*.parquet")


def test_without_fsspec_a_remote_url_is_one_line_naming_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "fsspec" or m.startswith("fsspec.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec -> ImportError
    with pytest.raises(ValueError, match=r"pip install 'patchpack\[remote\]'"):
        expand_sources("https://example.invalid/shard-{0..3}.tar")
    for url in ("https://example.invalid/a.tar", "s3://bucket/a.parquet"):
        (record,) = list(read_shard(url))
        assert record.kind == "unreadable" and "pip install 'patchpack[remote]'" in record.message


def test_a_scheme_whose_driver_is_missing_names_it():
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="s3fs"):
        expand_sources("s3://bucket/train-{0..1}.parquet")
    (record,) = list(read_shard("s3://bucket/a.tar"))
    assert record.kind == "unreadable" and "s3fs" in record.message
