"""``patchpack train`` and ``patchpack eval`` from the command line: the README's flow with no budget flag,
the three tasks, run folders, and mistakes said with the flags the user typed."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from cli_run import one_line, run
from media import make_samples, write_shards

TINY = ["--steps", "2", "--dim", "16", "--depth", "1", "--heads", "1", "--log-every", "0", "--no-progress"]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """24 captioned synthetic images of 3 classes in two shards, with classes.json beside them."""
    from patchpack.synth import CLASS_WORDS, make_dataset

    root = tmp_path_factory.mktemp("captioned")
    info = make_dataset(root, 24, classes=3, seed=0, shard_size=12)
    (root / "classes.json").write_text(json.dumps([list(CLASS_WORDS[c]) for c in info["class_names"]]))
    return info


def test_the_readme_flow_needs_no_budget_flag(captioned, tmp_path, capsys, monkeypatch):
    """preprocess -> stats -> train -> eval: patchpack shards supply their own budget to each."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pre"
    code, _, err = run(capsys, "preprocess", *captioned["urls"], "--out", out, "--no-progress")
    assert code == 0, err
    code, text, err = run(capsys, "stats", out, "--json", "--no-progress")
    assert code == 0 and json.loads(text)["examples"] == 24, err
    code, text, err = run(capsys, "train", out, "--num-classes", "3", "--eval-urls", out, *TINY)
    assert code == 0, err
    runs = list((tmp_path / "runs").iterdir())  # no --out: runs/<timestamp>
    assert len(runs) == 1 and f"run folder: {runs[0].relative_to(tmp_path)}" in text
    loader = tomllib.loads((runs[0] / "loader.toml").read_text())
    assert loader["fit"]["max_patches"] == 256 and loader["pack"]["seq_len"] == 1024  # the shards' and the default
    assert "final heldout: accuracy" in text
    code, text, err = run(capsys, "eval", runs[0], out)
    assert code == 0, err
    assert "| 256 | 1024 | 24 |" in text  # patchpack shards: the budget they were made with
    assert (runs[0] / "eval_curve.png").exists() and (runs[0] / "eval_curve.json").exists()


def test_eval_at_two_budgets_on_raw_shards(captioned, tmp_path, capsys):
    code, _, err = run(capsys, "train", *captioned["urls"], "--num-classes", "3", "--max-patches", "16",
                       "--patch-size", "8", "--seq-len", "64", "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    code, text, err = run(capsys, "eval", tmp_path / "run" / "checkpoint.pt", *captioned["urls"], "--max-patches",
                          "8,32", "--json")
    assert code == 0, err
    curve = json.loads(text)
    assert [p["max_patches"] for p in curve["points"]] == [8, 32]
    assert curve["points"][0]["tokens_per_example"] < curve["points"][1]["tokens_per_example"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Training" in report and "## Flexible inference" in report


def test_multilabel_from_the_command_line(tmp_path, capsys):
    samples = make_samples(16, sizes=((24, 32), (32, 32)))
    for i, s in enumerate(samples):
        s["cls"] = f"{i % 4},{(i + 1) % 4}".encode()
    urls = write_shards(tmp_path / "ml", samples, per_shard=8)
    code, text, err = run(capsys, "train", *urls, "--task", "multilabel", "--num-classes", "4", "--eval-urls", urls[0],
                          "--patch-size", "8", "--max-patches", "16", "--seq-len", "64", "--out", tmp_path / "run",
                          *TINY)
    assert code == 0, err
    assert "final heldout: map" in text and " f1 " in text


def test_contrastive_from_the_command_line(captioned, tmp_path, capsys):
    code, text, err = run(capsys, "train", *captioned["urls"], "--task", "contrastive", "--fields", "txt",
                          "--eval-urls", captioned["urls"][0], "--patch-size", "8", "--max-patches", "16",
                          "--seq-len", "64", "--text-len", "24", "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    assert "zero-shot classes: 3" in err and "image->text R@1" in text and "zero-shot accuracy" in text
    assert (tmp_path / "run" / "tokenizer.json").exists()
    code, text, err = run(capsys, "eval", tmp_path / "run", captioned["urls"][0], "--max-patches", "4,16")
    assert code == 0, err
    assert "image_to_text_r1" in text.splitlines()[0] and "zero_shot_accuracy" in text.splitlines()[0]


def test_a_drop_schedule_runs_over_the_steps(captioned, tmp_path, capsys):
    code, _, err = run(capsys, "train", *captioned["urls"], "--num-classes", "3", "--patch-size", "8",
                       "--max-patches", "16", "--seq-len", "64", "--batch-size", "2", "--drop-rate", "0.5",
                       "--drop-schedule", "linear", "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    drop = tomllib.loads((tmp_path / "run" / "loader.toml").read_text())["drop"]
    assert drop["schedule"] == "linear" and drop["kind"] == "constant"
    assert 0 < drop["schedule_epochs"] < 2  # 2 steps of a few batches per pass


MISTAKES = [
    (["--num-classes", "3", "--heads", "5", "--dim", "16"], "--dim 16 is not divisible by --heads 5"),
    (["--num-classes", "3", "--token-learner-tokens", "2", "--token-learner-at-layer", "4", "--depth", "1"],
     "--token-learner-at-layer 4 exceeds --depth 1"),
    (["--num-classes", "3", "--seq-len", "16", "--patch-size", "8", "--max-patches", "48"],
     "--seq-len 16 is below the largest example the fit allows (48 tokens: --max-patches 48)"),
    (["--task", "multilabel"], "--task multilabel needs --num-classes C"),
    (["--task", "contrastive"], "--task contrastive trains on captions: give --fields txt"),
    (["--task", "contrastive", "--fields", "json:caption"], "no caption in field 'json:caption'"),
    (["--num-classes", "3", "--posemb", "bogus"], "argument --posemb: unknown positional embedding 'bogus'; "
                                                 "expected one of learned, sinusoidal"),
    (["--num-classes", "3", "--attention", "bogus"], "argument --attention: unknown attention backend 'bogus'; "
                                                    "expected one of auto,"),
    (["--num-classes", "3", "--token-learner-version", "2"], "unknown TokenLearner version '2'; expected one of 1.0, 1.1"),
    (["--num-classes", "3", "--task", "regress"], "unknown task 'regress'"),
]


@pytest.mark.parametrize("extra,message", MISTAKES, ids=[m[1][:40] for m in MISTAKES])
def test_mistakes_are_one_line_with_the_flags_typed(captioned, tmp_path, capsys, extra, message):
    base = [a for a in TINY if a not in ("--heads", "1", "--dim", "16", "--depth")] if "--heads" in extra else TINY
    code, _, err = run(capsys, "train", *captioned["urls"], *base, *extra, "--out", tmp_path / "run")
    assert code == 2
    assert message in one_line(err, "train")
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


def test_an_eval_of_something_that_is_no_run(captioned, tmp_path, capsys):
    code, _, err = run(capsys, "eval", tmp_path, *captioned["urls"])
    assert code == 2 and "no checkpoint.pt" in one_line(err, "eval")
    code, _, err = run(capsys, "eval", tmp_path / "missing", *captioned["urls"])
    assert code == 2 and "no such run folder or checkpoint" in one_line(err, "eval")
    code, _, err = run(capsys, "eval", tmp_path, *captioned["urls"], "--max-patches", "8,x")
    assert code == 2 and "expected comma-separated patch budgets" in err
