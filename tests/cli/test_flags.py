"""One flag per concept across commands; old spellings are hidden aliases of the new ones."""

from __future__ import annotations

import argparse

import pytest

from patchpack.cli import build_parser
from patchpack.cli.flags import byte_size, drop_config, reading_options, video_config
from patchpack.config import LoaderConfig

LOADING = ("stats", "show", "preprocess", "train")


def _parse(command: str, *argv: str):
    extra = {"simulate": ["--seq-len", "64"], "train": ["x.tar", "--num-classes", "2"], "preprocess": ["x.tar", "--out", "o"]}
    base = extra.get(command, ["x.tar"])
    return build_parser(command).parse_args([command, *base, *argv])


@pytest.mark.parametrize("command", LOADING + ("simulate",))
def test_shared_flags_exist_everywhere(command):
    argv = ["--seq-len", "128", "--max-per-seq", "5", "--buffer-size", "64"]  # later --seq-len wins
    args = _parse(command, *argv)
    assert (args.seq_len, args.max_per_seq, args.buffer_size) == (128, 5, 64)
    help_text = build_parser(command)._subparsers._group_actions[0].choices[command].format_help()
    for old in ("--max-examples", "--emax", "--buffer ", "--video-frames", "--drop "):
        assert old not in help_text


@pytest.mark.parametrize("command", LOADING + ("simulate",))
def test_old_spellings_are_hidden_aliases(command):
    args = _parse(command, "--max-examples", "7", "--buffer", "32")
    assert args.max_per_seq == 7 and args.buffer_size == 32


@pytest.mark.parametrize("command", LOADING)
def test_video_is_switched_on_by_frames(command):
    assert video_config(_parse(command)) is None
    cfg = video_config(_parse(command, "--frames", "6", "--tubelet", "3"))
    assert (cfg.frames, cfg.tubelet) == (6, 3)
    old = video_config(_parse(command, "--video-frames", "4"))
    assert old.frames == 4
    assert video_config(_parse(command, "--video-frames", "0")) is None  # the old "images only"
    assert video_config(_parse(command, "--video")).frames == 16  # the old preprocess switch: defaults


def test_drop_flags_and_the_old_drop_spellings():
    assert drop_config(_parse("stats", "--drop-rate", "0.2")).kind == "constant"
    assert drop_config(_parse("show", "--drop", "0.3")).rate == 0.3  # a rate there
    assert drop_config(_parse("preprocess", "--drop", "0.1")).rate == 0.1
    sim = drop_config(_parse("simulate", "--drop", "beta"))  # a kind in simulate
    assert sim.kind == "beta"
    assert drop_config(_parse("simulate")).kind == "none"
    const = drop_config(_parse("simulate", "--drop-kind", "constant"))
    assert const.kind == "constant" and const.rate == 0.25


@pytest.mark.parametrize("text,value", [("1", 1), ("4096", 4096), ("512k", 512 * 2**10), ("64M", 64 * 2**20),
                                        ("64MiB", 64 * 2**20), ("1G", 2**30), ("1.5M", 3 * 2**19)])
def test_byte_sizes_take_binary_units(text, value):
    assert byte_size(text) == value


@pytest.mark.parametrize("text", ["0", "-1M", "M", "x", "inf", "nan", "1Q"])
def test_bad_byte_sizes_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size(text)


@pytest.mark.parametrize("command", ("stats", "train"))
def test_reading_flags_reach_the_loader_options(command):
    config = LoaderConfig()
    assert reading_options(_parse(command)) == {
        "decode_threads": config.decode_threads, "buffer_bytes": config.pack.buffer_bytes,
        "max_member_bytes": config.max_member_bytes, "verify": config.verify}
    args = _parse(command, "--decode-threads", "3", "--buffer-bytes", "none", "--max-member-bytes", "2M",
                  "--verify", "size")
    assert reading_options(args) == {"decode_threads": 3, "buffer_bytes": None, "max_member_bytes": 2 * 2**20,
                                     "verify": "size"}
    cfg = LoaderConfig().with_overrides(**reading_options(args))
    assert (cfg.decode_threads, cfg.pack.buffer_bytes, cfg.max_member_bytes, cfg.verify) == (3, None, 2**21, "size")


def test_preprocess_takes_the_member_cap_and_the_buffer_bytes():
    from patchpack.cli.preprocess import config_from_args

    args = _parse("preprocess", "--max-member-bytes", "1k", "--buffer-bytes", "8M", "--packed")
    cfg = config_from_args(args)
    assert (cfg.max_member_bytes, cfg.pack.buffer_bytes) == (1024, 8 * 2**20)
    assert cfg.to_dict()["max_member_bytes"] == 1024
    assert "max_member_bytes" not in config_from_args(_parse("preprocess")).to_dict()  # old manifests still match
    with pytest.raises(SystemExit):
        _parse("preprocess", "--decode-threads", "2")  # preprocessing workers are processes
