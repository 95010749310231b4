"""Run folders: the files a run writes, typed log rows, the run spec round trip, resume, the report."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from tiny_runs import captioned, loader_config, tiny_navit

from patchpack.train import CaptionTokenizer, RunSpec, TrainConfig, default_run_dir, load_checkpoint, make_loaders, \
    read_log, train
from patchpack.train.report import replace_section
from patchpack.train.text import find_class_words, read_class_words


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return captioned(tmp_path_factory.mktemp("run") / "data", n_images=16)


def _run(shards, out, steps=6, **kw):
    cfg = loader_config()
    loader, evals = make_loaders(shards["urls"], cfg, eval_urls=shards["urls"][:1])
    tcfg = TrainConfig(model=tiny_navit(3), steps=steps, lr=3e-3, warmup_steps=1, device="cpu", log_every=2,
                       out_dir=str(out), eval_every=3, **kw)
    spec = RunSpec(tcfg, loader.config, shards["urls"], shards["urls"][:1])
    lines = []
    return train(tcfg, loader, evals, run=spec, log=lines.append), lines


def test_a_run_folder_holds_what_rebuilds_the_model_and_the_loader(shards, tmp_path):
    result, lines = _run(shards, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"run.json", "loader.toml", "checkpoint.pt", "train_log.jsonl", "report.md"}
    spec = RunSpec.read(tmp_path / "run")
    assert spec.train.model == tiny_navit(3) and spec.loader.fit.max_patches == 16 and spec.loader.training
    assert spec.urls == shards["urls"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # a checkpoint alone is enough too
    assert ckpt["run"].loader == spec.loader and ckpt["run"].train.to_dict() == spec.train.to_dict()
    model = spec.train.model
    from patchpack.train import build_model

    rebuilt = build_model(model)
    rebuilt.load_state_dict(ckpt["model"])
    for (n, a), b in zip(result.model.state_dict().items(), rebuilt.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)
    # the header came before the first step and names size, L, budget, steps, task and folder
    first_step = next(i for i, l in enumerate(lines) if l.startswith("step "))
    head = " ".join(lines[:first_step])
    for words in ("task classify", "parameters", "L=64", "16 patches of 8 px", "steps: 6", str(tmp_path / "run")):
        assert words in head


def test_log_rows_are_typed_and_every_row_of_a_kind_has_the_same_keys(shards, tmp_path):
    _run(shards, tmp_path / "run")
    rows = read_log(tmp_path / "run")
    kinds = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(row)
    assert set(kinds) == {"step", "eval"} and len(kinds["step"]) == 6 and len(kinds["eval"]) == 2
    for kind, group in kinds.items():
        assert all(set(r) == set(group[0]) for r in group), kind
    assert {"loss", "lr", "examples", "tokens", "padding", "seconds", "wait_seconds", "examples_per_s",
            "tokens_per_s"} <= set(kinds["step"][0])
    assert {"name", "accuracy", "accuracy_images", "accuracy_videos", "loss"} <= set(kinds["eval"][0])
    assert [r["step"] for r in kinds["eval"]] == [3, 6]
    assert all(0 <= r["wait_seconds"] <= r["seconds"] for r in kinds["step"])
    json.dumps(rows, allow_nan=False)  # strict JSON: a figure without a value is null, never NaN


def test_resume_drops_log_rows_after_the_checkpoint(shards, tmp_path):
    _run(shards, tmp_path / "run", steps=6, checkpoint_every=2)
    log = tmp_path / "run" / "train_log.jsonl"
    rows = read_log(log)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 6
    # as if the run had died after step 4 with rows written past its last checkpoint (step 4)
    torch.save({**torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True), "step": 4},
               tmp_path / "run" / "checkpoint.pt")
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, lines = _run(shards, tmp_path / "run", steps=6)
    assert any("resumed from" in l and "step 4" in l for l in lines) and result.step == 6
    steps = [r["step"] for r in read_log(log) if r["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_default_run_folders_never_collide(tmp_path):
    first = default_run_dir(tmp_path)
    first.mkdir()
    second = default_run_dir(tmp_path)
    assert second != first and second.parent == tmp_path and second.name.startswith(first.name[:8])


def test_report_sections_are_replaced_in_place(tmp_path):
    replace_section(tmp_path, "## A", "## A\n\none")
    replace_section(tmp_path, "## B", "## B\n\ntwo")
    replace_section(tmp_path, "## A", "## A\n\nthree")
    text = (tmp_path / "report.md").read_text()
    assert text.index("three") < text.index("two") and "one" not in text


def test_the_caption_tokenizer_is_a_picklable_callable(shards, tmp_path):
    from patchpack.train.text import read_captions

    captions = read_captions(shards["urls"])
    assert len(captions) == 16 and all(isinstance(c, str) and c for c in captions)
    tok = CaptionTokenizer.train(captions)
    ids = tok(captions[0])
    assert ids[-1] == 2 and all(0 <= i < tok.vocab_size for i in ids)  # [EOS] appended
    assert tok("A never-seen WORD")[1:3] == [1, 1] or 1 in tok("A never-seen WORD")  # [UNK]
    again = pickle.loads(pickle.dumps(tok))
    assert again(captions[3]) == tok(captions[3])
    tok.save(tmp_path / "t.json")
    assert CaptionTokenizer.load(tmp_path / "t.json")(captions[5]) == tok(captions[5])


def test_class_names_files(shards, tmp_path):
    words, path = find_class_words(shards["urls"])
    assert path.name == "classes.json" and len(words) == 3 and all(len(w) == 3 for w in words)
    (tmp_path / "c.txt").write_text("cats | a cat\ndogs\n\n")
    assert read_class_words(tmp_path / "c.txt") == [["cats", "a cat"], ["dogs"]]
    (tmp_path / "c.json").write_text(json.dumps({"cat": ["a cat"], "dog": "a dog"}))
    assert read_class_words(tmp_path / "c.json") == [["a cat"], ["a dog"]]
    (tmp_path / "bad.json").write_text(json.dumps([["ok"], [3]]))
    with pytest.raises(ValueError, match="every class needs a name"):
        read_class_words(tmp_path / "bad.json")
    assert find_class_words([str(tmp_path / "nothing.tar")]) is None


def test_resume_from_a_checkpoint_at_the_end_of_a_pass(shards, tmp_path):
    """The loader state saved after a pass's last batch resumes into an empty rest of that pass, then the next."""
    cfg = loader_config()
    per_pass = make_loaders(shards["urls"], cfg)[0].count_batches()
    for run_steps in (per_pass, None):
        loader, _ = make_loaders(shards["urls"], cfg)
        tcfg = TrainConfig(model=tiny_navit(3), steps=2 * per_pass, warmup_steps=1, device="cpu", log_every=0,
                           out_dir=str(tmp_path / "run"), run_steps=run_steps)
        result = train(tcfg, loader, log=None)
    assert result.step == 2 * per_pass and len(result.history) == per_pass
