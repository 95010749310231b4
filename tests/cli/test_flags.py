"""One name, one default and one help per idea across every command; each flag reaches its loader option."""

from __future__ import annotations

import argparse
import re

import pytest

from patchpack.cli import COMMANDS, build_parser
from patchpack.cli import flags as F
from patchpack.cli.options import in_user_words, loader_config
from patchpack.config import LoaderConfig

#: spellings replaced by one name per idea; none may come back
RETIRED = ("--max-examples", "--emax", "--buffer", "--drop", "--drop-max", "--video", "--video-frames", "--quiet",
           "--no-verify", "--side-min", "--side-max")


def _sub(command: str) -> argparse.ArgumentParser:
    return build_parser(command)._subparsers._group_actions[0].choices[command]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


#: the one idea of a shared flag, given several values: ``eval --max-patches 64,128,256`` evaluates at
#: each of those patch budgets (the NaViT paper's one model at many resolutions)
SEVERAL_VALUES = {("eval", "--max-patches")}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_takes_the_shared_flags_from_the_one_table(command):
    """Introspect the parser: a flag named like a shared one is the shared one (same dest, type,
    choices, default and help), never a command's own copy, and no retired spelling is left."""
    found = _options(_sub(command))
    for name, action in found.items():
        assert name not in RETIRED, f"{command} still takes {name}"
        if (command, name) in SEVERAL_VALUES:
            assert action.metavar == "N,N,..." and "budget" in action.help
            continue
        if name in {f.name for f in F.FLAGS} or name.removeprefix("--no-") in {f.name[2:] for f in F.FLAGS if f.switch}:
            shared = getattr(action, "shared_flag", None)
            assert shared is not None, f"{command} defines its own {name}; use flags.add_flags"
            assert action.dest == shared.dest and action.help == shared.help
            expected = argparse.SUPPRESS if shared.key is not None else shared.default
            assert action.default == expected, f"{command} {name} has a default of its own"
            if not shared.switch and shared.type is not None:
                assert action.type is shared.type
    dests = [a.dest for a in _sub(command)._actions if a.option_strings]
    assert len(dests) == len(set(dests)), f"{command}: two flags share a destination"


def test_flag_names_and_keys_are_unique_and_follow_one_rule():
    names = [f.name for f in F.FLAGS]
    keys = [f.key for f in F.FLAGS if f.key is not None]
    assert len(names) == len(set(names)) and len(keys) == len(set(keys))
    for f in F.FLAGS:  # drop and fit flags are --drop-<field> / --fit-<field>
        section, _, field = (f.key or "").rpartition("__")
        if section == "drop":
            assert f.name == "--drop-" + field.replace("_", "-")
        if section == "fit" and field not in ("patch_size", "max_patches"):
            assert f.name == "--fit-" + field.replace("_", "-")
    assert "custom" not in F.flag("--drop-kind").choices()  # needs a Python function


@pytest.mark.parametrize("command", ["stats", "show", "preprocess", "simulate", "config"])
def test_help_shows_every_default_from_the_loader_config(command):
    parser = _sub(command)
    for action in parser._actions:
        f = getattr(action, "shared_flag", None)
        if f is None or f.key is None:
            continue
        line = parser._get_formatter()._expand_help(action)
        assert line.startswith(f.help) and f"(default {f.show(F.loader_default(f.key))}" in line, (command, f.name)
    assert "(default 1024; patchpack shards: theirs)" in " ".join(parser.format_help().split())  # --seq-len
    assert F.loader_default("pack__seq_len") == LoaderConfig().pack.seq_len == 1024


def _value_for(f: F.Flag):
    """A valid value other than the default for flag ``f``, as text and as the config holds it."""
    special = {"--packer": ("first-fit", "first-fit"), "--fit-mode": ("side-uniform", "side-uniform"),
               "--drop-kind": ("beta", "beta"), "--drop-schedule": ("linear", "linear"), "--verify": ("size", "size"),
               "--buffer-bytes": ("2M", 2 * 2**20), "--max-member-bytes": ("1M", 2**20),
               "--fields": ("txt,json:alt?", ("txt", "json:alt?")), "--label-field": ("json:y", "json:y"),
               "--text-field": ("txt", "txt"), "--image-column": ("img", "img"), "--errors": ("e.jsonl", "e.jsonl"),
               "--drop-rate": ("0.25", 0.25), "--drop-rate-max": ("0.6", 0.6), "--drop-beta-mean": ("0.2", 0.2),
               "--fit-truncnorm-mean": ("0.25", 0.25), "--drop-res-intercept": ("0.1", 0.1),
               "--max-wait": ("4096", 4096), "--seq-len": ("4096", 4096), "--frames": ("4", 4),
               "--fit-side-min": ("32", 32), "--fit-side-max": ("200", 200), "--packed-shards": ("repack", "repack")}
    if f.name in special:
        return special[f.name]
    if f.switch:
        return None, True
    return "3", (3.0 if "float" in f.type.__name__ or f.type is F.number else 3)


