"""A user's own mistakes fail loudly: exit code and one line (or the first records and a hint)."""

import json

import pytest

from cli_run import one_line, run
from media import BROKEN, make_samples, write_shards
from patchpack.cli import checks
from patchpack.cli import train as train_command
from patchpack.errors import ErrorRecord
from videos import encode_video

SMALL = ["--seq-len", "64", "--patch-size", "8", "--max-patches", "48"]
TINY_MODEL = ["--num-classes", "5", "--steps", "1", "--dim", "16", "--depth", "1", "--heads", "1", "--log-every", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    unlabelled = [{k: v for k, v in s.items() if k != "cls"} for s in make_samples(6, prefix="u")]
    high = make_samples(4, prefix="h")
    for i, s in enumerate(high):
        s["cls"] = str(40 + i).encode()
    clips = [{"__key__": f"v{i}", "mp4": encode_video(4, 32, 48), "cls": b"1"} for i in range(3)]
    (root / "empty").mkdir()
    return {
        "root": root,
        "img": write_shards(root / "img", make_samples(12, sizes=((32, 48), (40, 40))), per_shard=6),
        "nolab": write_shards(root / "nolab", unlabelled, per_shard=6),
        "hilab": write_shards(root / "hilab", high, per_shard=4),
        "vid": write_shards(root / "vid", clips, per_shard=3),
        "empty": str(root / "empty"),
    }


def command_args(command, data, tmp_path):
    return {
        "stats": ["--no-progress", *SMALL],
        "show": ["--out", tmp_path / "show.png", *SMALL],
        "preprocess": ["--out", tmp_path / "out", "--no-progress", "--patch-size", "8", "--max-patches", "48"],
        "train": [*TINY_MODEL, "--seq-len", "64", "--patch-size", "8", "--max-patches", "48"],
    }[command]


# -- sources that cannot be opened: refused before anything runs ---------------------------------


@pytest.mark.parametrize("command", ["stats", "show", "preprocess", "train"])
def test_wrong_path_is_refused_in_one_line(command, data, tmp_path, capsys):
    missing = data["root"] / "no-such-shard.tar"
    code, _, err = run(capsys, command, missing, *command_args(command, data, tmp_path))
    assert code == 2
    assert "no-such-shard.tar: no such file or folder" in one_line(err, command)
    assert not (tmp_path / "out").exists()  # preprocess wrote nothing, marked nothing complete


def test_empty_folder_and_brace_pattern_matching_nothing(data, capsys):
    code, _, err = run(capsys, "stats", data["empty"], "--no-progress")
    assert code == 2 and "the folder holds no files" in one_line(err, "stats")
    pattern = str(data["root"] / "img" / "train-{000000..000002}.tar")
    code, _, err = run(capsys, "stats", pattern, "--no-progress")
    assert code == 2 and "none of the 3 files it names exist" in one_line(err, "stats")
    partial = data["img"][0].replace("000000", "{000000..000002}")  # 2 shards exist, 1 does not
    code, _, err = run(capsys, "stats", partial, "--no-progress")
    assert code == 2 and "1 of the 3 files" in one_line(err, "stats")


# -- nothing came through: exit 1, the first records and a hint ---------------------------------


@pytest.mark.parametrize("command", ["stats", "show", "preprocess"])
def test_video_shards_without_video_options(command, data, tmp_path, capsys):
    code, _, err = run(capsys, command, *data["vid"], *command_args(command, data, tmp_path))
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == f"patchpack {command}: error: no example came through (3 error records: no-media=3)"
    assert lines[1].startswith("  v0 [no-media] no image member")
    assert "hint: these shards hold mp4 members: pass --frames N to decode videos" in lines


def test_video_shards_with_frames_pass(data, capsys):
    code, out, _ = run(capsys, "stats", *data["vid"], "--no-progress", "--json", "--seq-len", "128",
                       "--patch-size", "8", "--max-patches", "48", "--frames", "4")
    assert code == 0 and json.loads(out)["examples"] == 3


def test_stats_success_still_exits_zero(data, capsys):
    code, out, err = run(capsys, "stats", *data["img"], "--no-progress", "--json", *SMALL)
    assert code == 0 and json.loads(out)["examples"] == 12 and err == ""


def test_failing_pipe_url_is_a_record_and_exit_1(capsys):
    code, _, err = run(capsys, "stats", "pipe:false", "--no-progress", *SMALL)
    assert code == 1 and "Traceback" not in err
    lines = err.splitlines()
    assert lines[0] == "patchpack stats: error: no example came through (1 error records: unreadable=1)"
    assert lines[1] == "  pipe:false [unreadable] cannot open shard: PipeError: pipe command 'false': exit 1"
    assert "hint: check the paths and urls: a source that cannot be opened gives no sample" in lines


def test_report_outcome_codes(capsys):
    gone = ErrorRecord("x.tar", "x.tar", "source", "unreadable", "cannot open shard: [Errno 2] No such file")
    bad = ErrorRecord("k1", "a.tar", "decode", "corrupt", "bytes do not decode")
    assert checks.report_outcome("stats", 5, [bad]) == 0
    assert checks.report_outcome("stats", 5, [bad, gone]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "patchpack stats: error: 1 source(s) could not be opened (2 error records: corrupt=1, unreadable=1)"
    assert err[1].startswith("  x.tar [unreadable] cannot open shard")
    assert checks.report_outcome("stats", 0, []) == 1
    assert "hint: the sources hold no samples" in capsys.readouterr().err
    assert checks.report_outcome("stats", 0, [bad], seq_len=64) == 1
    assert "hint: every sample failed" in capsys.readouterr().err


# -- train -----------------------------------------------------------------------------------------


def test_train_refuses_unlabelled_shards(data, capsys):
    code, _, err = run(capsys, "train", *data["nolab"], *TINY_MODEL)
    line = one_line(err, "train")
    assert code == 2 and "no labels found in the first 6 samples" in line and "'cls' member" in line


def test_train_json_labels_need_label_field(tmp_path, capsys):
    samples = make_samples(6, sizes=((32, 32),))
    for i, s in enumerate(samples):
        del s["cls"]
        s["json"] = json.dumps({"y": i % 5}).encode()
    urls = write_shards(tmp_path, samples, per_shard=6)
    small = ["--seq-len", "64", "--patch-size", "8", "--max-patches", "48"]
    code, _, err = run(capsys, "train", *urls, *TINY_MODEL, *small)
    assert code == 2 and "--label-field json:<key>" in one_line(err, "train")
    code, out, err = run(capsys, "train", *urls, *TINY_MODEL, *small, "--label-field", "json:y")
    assert code == 0, err


def test_train_refuses_labels_above_num_classes(data, capsys):
    code, _, err = run(capsys, "train", *data["hilab"], *TINY_MODEL)
    assert code == 2
    assert "label 43 of sample 'h00003' is out of range for --num-classes 5" in one_line(err, "train")


def test_train_label_guard_catches_labels_the_first_samples_did_not_show(data, capsys, monkeypatch):
    monkeypatch.setattr(train_command, "_check_labels", lambda *a: None)  # as if the bad labels came later
    code, _, err = run(capsys, "train", *data["hilab"], *TINY_MODEL, "--seq-len", "256")
    line = one_line(err, "train")
    assert code == 2 and "is out of range for --num-classes 5" in line and "IndexError" not in err


def test_train_where_every_sample_fails(tmp_path, capsys):
    bad = [{"__key__": f"bad-{n}", ext: payload, "cls": b"1"} for n, (ext, payload, _) in sorted(BROKEN.items())]
    urls = write_shards(tmp_path, bad, per_shard=100)
    code, out, err = run(capsys, "train", *urls, *TINY_MODEL, "--seq-len", "64", "--patch-size", "8",
                         "--max-patches", "48")
    assert code == 1
    assert err.splitlines()[0].startswith("patchpack train: error: no example came through")
    assert "hint: every sample failed; the records above say why" in err


def test_train_on_video_without_frames(data, capsys):
    code, _, err = run(capsys, "train", *data["vid"], *TINY_MODEL)
    assert code == 2 and "pass --frames N" in one_line(err, "train")


def test_train_refuses_a_seq_len_below_the_budget(data, capsys, tmp_path):
    code, _, err = run(capsys, "train", *data["img"], *TINY_MODEL, "--seq-len", "16", "--patch-size", "8",
                       "--max-patches", "48", "--out", str(tmp_path / "run"))
    assert code == 2 and "--seq-len 16 is below the largest example the fit allows (48 tokens" in one_line(err, "train")


# -- configuration traps ------------------------------------------------------------------------------


def test_seq_len_below_the_budget_is_refused(data, capsys):
    code, _, err = run(capsys, "stats", *data["img"], "--no-progress", "--seq-len", "32", "--patch-size", "8",
                       "--max-patches", "48")
    line = one_line(err, "stats")
    assert code == 2 and "--seq-len 32 is below the largest example the fit allows (48 tokens" in line
    code, _, err = run(capsys, "stats", *data["vid"], "--no-progress", *SMALL, "--frames", "4")
    assert code == 2 and "(96 tokens: --max-patches 48 per frame, --frames 4, --tubelet 2)" in one_line(err, "stats")
    code, _, err = run(capsys, "preprocess", *data["img"], "--out", data["root"] / "packed", "--packed",
                       "--no-progress", *SMALL[:2], "--max-patches", "256")
    assert code == 2 and "--seq-len 64 is below" in one_line(err, "preprocess")


def test_stored_shards_made_with_other_geometry(data, tmp_path, capsys):
    out = tmp_path / "pre"
    assert run(capsys, "preprocess", *data["img"], "--out", out, "--no-progress", "--patch-size", "8",
               "--max-patches", "48")[0] == 0
    code, _, err = run(capsys, "stats", out, "--no-progress", "--patch-size", "16")
    line = one_line(err, "stats")
    assert code == 2 and "made with patch size 8, tubelet 1; this loader asks for patch size 16" in line
    code, _, err = run(capsys, "stats", out, "--no-progress", "--seq-len", "64", "--patch-size", "8",
                       "--max-patches", "16")
    line = one_line(err, "stats")
    assert code == 2 and "budget of 48 patches per frame" in line and "asks for --max-patches 16" in line
    code, out_json, _ = run(capsys, "stats", out, "--no-progress", "--json", *SMALL)
    assert code == 0 and json.loads(out_json)["examples"] == 12
    loose = tmp_path / "loose"  # the .arrow files without their manifest: a plain folder
    loose.mkdir()
    for shard in out.glob("*.arrow"):
        (loose / shard.name).write_bytes(shard.read_bytes())
    code, _, err = run(capsys, "stats", loose, "--no-progress", *SMALL)
    assert code == 1 and "hint: a folder of .arrow files without its manifest.json" in err


def test_preprocess_into_another_runs_folder_is_one_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "preprocess", *data["img"], "--out", out, "--no-progress", "--patch-size", "8")[0] == 0
    code, _, err = run(capsys, "preprocess", *data["img"], "--out", out, "--no-progress", "--patch-size", "16")
    assert code == 2 and "another configuration" in one_line(err, "preprocess")


# -- bad option values: one line, no traceback --------------------------------------------------------

BAD_VALUES = [
    ("stats", ["--patch-size", "0"], "argument --patch-size: must be an integer >= 1, got 0"),
    ("stats", ["--workers", "-1"], "argument --workers: must be an integer >= 0, got -1"),
    ("stats", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    ("stats", ["--seq-len", "0"], "argument --seq-len: must be an integer >= 1"),
    ("stats", ["--buffer-size", "0"], "argument --buffer-size: must be an integer >= 1"),
    ("stats", ["--drop-rate", "1.5"], "argument --drop-rate: must be a rate in [0, 1), got 1.5"),
    ("stats", ["--max-per-seq", "0"], "argument --max-per-seq: must be an integer >= 1"),
    ("stats", ["--limit", "0"], "argument --limit: must be an integer >= 1"),
    ("stats", ["--tubelet", "0"], "argument --tubelet: must be an integer >= 1"),
    ("stats", ["--fps", "-2"], "argument --fps: must be a number > 0"),
    ("stats", ["--seq-len", "ten"], "argument --seq-len: expected an integer >= 1, got 'ten'"),
    ("stats", ["--max-patches", "0"], "argument --max-patches: must be an integer >= 1, got 0"),
    ("stats", ["--frames", "0"], "argument --frames: must be an integer >= 1, got 0"),
    ("stats", ["--drop-kind", "custom"], "argument --drop-kind: invalid choice: 'custom'"),
    ("stats", ["--fit-mode", "side-uniform", "--fit-side-min", "300"], "--fit-side-min 300"),
    ("stats", ["--drop-schedule", "linear"], "schedule"),
    ("simulate", ["--examples", "-3"], "argument --examples: must be an integer >= 1, got -3"),
    ("simulate", ["--patch-size", "0"], "argument --patch-size: must be an integer >= 1"),
    ("simulate", ["--seq-len", "8", "--max-patches", "4"],
     "the largest source side (45 px = --patch-size 16 x sqrt(--seq-len 8))"),
    ("simulate", ["--seq-len", "8"], "--seq-len 8 is below the largest example the fit allows (256 tokens"),
    ("simulate", ["--source-side-max", "10"], "the largest source side (10 px) is below --source-side-min 64"),
    ("simulate", ["--max-wait", "3"], "--max-wait must be at least --buffer-size"),
    ("simulate", ["--seq-len", "99999999999"], "one batch would hold"),
    ("preprocess", ["--workers", "-1"], "argument --workers: must be an integer >= 0, got -1"),
    ("preprocess", ["--patch-size", "0"], "argument --patch-size: must be an integer >= 1"),
    ("preprocess", ["--fit-mode", "bogus"], "argument --fit-mode: invalid choice: 'bogus'"),
    ("train", ["--num-classes", "0"], "argument --num-classes: must be an integer >= 1, got 0"),
    ("train", ["--steps", "0"], "argument --steps: must be an integer >= 1"),
    ("train", ["--lr", "-1"], "argument --lr: must be a number > 0"),
    ("train", ["--heads", "5"], "--dim 16 is not divisible by --heads 5"),
    ("train", ["--attention", "bogus"], "unknown attention backend 'bogus'"),
    ("train", ["--posemb", "bogus"], "unknown positional embedding 'bogus'"),
    ("train", ["--device", "gpu7"], "--device 'gpu7'"),
    ("show", ["--rows", "0"], "argument --rows: must be an integer >= 1"),
    ("show", ["--batches", "0"], "argument --batches: must be an integer >= 1"),
]


@pytest.mark.parametrize("command,extra,message", BAD_VALUES, ids=[f"{c}{' '.join(e)}" for c, e, _ in BAD_VALUES])
def test_bad_values_are_one_line(command, extra, message, data, tmp_path, capsys):
    base = {
        "stats": [*data["img"], "--no-progress"],
        "simulate": ["--seq-len", "256", "--examples", "50"],
        "preprocess": [*data["img"], "--out", tmp_path / "out", "--no-progress"],
        "train": [*data["img"], *TINY_MODEL],
        "show": [*data["img"], "--out", tmp_path / "show.png"],
    }[command]
    code, _, err = run(capsys, command, *base, *extra)
    assert code == 2
    assert message in one_line(err, command)
    assert "Traceback" not in err


def test_member_cap_from_the_command_line_reports_every_member_over_it(data, capsys, tmp_path):
    code, _, err = run(capsys, "stats", *data["img"], "--no-progress", *SMALL, "--max-member-bytes", "16")
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[0] == "patchpack stats: error: no example came through (12 error records: oversize-member=12)"
    assert "hint: members are larger than --max-member-bytes (default 256M): raise it if they are genuine media" in err
    code, _, err = run(capsys, "preprocess", *data["img"][:1], "--out", tmp_path / "o", "--no-progress",
                       "--patch-size", "8", "--max-patches", "48", "--max-member-bytes", "16")
    assert code == 1 and "oversize-member=6" in err.splitlines()[0]


def test_decode_threads_from_the_command_line_give_the_same_stats(data, capsys):
    outs = []
    for threads in ("1", "2"):
        code, out, _ = run(capsys, "stats", *data["img"], "--no-progress", "--json", *SMALL, "--decode-threads", threads,
                           "--buffer-bytes", "1M")
        stats = json.loads(out)
        assert code == 0 and stats["examples"] == 12
        stats.pop("data_wait")  # timings
        outs.append(stats)
    assert outs[0] == outs[1]


def test_bad_byte_size_is_one_line(capsys):
    code, _, err = run(capsys, "stats", "x.tar", "--max-member-bytes", "lots")
    assert code == 2 and "--max-member-bytes: expected a byte size such as 268435456, 256M or 1G, got 'lots'" in err


def test_a_brace_range_too_large_to_list_is_one_line(capsys):
    code, _, err = run(capsys, "stats", "/nowhere/x-{000000000..999999999}.tar", "--no-progress")
    assert code == 2
    assert one_line(err, "stats").endswith("expands to more than 1,000,000 urls; check the brace ranges")


def test_control_characters_from_the_data_never_reach_the_terminal(tmp_path, capsys):
    """A member name holding an escape sequence is printed escaped in the records listed."""
    evil = "x\x1b]0;owned\x07\x1b[2J"
    urls = write_shards(tmp_path, [{"__key__": evil, "jpg": b"this is not an image at all\n", "cls": b"0"}], per_shard=1)
    code, _, err = run(capsys, "stats", *urls, "--no-progress", *SMALL)
    assert code == 1 and "\x1b" not in err and "\x07" not in err
    assert "  x\\x1b]0;owned\\x07\\x1b[2J [not-media]" in err


@pytest.mark.parametrize("command,flag", [("preprocess", "--out"), ("train", "--out"), ("stats", "--report")])
@pytest.mark.parametrize("below", [False, True])
def test_an_output_folder_that_is_a_file_is_one_line(data, capsys, tmp_path, command, flag, below):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "sub" if below else blocker
    extra = {"preprocess": ["--no-progress"], "train": TINY_MODEL, "stats": ["--no-progress"]}[command]
    code, _, err = run(capsys, command, *data["img"], *extra, flag, target)
    assert code == 2
    assert one_line(err, command).endswith(f"{flag} {target}: {blocker} is a file, not a folder")
    assert blocker.read_text() == "x"


def test_library_preprocess_refuses_a_file_as_its_folder(data, tmp_path):
    from patchpack.offline.engines import preprocess

    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        preprocess(data["img"], tmp_path / "f", progress=False)


def test_an_output_folder_that_cannot_be_written_is_one_line(data, capsys, tmp_path, monkeypatch):
    import patchpack.offline.engines as engines

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(engines, "preprocess", refuse)
    code, _, err = run(capsys, "preprocess", *data["img"], "--out", tmp_path / "ro" / "out", "--no-progress")
    assert code == 2 and one_line(err, "preprocess").endswith(f"--out {tmp_path / 'ro' / 'out'}: Permission denied")
