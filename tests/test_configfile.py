"""Loader config files: what ``patchpack config`` writes reads back to the same config and the same batches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

from patchpack.cli import build_parser, main
from patchpack.cli.options import loader_config
from patchpack.config import LoaderConfig
from patchpack.configfile import ConfigFileError, config_overrides, dump_config, load_config_file
from patchpack.decode.video.config import VideoConfig
from patchpack.drop import DropConfig

FLAGS = ["--seq-len", "128", "--patch-size", "8", "--max-patches", "48", "--batch-size", "2", "--buffer-size", "16",
         "--drop-kind", "beta", "--drop-rate-max", "0.4", "--fit-mode", "side-truncnorm", "--fit-side-min", "16",
         "--seed", "7", "--max-per-seq", "6", "--fields", "txt?", "--label-field", "cls"]


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_every_option_written_reads_back_equal(fmt, tmp_path):
    for cfg in (LoaderConfig(), LoaderConfig(video=VideoConfig(frames=4), augment=True, max_per_seq=5,
                                             drop=DropConfig(kind="constant", rate=1 / 3), errors_path="e.jsonl",
                                             fields=("txt", "json:alt?"), text_field="txt", num_classes=4)):
        path = _write(tmp_path / f"run.{fmt}", dump_config(cfg, fmt))
        assert load_config_file(path) == cfg


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(label=_TEXT, column=st.one_of(st.none(), _TEXT), rate=st.floats(0, 0.99), seed=st.integers(-2**40, 2**40),
       background=st.tuples(*[st.integers(0, 255)] * 3))
def test_hypothesis_toml_round_trip(tmp_path_factory, label, column, rate, seed, background):
    if label.strip().lower() in ("none", "json:") or label.startswith("json:") and len(label) == 5:
        label = "cls"
    cfg = LoaderConfig(label_field=label, image_column=column, seed=seed,
                       drop=DropConfig(kind="constant", rate=rate)).with_overrides(image__background=background)
    path = _write(tmp_path_factory.mktemp("rt") / "run.toml", dump_config(cfg))
    assert load_config_file(path) == cfg


def test_three_spellings_of_an_option_mean_the_same(tmp_path):
    nested = _write(tmp_path / "a.toml", "[pack]\nseq_len = 512\n[fit]\nmax_patches = 64\n")
    dunder = _write(tmp_path / "b.toml", "pack__seq_len = 512\nfit__max_patches = 64\n")
    bare = _write(tmp_path / "c.yaml", "seq_len: 512\nmax_patches: 64\n")
    configs = [load_config_file(p) for p in (nested, dunder, bare)]
    assert configs[0] == configs[1] == configs[2] == LoaderConfig().with_overrides(seq_len=512, max_patches=64)
    assert config_overrides(bare) == {"pack__seq_len": 512, "fit__max_patches": 64}


@pytest.mark.parametrize("text,message", [
    ("seq_lne = 3\n", "unknown option 'seq_lne'; did you mean 'pack.seq_len'?"),
    ("[drop]\nrate_mx = 0.3\n", "unknown option 'drop.rate_mx'; did you mean 'drop.rate_max'"),
    ("[pack]\nseq_len = \"long\"\n", "pack.seq_len must be an integer, got 'long'"),
    ("[pack]\nseq_len = \"none\"\n", "pack.seq_len cannot be none"),
    ("max_pixels = 4096\n", "option 'max_pixels' is in fit and image: write [fit] max_pixels or [image] max_pixels"),
    ("[drop]\nrate_fn = \"mymod:f\"\n", "drop.rate_fn is a Python object (RateFn); set it in code, not in a file"),
    ("[pack\nseq_len = 3\n", "not valid TOML"),
    ("batch_size = true\n", "batch_size must be an integer, got True"),
    ("video = 3\n", "video must be a table of options or \"none\", got 3"),
])
def test_a_mistake_in_a_file_is_one_line_naming_the_option(tmp_path, text, message):
    path = _write(tmp_path / "run.toml", text)
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


def test_sections_switch_on_and_off(tmp_path):
    cfg = load_config_file(_write(tmp_path / "v.toml", "[video]\nframes = 4\ntubelet = 1\n[augment]\nhflip = 0.0\n"))
    assert (cfg.video.frames, cfg.video.tubelet, cfg.augment.hflip) == (4, 1, 0.0)
    assert load_config_file(_write(tmp_path / "n.toml", 'video = "none"\nmax_per_seq = "none"\n'),
                            base=cfg).video is None


def test_python_objects_are_not_written():
    with pytest.raises(ValueError, match="tokenizer is a Python object"):
        dump_config(LoaderConfig(fields=("txt",), tokenizer=len))


def test_with_overrides_checks_only_the_final_config():
    """A video config and the sequence length it needs, given together, are one valid config
    (before, the video was set first and checked against the old sequence length)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = LoaderConfig().with_overrides(video=VideoConfig(frames=16), seq_len=4096, video__tubelet=4)
    assert (cfg.pack.seq_len, cfg.video.frames, cfg.video.tubelet) == (4096, 16, 4)


def _batches(urls, cfg):
    from patchpack.loader import make_loader

    return [(b.patches.numpy(), b.positions.numpy(), b.segment_ids.numpy(), b.sample_keys) for b in
            make_loader(urls, cfg)]  # cfg: a LoaderConfig or a config file's path


def test_patchpack_config_reproduces_the_runs_batches(tar_shards, tmp_path, capsys):
    """``patchpack config FLAGS > run.toml``, then ``--config run.toml`` alone gives the config and
    the batches of the run with FLAGS (and so does ``load_config_file``)."""
    urls = tar_shards(30, per_shard=8)
    assert main(["config", *FLAGS]) == 0
    path = _write(tmp_path / "run.toml", capsys.readouterr().out)
    with_flags = loader_config(build_parser("stats").parse_args(["stats", *urls, *FLAGS]), urls)
    from_file = loader_config(build_parser("stats").parse_args(["stats", *urls, "--config", str(path)]), urls)
    assert from_file == with_flags == load_config_file(path)
    assert with_flags.pack.seq_len == 128 and with_flags.drop.kind == "beta" and with_flags.fields == ("txt?",)
    a, b = _batches(urls, with_flags), _batches(urls, path)
    assert len(a) == len(b) > 1
    for x, y in zip(a, b):
        assert all(np.array_equal(u, v) for u, v in zip(x[:3], y[:3])) and x[3] == y[3]
    assert main(["config", "--format", "yaml", "--config", str(path)]) == 0
    yaml_path = _write(tmp_path / "run.yaml", capsys.readouterr().out)
    assert load_config_file(yaml_path) == with_flags
