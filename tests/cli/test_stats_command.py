import json

import pytest

from media import BROKEN, make_samples, write_shards
from patchpack.cli import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats")
    samples = make_samples(30, seed=5)
    samples += [{"__key__": f"bad-{n}", ext: data} for n, (ext, data, _) in sorted(BROKEN.items())]
    return write_shards(d, samples, per_shard=8), samples


ARGS = ["--seq-len", "64", "--patch-size", "8", "--max-patches", "48", "--buffer-size", "8"]


def test_stats_json(shards, capsys, tmp_path):
    urls, samples = shards
    errors = tmp_path / "errors.jsonl"
    assert main(["stats", *urls, *ARGS, "--json", "--errors", str(errors)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["examples"] == 30
    assert out["sequences"] >= 30 * 16 // 64  # at least the token count allows
    assert 0.0 <= out["padding_fraction"] < 1.0
    assert out["errors"] == len(BROKEN)
    kinds = {}
    for _, _, kind in BROKEN.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    assert out["error_kinds"] == kinds
    lines = [json.loads(x) for x in errors.read_text().splitlines()]
    assert sorted(x["key"] for x in lines) == sorted(f"bad-{n}" for n in BROKEN)


def test_stats_summary_and_brace_urls(shards, capsys):
    urls, _ = shards
    pattern = urls[0].replace("000000", "{000000..%06d}" % (len(urls) - 1))
    assert main(["stats", pattern, *ARGS, "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "padding" in text and "examples          30 packed" in text


def test_stats_limit_and_drop(shards, capsys):
    urls, _ = shards
    assert main(["stats", *urls, *ARGS, "--json", "--limit", "1", "--batch-size", "2", "--drop-rate", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sequences"] == 2 and out["dropped_tokens"] > 0


def test_stats_report_directory(shards, capsys, tmp_path):
    urls, _ = shards
    out_dir = tmp_path / "report"
    assert main(["stats", *urls, *ARGS, "--json", "--report", str(out_dir)]) == 0
    json.loads(capsys.readouterr().out)
    assert out_dir.is_dir() and any(out_dir.iterdir())