LOADER_FLAGS = [f for f in F.FLAGS if f.key is not None]


@pytest.mark.parametrize("f", LOADER_FLAGS, ids=[f.name for f in LOADER_FLAGS])
def test_every_loader_flag_reaches_its_option(f):
    text, value = _value_for(f)
    argv = [f.name] if text is None else [f.name, text]
    if f.name in ("--fit-mode", "--fit-side-min", "--fit-side-max", "--fit-truncnorm-mean", "--fit-truncnorm-std"):
        argv += ["--fit-mode", "side-truncnorm"] if f.name != "--fit-mode" else []
    if f.name == "--drop-schedule":
        argv += ["--drop-schedule-epochs", "2"]
    if f.name == "--text-field":
        argv += ["--fields", "txt"]
    if f.group == "video":
        argv += ["--seq-len", "8192"]
    args = build_parser("config").parse_args(["config", *argv])
    cfg = loader_config(args)
    obj = cfg
    for part in f.key.split("__"):
        obj = getattr(obj, part)
    assert obj == value


def test_flags_not_typed_leave_the_config_alone():
    args = build_parser("stats").parse_args(["stats", "x.tar"])
    assert F.given(args) == {} and loader_config(args) == LoaderConfig()
    assert args.workers == 0 and args.json is False and args.progress is None


def test_a_drop_rate_alone_means_constant_dropping():
    cfg = loader_config(build_parser("stats").parse_args(["stats", "x.tar", "--drop-rate", "0.2"]))
    assert (cfg.drop.kind, cfg.drop.rate) == ("constant", 0.2)
    cfg = loader_config(build_parser("stats").parse_args(["stats", "x.tar", "--drop-kind", "beta", "--drop-rate-max",
                                                          "0.4"]))
    assert (cfg.drop.kind, cfg.drop.rate_max) == ("beta", 0.4)


def test_video_is_switched_on_by_any_video_flag():
    assert loader_config(build_parser("stats").parse_args(["stats", "x.tar"])).video is None
    cfg = loader_config(build_parser("stats").parse_args(["stats", "x.tar", "--tubelet", "4", "--seq-len", "4096"]))
    assert (cfg.video.frames, cfg.video.tubelet) == (16, 4)  # the video defaults, tubelet typed


@pytest.mark.parametrize("text,value", [("1", 1), ("4096", 4096), ("512k", 512 * 2**10), ("64M", 64 * 2**20),
                                        ("64MiB", 64 * 2**20), ("1G", 2**30), ("1.5M", 3 * 2**19)])
def test_byte_sizes_take_binary_units(text, value):
    assert F.byte_size(text) == value


@pytest.mark.parametrize("text", ["0", "-1M", "M", "x", "inf", "nan", "1Q"])
def test_bad_byte_sizes_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        F.byte_size(text)


@pytest.mark.parametrize("message,expected", [
    ("seq_len=32 is below the largest example (48 tokens: max_patches=48 per frame, frames=4, tubelet=2); raise "
     "seq_len to 48", "--seq-len 32 is below the largest example (48 tokens: --max-patches 48 per frame, --frames 4, "
     "--tubelet 2); raise --seq-len to 48"),
    ("pack.max_per_seq=3 exceeds max_per_seq=2", "--max-per-seq 3 exceeds --max-per-seq 2"),
    ("load them with max_patches=None", "load them with --max-patches none"),
    ("need 0 < side_min <= side_max, got side_min=64", "need 0 < --fit-side-min <= --fit-side-max, got --fit-side-min 64"),
    ("unknown fit mode 'x'; a mode=x here", "unknown fit mode 'x'; a --fit-mode x here"),
    ("folder /data/my_shards is missing", "folder /data/my_shards is missing"),  # paths are not options
])
def test_config_messages_are_said_with_the_flags(message, expected):
    assert in_user_words(message) == expected


def test_an_option_the_file_set_is_named_as_the_file_has_it():
    origins = {"seq_len": ("file", "pack__seq_len"), "max_patches": ("flag", "fit__max_patches")}
    text = in_user_words("seq_len=32 is below 48 (max_patches=48): raise seq_len", origins, "run.toml")
    assert text == "pack.seq_len = 32 in run.toml is below 48 (--max-patches 48): raise pack.seq_len in run.toml"
    assert not re.search(r"\b[a-z]+_[a-z_]+=", text)
