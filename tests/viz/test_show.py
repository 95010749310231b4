"""Drawing packed sequences: examples rebuilt on their grids, dropped patches and padding marked."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from patchpack.loader.batch import collate
from patchpack.cli.show import add_arguments
from patchpack.viz.show import draw_batch, example_images
from patchpack.tokenize import Tokens, patchify, tubeletize

P = 8


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _tokens(key: str, img: np.ndarray, keep: np.ndarray | None = None, label: int = 0) -> Tokens:
    patches, pos = patchify(img, P)
    if keep is not None:
        patches, pos = patches[keep], pos[keep]
    return Tokens(key, patches, pos, (1, img.shape[0] // P, img.shape[1] // P), label)


def test_examples_rebuilt_exactly_with_dropped_cells_marked():
    a, b = _image(16, 24, 0), _image(32, 8, 1)
    keep = np.array([0, 2, 3])
    batch = collate([[_tokens("a", a), _tokens("b", b, keep, label=3)]], seq_len=20, max_per_seq=3)
    ex = example_images(batch, 0, P)
    assert [e["key"] for e in ex] == ["a", "b"]
    np.testing.assert_array_equal(ex[0]["image"], a)
    assert not ex[0]["dropped"].any()
    assert ex[1]["label"] == 3 and ex[1]["tokens"] == 3 and ex[1]["grid"] == (1, 4, 1)
    dropped = ex[1]["dropped"][0]
    assert dropped[:, 0].tolist() == [False, True, False, False]
    np.testing.assert_array_equal(ex[1]["image"][:8], b[:8])
    np.testing.assert_array_equal(ex[1]["image"][16:], b[16:])
    assert (ex[1]["image"][8:16] != b[8:16]).any()  # the dropped cell is filled, not the source pixels


def test_draw_batch_writes_png(tmp_path):
    rows = [
        [_tokens("a", _image(16, 24, 0)), _tokens("b", _image(32, 8, 1), np.array([0, 3]))],
        [_tokens("c", _image(8, 8, 2))],
    ]
    batch = collate(rows, seq_len=16, max_per_seq=2)
    out = draw_batch(batch, P, path=tmp_path / "b.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500
    assert draw_batch(batch, P, path=tmp_path / "one.png", rows=1).is_file()


def test_video_tubelets_and_empty_row(tmp_path):
    v = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    patches, pos = tubeletize(v, P, 2)
    tok = Tokens("v", patches, pos, (2, 2, 2), 1)
    batch = collate([[tok], []], seq_len=10, max_per_seq=1)
    ex = example_images(batch, 0, P, tubelet=2)
    assert ex[0]["frames"] == 2
    np.testing.assert_array_equal(ex[0]["image"][:, :16], v[0])
    np.testing.assert_array_equal(ex[0]["image"][:, 24:], v[2])
    assert example_images(batch, 1, P, tubelet=2) == []
    assert draw_batch(batch, P, tubelet=2, path=tmp_path / "v.png").is_file()


def test_geometry_mismatch_is_a_clear_error():
    batch = collate([[_tokens("a", _image(8, 8, 0))]], seq_len=4)
    with pytest.raises(ValueError, match="token width"):
        draw_batch(batch, 16)


def test_cli_arguments_parse():
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["a.tar", "--out", "x.png", "--batches", "2", "--seq-len", "64"])
    assert args.urls == ["a.tar"] and args.batches == 2 and args.seq_len == 64


def test_show_command_draws_loader_batches(tmp_path):
    import io

    import webdataset as wds

    from patchpack.cli import main

    rng = np.random.default_rng(0)
    url = str(tmp_path / "s.tar")
    with wds.TarWriter(url) as sink:
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(_image(int(rng.integers(8, 40)), int(rng.integers(8, 40)), i)).save(buf, format="PNG")
            sink.write({"__key__": f"k{i}", "png": buf.getvalue(), "cls": str(i)})
    out = tmp_path / "show.png"
    rc = main(["show", url, "--out", str(out), "--batches", "2", "--batch-size", "2", "--seq-len", "16",
               "--patch-size", str(P), "--max-patches", "16", "--drop-rate", "0.25"])
    assert rc == 0 and out.is_file() and (tmp_path / "show-1.png").is_file()
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_a_row_of_many_examples_is_captioned_by_slot_so_captions_never_overlap():
    many = [_tokens(f"a-long-sample-key-{i:03d}", _image(8, 8, i)) for i in range(60)]
    few = [_tokens(f"key{i}", _image(16, 16, i)) for i in range(3)]
    for row, short in ((many, True), (few, False)):
        fig = draw_batch(collate([row], seq_len=len(row) * 4, max_per_seq=len(row)), P)
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert len(texts) == len(row)
        assert all(t == f"#{i + 1}" for i, t in enumerate(texts)) == short
        assert all("\n" in t for t in texts) != short
