"""torch stays at the edge: the package, packing, preprocessing workers and the worker stream never import it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from media import make_samples, write_shards


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_import_patchpack_pack_offline_without_torch():
    r = _run("""
        import sys
        import patchpack, patchpack.pack, patchpack.offline, patchpack.config, patchpack.pipeline.stream
        assert patchpack.PackConfig(seq_len=8).seq_len == 8  # a lazy re-export
        assert 'torch' not in sys.modules, 'torch imported'
        print('ok')
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_preprocessing_worker_processes_a_shard_without_torch(tmp_path):
    (url,) = write_shards(tmp_path / "src", make_samples(6, seed=3), per_shard=10)
    r = _run(f"""
        import sys
        from patchpack.fit import FitConfig
        from patchpack.offline.config import PreprocessConfig
        from patchpack.offline.job import process_shard
        cfg = PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=32))
        entry = process_shard({{"url": {url!r}, "index": 0, "out_dir": {str(tmp_path)!r}, "config": cfg}})
        assert entry["examples"] >= 1, entry
        assert 'torch' not in sys.modules, 'torch imported'
        print(entry["examples"])
    """)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 1


def test_worker_stream_yields_token_rows_without_torch(tar_shards):
    urls = tar_shards(10, per_shard=5, seed=4)
    r = _run(f"""
        import sys
        from patchpack.config import LoaderConfig
        from patchpack.pipeline.sources import Sources
        from patchpack.pipeline.stream import WorkerPosition, worker_stream
        cfg = LoaderConfig().with_overrides(seq_len=64, patch_size=8, max_patches=32, batch_size=2)
        items = list(worker_stream(Sources({urls!r}, cfg), WorkerPosition(0, 1, 0)))
        rows = [row for item in items for row in item.rows]
        assert rows and all(sum(len(t) for t in row) <= 64 for row in rows)
        assert 'torch' not in sys.modules, 'torch imported'
        print(sum(len(row) for row in rows))
    """)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 1
