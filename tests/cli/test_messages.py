"""What the commands say: output paths checked before any work, plain-word summaries, packed vs
unpacked cost, values stored in shards used as defaults, and no torch where none is needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from cli_run import one_line, run
from media import make_samples, write_shards

SMALL = ["--seq-len", "64", "--patch-size", "8", "--max-patches", "48"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("messages")
    return write_shards(root / "img", make_samples(12, sizes=((32, 48), (40, 40), (16, 24))), per_shard=6)


# -- output paths: one line, exit 2, before any work --------------------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "show"])
def test_errors_file_in_a_missing_folder(command, shards, tmp_path, capsys):
    target = tmp_path / "no" / "errors.jsonl"
    extra = ["--out", tmp_path / "s.png"] if command == "show" else []
    code, out, err = run(capsys, command, *shards, *SMALL, *extra, "--errors", target)
    assert code == 2 and out == ""
    assert one_line(err, command).endswith(f"--errors {target}: the folder {target.parent} does not exist")
    assert not (tmp_path / "s.png").exists()


def test_errors_file_that_is_a_folder_or_cannot_be_written(shards, tmp_path, capsys):
    code, _, err = run(capsys, "stats", *shards, *SMALL, "--errors", tmp_path)
    assert code == 2 and one_line(err, "stats").endswith(f"--errors {tmp_path}: is a folder; give a file name")
    code, _, err = run(capsys, "stats", *shards, *SMALL, "--errors", "/proc/patchpack-errors.jsonl")
    assert code == 2 and "--errors /proc/patchpack-errors.jsonl: cannot write it" in one_line(err, "stats")


def test_report_folder_that_cannot_be_written_is_refused_before_the_run(shards, capsys, monkeypatch):
    import patchpack.cli.stats as stats_command

    monkeypatch.setattr(stats_command, "_in_process", lambda *a: pytest.fail("the run started"))
    code, _, err = run(capsys, "stats", *shards, *SMALL, "--report", "/proc/patchpack-report")
    assert code == 2 and "--report /proc/patchpack-report: cannot write there" in one_line(err, "stats")


def test_show_into_an_existing_folder_writes_inside_it(shards, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    code, out, _ = run(capsys, "show", *shards, *SMALL, "--out", folder, "--batches", "2", "--batch-size", "1")
    assert code == 0
    assert f"wrote {folder / 'show.png'} " in out and f"wrote {folder / 'show-1.png'} " in out
    assert (folder / "show.png").is_file() and (folder / "show-1.png").is_file()
    assert not (tmp_path / "pictures.png").exists()


def test_show_refuses_a_name_it_cannot_draw_to(shards, tmp_path, capsys):
    code, _, err = run(capsys, "show", *shards, *SMALL, "--out", tmp_path / "x.v1")
    assert code == 2 and "give a picture file ending in .png" in one_line(err, "show")


def test_show_packs_small_data_from_a_small_buffer(shards, tmp_path, capsys):
    from patchpack.cli.show import SHOW_BUFFER

    code, out, _ = run(capsys, "show", *shards, *SMALL, "--out", tmp_path / "a.png")
    assert code == 0 and f"buffer of {SHOW_BUFFER} examples" in out
    code, out, _ = run(capsys, "show", *shards, *SMALL, "--out", tmp_path / "b.png", "--buffer-size", "1024")
    assert code == 0 and "buffer of" not in out


def test_config_file_mistakes_are_one_line_with_close_names(shards, tmp_path, capsys):
    bad = tmp_path / "run.toml"
    bad.write_text("[pack]\nseq_lne = 64\n")
    code, _, err = run(capsys, "stats", *shards, "--config", bad)
    assert code == 2
    assert one_line(err, "stats").endswith(f"--config {bad}: unknown option 'pack.seq_lne'; did you mean 'pack.seq_len'?")
    bad.write_text("[pack]\nseq_len = 32\n[fit]\npatch_size = 8\nmax_patches = 48\n")
    code, _, err = run(capsys, "stats", *shards, "--config", bad)
    assert code == 2 and f"pack.seq_len = 32 in {bad} is below the largest example" in one_line(err, "stats")
    code, out, _ = run(capsys, "stats", *shards, "--config", bad, "--seq-len", "64", "--json")  # flags win
    assert code == 0 and json.loads(out)["examples"] == 12


# -- what a person reads -----------------------------------------------------------------------------------------


def test_the_summary_puts_packed_and_unpacked_cost_side_by_side(shards, capsys):
    code, out, _ = run(capsys, "stats", *shards, *SMALL, "--json")
    d = json.loads(out)
    cost = d["cost"]
    assert cost["packed"]["token_slots"] == d["sequences"] * 64 == d["capacity"]
    assert cost["one_per_sequence"] == {"sequences": 12, "token_slots": 12 * 64, "padding": 1 - d["tokens"] / (12 * 64),
                                        "times_packed": 12 * 64 / d["capacity"]}
    assert cost["padded_to_budget"]["token_slots"] == 12 * 48
    assert d["data_wait"]["batches"] >= 1
    code, out, _ = run(capsys, "stats", *shards, *SMALL)
    text = re.sub(r"(\d),(\d)", r"\1\2", out)
    assert f"one example per 64-token sequence: 12 sequences, {12 * 64} token slots" in text
    assert f"each example padded to the 48-token budget: 12 sequences, {12 * 48} token slots" in text
    assert "arrivals" not in text and "an example stays in the packer while" in text
    assert "batches came      every" in text


def test_stored_shards_supply_their_patch_size_and_budget(shards, tmp_path, capsys):
    out = tmp_path / "pre"
    assert run(capsys, "preprocess", *shards, "--out", out, "--no-progress", "--patch-size", "8",
               "--max-patches", "48")[0] == 0
    code, text, err = run(capsys, "stats", out, "--json")  # no budget flag: the shards' own
    assert code == 0 and json.loads(text)["examples"] == 12, err
    code, text, _ = run(capsys, "config", out)
    assert "patch_size = 8" in text and "max_patches = 48" in text
    code, _, err = run(capsys, "stats", out, "--patch-size", "16")  # a flag still wins, and is refused
    assert code == 2 and "made with patch size 8" in one_line(err, "stats")


# -- torch only where needed -------------------------------------------------------------------------------------


def _loaded_after(argv: list[str]) -> tuple[int, bool, bool]:
    """``(exit code, torch imported, numpy imported)`` after ``patchpack ARGV`` in a fresh process."""
    code = ("import sys\nfrom patchpack.cli import main\ncode = main(%r)\n"
            "print(code, 'torch' in sys.modules, 'numpy' in sys.modules)" % [str(a) for a in argv])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rc, torch, numpy = done.stdout.split()[-3:]
    return int(rc), torch == "True", numpy == "True"


def test_commands_that_need_no_torch_never_import_it(shards, tmp_path):
    runs = [
        ["stats", *shards, *SMALL, "--report", tmp_path / "rep", "--errors", tmp_path / "e.jsonl"],
        ["preprocess", *shards, "--out", tmp_path / "pre", *SMALL[2:], "--no-progress"],
        ["simulate", "--examples", "500", "--seq-len", "256"],
        ["config", "--seq-len", "512"],
    ]
    for argv in runs:
        assert _loaded_after(argv)[:2] == (0, False), argv
    assert _loaded_after(["stats", *shards, *SMALL, "--workers", "1"])[:2] == (0, True)  # the DataLoader


def test_mistakes_are_said_before_numpy_loads(shards):
    for argv in (["stats", "/no/such.tar"], ["stats", *shards, "--seq-len", "x"], ["show", *shards, "--frames", "0"]):
        assert _loaded_after(argv) == (2, False, False), argv


def test_preprocess_says_a_sampled_fit_is_frozen_at_epoch_0(tmp_path, capsys):
    from media import make_samples, write_shards
    from patchpack.cli import main

    urls = write_shards(tmp_path / "src", make_samples(3, sizes=((32, 32),)), per_shard=3)
    code = main(["preprocess", *urls, "--out", str(tmp_path / "out"), "--no-progress", "--patch-size", "8",
                 "--max-patches", "16", "--fit-mode", "side-uniform", "--fit-side-min", "16"])
    err = capsys.readouterr().err
    assert code == 0 and "draws each example's resolution once, for epoch 0" in err
    main(["preprocess", *urls, "--out", str(tmp_path / "native"), "--no-progress", "--patch-size", "8",
          "--max-patches", "16"])
    assert "epoch 0" not in capsys.readouterr().err
