"""A Hugging Face parquet dataset through the whole loader: the same examples and tokens as the
same data in webdataset shards, captions and labels included, and exact and elastic resume."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from media import make_samples, write_shards
from patchpack import make_loader

KW = dict(seq_len=128, patch_size=8, max_patches=32, batch_size=2, buffer_size=6, seed=4, fields=("txt",),
          num_classes=5)
_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _samples(n: int) -> list[dict]:
    out = make_samples(n, sizes=((24, 40), (40, 24), (32, 32)))
    for i, s in enumerate(out):
        s["txt"] = f"caption {i}".encode()
    return out


def _parquet(samples: list[dict], path, row_group_size: int = 4) -> str:
    image = [next(v for k, v in s.items() if k in ("png", "jpg", "webp")) for s in samples]
    table = pa.table({"__key__": [s["__key__"] for s in samples],
                      "image": pa.array([{"bytes": b, "path": None} for b in image], _IMAGE),
                      "txt": [s["txt"].decode() for s in samples],
                      "cls": pa.array([int(s["cls"]) for s in samples], pa.int64())})
    meta = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=row_group_size)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pqloader")
    samples = _samples(24)
    parquet = [_parquet(samples[:12], d / "train-00000-of-00002.parquet"),
               _parquet(samples[12:], d / "train-00001-of-00002.parquet")]
    tars = write_shards(d / "tar", samples, per_shard=12)
    return parquet, tars


def _examples(batches) -> dict[str, tuple]:
    out = {}
    for b in batches:
        for r, keys in enumerate(b.sample_keys):
            for j, k in enumerate(keys):
                seg = b.segment_ids[r].numpy() == j + 1
                out[k] = (b.patches[r].numpy()[seg].tobytes(), b.texts[r][j], int(b.labels[r, j]),
                          b.targets[r, j].tolist())
    return out


def test_parquet_gives_the_tar_shards_examples_tokens_captions_and_labels(data):
    parquet, tars = data
    from_parquet, from_tar = _examples(make_loader(parquet, **KW)), _examples(make_loader(tars, **KW))
    assert len(from_parquet) == 24 and from_parquet == from_tar


@pytest.mark.parametrize("cut,workers_after", [(1, 0), (2, 2), (1, 1)])
def test_resume_on_parquet_is_exact_and_elastic(data, cut, workers_after):
    parquet, _ = data
    full = _examples(make_loader(parquet, **KW))
    loader = make_loader(parquet, **KW)
    it = iter(loader)
    head = [next(it) for _ in range(cut)]
    resumed = make_loader(parquet, num_workers=workers_after, **KW)
    resumed.load_state_dict(loader.state_dict())
    rest = list(resumed)
    keys = [k for b in head + rest for row in b.sample_keys for k in row]
    assert Counter(keys) == Counter(set(full)) and len(full) == 24  # each example once
    assert _examples(head + rest) == full  # with its own tokens (its randomness kept), caption and label
    if workers_after == 0:  # the same layout: the very batches of the uninterrupted run
        assert [b.sample_keys for b in head + rest] == [b.sample_keys for b in make_loader(parquet, **KW)]


def test_the_stats_command_reads_a_parquet_dataset(data, capsys):
    from patchpack.cli import main

    parquet, tars = data
    code = main(["stats", *parquet, "--json", "--no-progress", "--seq-len", "128", "--patch-size", "8",
                 "--max-patches", "32", "--fields", "txt"])
    got = json.loads(capsys.readouterr().out)
    main(["stats", *tars, "--json", "--no-progress", "--seq-len", "128", "--patch-size", "8", "--max-patches", "32",
          "--fields", "txt"])
    want = json.loads(capsys.readouterr().out)
    assert code == 0 and got["examples"] == want["examples"] == 24 and got["tokens"] == want["tokens"]
