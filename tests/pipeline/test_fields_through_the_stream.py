"""Per-example fields travel with their example: every caption lands in the slot of its image, through
packing, resume (exact and elastic), mixtures, decode threads, stored shards and stored packed rows;
hostile text is a record, never a crash or a silent empty string; label sets become multi-hot targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import image_bytes, make_samples, write_shards
from patchpack import Source, make_loader
from patchpack.fit import FitConfig
from patchpack.offline import PreprocessConfig, preprocess
from patchpack.pack import PackConfig

SMALL = dict(seq_len=64, patch_size=8, max_patches=16, batch_size=2, buffer_size=6, seed=3)


def _captioned(n: int, prefix: str, seed: int) -> list[dict]:
    out = make_samples(n, sizes=((16, 24), (24, 16), (8, 8)), prefix=prefix, seed=seed)
    for i, s in enumerate(out):
        s["txt"] = f"caption {prefix}{i} ünïcode {'x' * (i % 5)}".encode()
        if i % 3:
            s["json"] = json.dumps({"caption": f"json caption {i}", "tags": [i % 4, (i + 1) % 4]}).encode()
    return out


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    d = tmp_path_factory.mktemp("fields")
    a = write_shards(d / "a", _captioned(18, "a", 1), per_shard=5)
    b = write_shards(d / "b", _captioned(10, "b", 2), per_shard=4)
    return a, b


def _expected(prefix: str, n: int) -> dict[str, str]:
    return {f"{prefix}{i:05d}": f"caption {prefix}{i} ünïcode {'x' * (i % 5)}" for i in range(n)}


def _pairs(batches) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for b in batches:
        assert len(b.texts) == len(b.sample_keys)
        for keys, texts in zip(b.sample_keys, b.texts):
            assert all(t is None for t in texts[len(keys):])  # empty slots have no text
            for k, t in zip(keys, texts):
                assert k not in out, "an example came twice"
                out[k] = t
    return out


def _resumed(make, cut: int, workers_after: int) -> list:
    loader = make(0)
    it = iter(loader)
    head = [b for _, b in zip(range(cut), it)]
    if len(head) < cut:
        return head
    state = loader.state_dict()
    again = make(workers_after)
    again.load_state_dict(state)
    return head + list(again)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(cut=st.integers(1, 8), threads=st.sampled_from([1, 2]), workers_after=st.sampled_from([0, 2]),
       mixture=st.booleans())
def test_every_caption_arrives_in_the_slot_of_its_image(captioned, cut, threads, workers_after, mixture):
    a, b = captioned
    kw = dict(SMALL, fields=("txt",), decode_threads=threads)
    if mixture:
        make = lambda w: make_loader([Source(a, 2, name="a"), Source(b, 1, name="b")], num_workers=w, **kw)  # noqa
        expected = {**_expected("a", 18), **_expected("b", 10)}
    else:
        make = lambda w: make_loader(a, num_workers=w, **kw)  # noqa: E731
        expected = _expected("a", 18)
    assert _pairs(_resumed(make, cut, workers_after)) == expected


def test_json_fields_optional_fields_and_the_text_field(captioned):
    a, _ = captioned
    loader = make_loader(a, fields=("txt", "json:caption?"), text_field="json:caption", **SMALL)
    pairs = _pairs(loader)
    assert pairs == {f"a{i:05d}": (f"json caption {i}" if i % 3 else None) for i in range(18)}
    assert not loader.errors  # an optional field that is absent is None, not a record


@pytest.mark.parametrize("kind", ["examples", "packed"])
def test_stored_shards_keep_each_caption_with_its_example(captioned, tmp_path, kind):
    a, _ = captioned
    cfg = PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=16), fields=("txt",), packed=kind == "packed",
                           pack=PackConfig(seq_len=64, max_per_seq=8))
    preprocess(a, tmp_path / "out", cfg, progress=False)
    loader = make_loader(str(tmp_path / "out"), fields=("txt",), **{**SMALL, "max_per_seq": 8})
    assert loader.dataset.serve_stored == (kind == "packed")
    assert _pairs(loader) == _expected("a", 18)


def test_a_required_field_a_stored_shard_lacks_is_a_record(captioned, tmp_path):
    a, _ = captioned
    preprocess(a, tmp_path / "out", PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=16)), progress=False)
    loader = make_loader(str(tmp_path / "out"), fields=("txt",), **SMALL)
    assert _pairs(loader) == {}
    assert len(loader.errors) == 18 and {e.kind for e in loader.errors} == {"bad-field"}
    optional = make_loader(str(tmp_path / "out"), fields=("txt?",), **SMALL)
    assert set(_pairs(optional).values()) == {None} and not optional.errors


HOSTILE = {
    "non-utf8": {"txt": b"\xff\xfe caption"},
    "nul": {"txt": b"a\x00b"},
    "too-long": {"txt": b"x" * (64 * 2**10 + 1)},
    "missing": {},
    "nested-json": {"json": b"[" * 100000 + b"]" * 100000},
    "json-not-a-string": {"json": b'{"caption": [1, 2]}'},
    "surrogate": {"txt": b"\xed\xa0\x80"},
}


def test_hostile_text_is_a_record_never_a_crash_or_an_empty_string(tmp_path):
    samples = []
    for i, (name, members) in enumerate(HOSTILE.items()):
        samples.append({"__key__": f"bad-{name}", "png": image_bytes(16, 16, seed=i), **members})
    samples.append({"__key__": "good", "png": image_bytes(16, 16), "txt": b"fine", "json": b'{"caption": "ok"}'})
    urls = write_shards(tmp_path, samples, per_shard=4)
    spec = {name: ("json:caption",) if "json" in name else ("txt",) for name in HOSTILE}
    for name in HOSTILE:
        loader = make_loader(urls, fields=spec[name], **SMALL)
        pairs = _pairs(loader)
        assert f"bad-{name}" not in pairs
        rec = next(e for e in loader.errors if e.key == f"bad-{name}")
        assert rec.kind == "bad-field" and "\n" not in rec.message
        assert all(isinstance(t, str) and t for t in pairs.values())  # never a silent empty string


def test_a_100_mb_caption_is_refused_without_being_kept(tmp_path):
    urls = write_shards(tmp_path, [{"__key__": "huge", "png": image_bytes(16, 16), "txt": b"y" * (100 * 2**20)},
                                   {"__key__": "ok", "png": image_bytes(16, 16), "txt": b"fine"}], per_shard=2)
    loader = make_loader(urls, fields=("txt",), **SMALL)
    assert _pairs(loader) == {"ok": "fine"}
    assert [(e.key, e.kind) for e in loader.errors] == [("huge", "bad-field")]


def test_multi_hot_targets_equal_the_listed_labels(tmp_path):
    sets = [[1], [0, 3], [2, 3, 1], [], [4]]
    samples = [{"__key__": f"m{i}", "png": image_bytes(16, 16, seed=i), "cls": ",".join(map(str, s)).encode()}
               for i, s in enumerate(sets)]
    urls = write_shards(tmp_path, samples, per_shard=5)
    for batch in make_loader(urls, num_classes=5, **SMALL):
        assert batch.targets.shape == (*batch.labels.shape, 5)
        for r, keys in enumerate(batch.sample_keys):
            for j, k in enumerate(keys):
                want = sets[int(k[1:])]
                assert np.flatnonzero(batch.targets[r, j].numpy()).tolist() == sorted(want)
                assert batch.labels[r, j] == (want[0] if len(want) == 1 else -1)
            assert not batch.targets[r, len(keys):].any()


def test_token_ids_come_from_any_callable_and_truncation_is_counted(captioned):
    a, _ = captioned
    tok = lambda text: [ord(c) % 97 + 1 for c in text]  # noqa: E731  (a str -> list[int] callable)
    loader = make_loader(a, fields=("txt",), tokenizer=tok, text_len=16, **SMALL)
    seen = 0
    for batch in loader:
        for r, texts in enumerate(batch.texts):
            for j, t in enumerate(texts):
                ids = batch.text_ids[r, j][batch.text_mask[r, j]].tolist()
                assert ids == ([] if t is None else tok(t)[:16])
                seen += t is not None
    assert seen == 18 and loader.stats.texts == 18 and loader.stats.truncated_texts == 18
