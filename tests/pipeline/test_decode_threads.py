"""decode_threads: a thread pool inside one worker gives the same batches, states and errors as one thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from media import broken_payloads, make_samples, write_shards
from PIL import Image

from patchpack import make_loader
from patchpack.config import LoaderConfig
from patchpack.pipeline.threads import DecodePool


def _run(urls, threads: int, **kw):
    loader = make_loader(urls, seq_len=64, patch_size=8, max_patches=48, batch_size=3, buffer_size=8,
                         decode_threads=threads, seed=3, **kw)
    batches = list(loader)
    return batches, loader.errors, loader.state_dict()


def _corpus(tmp_path, n=40):
    samples = make_samples(n, seed=1)
    for i, (kind, payload, _) in enumerate(broken_payloads().values()):
        samples.insert(3 + 5 * i, {"__key__": f"bad{i:03d}", "jpg": payload, "cls": b"1"})
    return write_shards(tmp_path, samples, per_shard=9)


@pytest.mark.parametrize("threads", [2, 3])
def test_batches_equal_one_thread(tmp_path, threads):
    urls = _corpus(tmp_path)
    one, errors1, state1 = _run(urls, 1)
    many, errors_n, state_n = _run(urls, threads)
    assert len(one) == len(many) > 3
    for a, b in zip(one, many):
        assert a == b  # tensors and keys
        assert a.info.state == b.info.state
    assert [(e.key, e.kind) for e in errors1] == [(e.key, e.kind) for e in errors_n]
    assert errors1  # the corpus holds broken payloads: their records come in the same order
    assert state1 == state_n


def test_token_drop_and_augmentation_equal_one_thread(tmp_path):
    urls = write_shards(tmp_path, make_samples(30, seed=2), per_shard=7)
    kw = {"drop__kind": "beta", "drop__rate_max": 0.5}
    one, _, _ = _run(urls, 1, augment=True, **kw)
    many, _, _ = _run(urls, 4, augment=True, **kw)
    assert sum(b.num_tokens for b in one) < sum(int(np.prod(g)) for b in one for g in b.grids.reshape(-1, 3).tolist())
    assert len(one) == len(many) and all(a == b for a, b in zip(one, many))


def test_pool_keeps_order_and_uses_threads():
    seen = set()

    def work(x):
        seen.add(threading.get_ident())
        a = np.asarray(Image.new("RGB", (400, 300), (x % 256, 0, 0)).resize((97, 61), Image.Resampling.BICUBIC))
        return x, int(a[0, 0, 0])

    pool = DecodePool(3)
    out = pool.map(work, range(64))
    assert out == [(x, x % 256) for x in range(64)]
    assert len(seen) > 1
    pool.close()
    assert DecodePool(1).map(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]


def test_bad_thread_count_fails_loudly():
    with pytest.raises(ValueError, match="decode_threads"):
        LoaderConfig(decode_threads=0)
