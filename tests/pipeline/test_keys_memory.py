"""Keys count toward memory: a key longer than MAX_KEY_BYTES is a bad-name record (never held in the
packer or written into a state), and held keys count in the packer's byte budget."""

from __future__ import annotations

import io
import json
import tarfile

from media import image_bytes
from patchpack import make_loader
from patchpack.example import Plan
from patchpack.pipeline.admission import MAX_KEY_BYTES
from patchpack.pipeline.held import Held, held_bytes

SMALL = dict(seq_len=64, patch_size=8, max_patches=16, batch_size=2, buffer_size=64)


def _tar_with_long_keys(path, n_long: int, key_bytes: int, n_short: int = 4) -> str:
    png = image_bytes(16, 16)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(n_long + n_short):
            key = (f"long{i}-" + "k" * key_bytes) if i < n_long else f"short{i}"
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(png)
            tf.addfile(info, io.BytesIO(png))
    return str(path)


def test_long_keys_are_records_and_the_state_stays_small(tmp_path):
    url = _tar_with_long_keys(tmp_path / "keys.tar", n_long=40, key_bytes=200_000)
    loader = make_loader(url, **SMALL)
    keys = [k for b in loader for row in b.sample_keys for k in row]
    assert sorted(keys) == [f"short{i}" for i in range(40, 44)]
    assert [e.kind for e in loader.errors] == ["bad-name"] * 40
    assert all(len(e.key) <= 4096 for e in loader.errors)  # records do not carry the huge key either
    assert len(json.dumps(loader.state_dict())) < 100_000


def test_a_key_just_over_the_cap_is_refused_at_admission(tmp_path):
    url = _tar_with_long_keys(tmp_path / "cap.tar", n_long=1, key_bytes=MAX_KEY_BYTES, n_short=1)
    loader = make_loader(url, **SMALL)
    assert [k for b in loader for row in b.sample_keys for k in row] == ["short1"]
    assert [e.kind for e in loader.errors] == ["bad-name"]


def test_held_keys_count_toward_the_buffer_bytes():
    plan = Plan("image", (8, 8), (8, 8), (1, 1, 1))
    short = Held("k", "s.tar", 0, 0, 0, "png", b"x" * 100, plan, 1)
    long = Held("k" * 5000, "s.tar", 0, 0, 0, "png", b"x" * 100, plan, 1, fields={"txt": "caption " * 10})
    assert held_bytes(long) - held_bytes(short) == 4999 + len("caption " * 10)
