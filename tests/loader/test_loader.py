import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

from media import BROKEN, image_bytes, keys_of, make_samples, truncate_file, write_folder, write_raw_tar, write_shards
from patchpack import LoaderConfig, make_loader
from patchpack.loader.batch import PackedBatch
from patchpack.decode.image import materialize_image
from patchpack.pipeline.admission import plan_media
from patchpack.drop import DropConfig
from patchpack.errors import SampleError
from patchpack.fit import FitConfig
from patchpack.loader import PackedLoader
from patchpack.tokenize import unpatchify

SMALL = dict(seq_len=64, patch_size=8, max_patches=48, batch_size=3, buffer_size=6)


@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("clean")
    samples = make_samples(70, seed=1)
    return write_shards(d, samples, per_shard=10), samples


@pytest.fixture(scope="module")
def dirty_shards(tmp_path_factory):
    """Good samples plus every kind of bad input, over 5 shards, one of them truncated."""
    d = tmp_path_factory.mktemp("dirty")
    samples = make_samples(36, seed=2)
    bad = [{"__key__": f"bad-{name}", ext: data} for name, (ext, data, _) in sorted(BROKEN.items())]
    bad += [
        {"__key__": "bad-nomedia", "txt": b"caption only"},
        {"__key__": "bad-label", "png": image_bytes(16, 16), "cls": b"cat"},
    ]
    mixed = []
    for i, s in enumerate(samples):
        mixed.append(s)
        if i % 4 == 1 and bad:
            mixed.append(bad.pop())
    mixed += bad
    urls = write_shards(d, mixed, per_shard=10)
    unsafe = write_raw_tar(d / "unsafe.tar", [
        ("u1.png", image_bytes(16, 24)), ("u1.pth", b"\x80\x04K\x01."),
        ("u2.png", image_bytes(16, 24)), ("u2.cls", b"2"),
    ])
    # a truncated shard: the last shard cut inside its data
    trunc_samples = make_samples(6, sizes=((64, 64),), formats=("PNG",), prefix="t", seed=3)
    (trunc,) = write_shards(d / "t", trunc_samples, per_shard=100, name="trunc")
    truncate_file(trunc, 0.6)
    all_keys = {s["__key__"] for s in mixed} | {"u1", "u2"} | {s["__key__"] for s in trunc_samples}
    return urls + [unsafe, trunc], all_keys


def test_batches_follow_the_packed_contract(clean_shards):
    urls, samples = clean_shards
    loader = make_loader(urls, **SMALL)
    assert isinstance(loader, torch.utils.data.DataLoader) and isinstance(loader, PackedLoader)
    batches = list(loader)
    assert all(isinstance(b, PackedBatch) for b in batches)
    for b in batches[:-1]:
        assert b.patches.shape == (3, 64, 8 * 8 * 3) and b.patches.dtype == torch.uint8
    for b in batches:
        seg = b.segment_ids
        for r, row_keys in enumerate(b.sample_keys):
            ids = seg[r][seg[r] > 0]
            assert ids.tolist() == sorted(ids.tolist())  # examples back to back
            assert set(ids.tolist()) == set(range(1, len(row_keys) + 1))
            assert (b.patches[r][seg[r] == 0] == 0).all()
            for j in range(len(row_keys)):
                gt, gh, gw = b.grids[r, j].tolist()
                n = int((seg[r] == j + 1).sum())
                assert gt == 1 and n == gh * gw  # no dropping configured
                assert 0 <= int(b.labels[r, j]) < 5
    assert sorted(keys_of(batches)) == sorted(s["__key__"] for s in samples)
    assert loader.stats.examples == len(samples) and loader.stats.errors == 0


def test_pixels_round_trip_to_the_decoded_image(tmp_path):
    data = image_bytes(40, 56, "PNG", seed=9)
    (url,) = write_shards(tmp_path, [{"__key__": "one", "png": data, "cls": b"3"}], per_shard=10)
    (b,) = list(make_loader(url, **SMALL))
    fit = FitConfig(patch_size=8, max_patches=48)
    expect = materialize_image(data, plan_media(data, "image", fit))[0]
    seg = b.segment_ids[0]
    img = unpatchify(b.patches[0][seg == 1].numpy(), b.positions[0][seg == 1].numpy(),
                     tuple(b.grids[0, 0].tolist()), 8)
    assert np.array_equal(img, expect)
    assert b.labels[0, 0] == 3 and b.sample_keys == [["one"]]


def test_every_input_is_packed_or_reported(dirty_shards, tmp_path):
    urls, all_keys = dirty_shards
    errors_path = tmp_path / "errors.jsonl"
    loader = make_loader(urls, errors_path=str(errors_path), **SMALL)
    packed = keys_of(loader)
    reported = [e.key for e in loader.errors if e.kind != "shard"]
    assert len(packed) == len(set(packed))
    assert not set(packed) & set(reported)
    trunc_url = urls[-1]
    shard_errors = [e for e in loader.errors if e.kind == "shard"]
    assert [e.key for e in shard_errors] == [trunc_url]
    lost = all_keys - set(packed) - set(reported)
    assert lost and all(k.startswith("t") for k in lost)  # only samples wholly past the tar cut
    kinds = {e.key: e.kind for e in loader.errors}
    for name, (_, _, kind) in BROKEN.items():
        assert kinds[f"bad-{name}"] == kind
    assert kinds["bad-nomedia"] == "no-media"
    assert kinds["bad-label"] == "bad-label"
    assert kinds["u1"] == "unsafe" and "u2" in packed
    assert "truncated" in kinds.values()
    lines = [json.loads(x) for x in errors_path.read_text().splitlines()]
    assert len(lines) == len(loader.errors) == loader.stats.errors
    assert {tuple(sorted(x)) for x in lines} == {("key", "kind", "message", "shard", "stage")}
    assert sum(loader.stats.error_kinds.values()) == loader.stats.errors


def test_raise_policy_stops_at_the_first_bad_sample(dirty_shards):
    urls, _ = dirty_shards
    with pytest.raises(SampleError):
        list(make_loader(urls, errors="raise", **SMALL))


def test_oversize_examples_are_reported(tmp_path):
    samples = [{"__key__": "big", "png": image_bytes(64, 64)}, {"__key__": "small", "png": image_bytes(8, 8)}]
    (url,) = write_shards(tmp_path, samples, per_shard=10)
    loader = make_loader(url, seq_len=16, patch_size=8, max_patches=None, batch_size=2)
    assert keys_of(loader) == ["small"]
    assert [(e.key, e.kind, e.stage) for e in loader.errors] == [("big", "oversize", "pack")]


def test_json_labels(tmp_path):
    samples = [{"__key__": f"k{i}", "png": image_bytes(16, 16), "json": json.dumps({"y": i}).encode()}
               for i in range(4)]
    (url,) = write_shards(tmp_path, samples, per_shard=10)
    batches = list(make_loader(url, label_field="json:y", **SMALL))
    got = {k: int(b.labels[r, j]) for b in batches for r, row in enumerate(b.sample_keys) for j, k in enumerate(row)}
    assert got == {f"k{i}": i for i in range(4)}


def test_folder_source(tmp_path):
    keys = [k + ".png" for k in write_folder(tmp_path / "imgs", {"a": 3, "b": 4})]  # a folder key keeps its extension
    batches = list(make_loader(str(tmp_path / "imgs"), **SMALL))
    got = {k: int(b.labels[r, j]) for b in batches for r, row in enumerate(b.sample_keys) for j, k in enumerate(row)}
    assert got == {k: (0 if k.startswith("a/") else 1) for k in keys}


DROP = dict(SMALL, drop=DropConfig("beta", rate_max=0.6, beta_mean=0.4, beta_var=0.05),
            fit=FitConfig(patch_size=8, max_patches=48, mode="side-uniform", side_min=16, side_max=64,
                          allow_upsample=True))


def _tokens_by_key(batches):
    out = {}
    for b in batches:
        for r, row in enumerate(b.sample_keys):
            for j, k in enumerate(row):
                m = b.segment_ids[r] == j + 1
                out[k] = (b.positions[r][m].numpy().copy(), b.patches[r][m].numpy().copy(), b.grids[r, j].tolist())
    return out


def test_deterministic_for_a_seed_and_independent_of_workers(clean_shards):
    urls, _ = clean_shards
    cfg = LoaderConfig().with_overrides(**DROP)
    a = list(make_loader(urls, cfg))
    b = list(make_loader(urls, cfg))
    assert len(a) == len(b) and all(x == y for x, y in zip(a, b))
    c = list(make_loader(urls, cfg, seed=1))
    assert keys_of(c) != keys_of(a)
    # per-example randomness depends on (seed, epoch, key) only, not on the worker layout
    w = list(make_loader(urls, cfg, num_workers=2))
    ta, tw = _tokens_by_key(a), _tokens_by_key(w)
    assert ta.keys() == tw.keys()
    for k in ta:
        assert np.array_equal(ta[k][0], tw[k][0]) and np.array_equal(ta[k][1], tw[k][1]) and ta[k][2] == tw[k][2]
    assert len({v[2][1] * v[2][2] for v in ta.values()}) > 3  # sizes really were sampled
    assert any(len(v[0]) < v[2][1] * v[2][2] for v in ta.values())  # tokens really were dropped


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_reproduces_the_uninterrupted_run(dirty_shards, num_workers):
    urls, _ = dirty_shards
    cfg = LoaderConfig().with_overrides(**dict(DROP, batch_size=1, seq_len=48))
    full_loader = make_loader(urls, cfg, num_workers=num_workers)
    full = list(full_loader)
    assert len(full) > 6
    buffered = 0
    for cut in [1, 3, len(full) // 2, len(full) - 1]:
        loader = make_loader(urls, cfg, num_workers=num_workers)
        it = iter(loader)
        head = [next(it) for _ in range(cut)]
        text = json.dumps(loader.state_dict())  # JSON-serialisable
        buffered += text.count("__item__")  # examples held in the packer (or in waiting rows)
        state = json.loads(text)
        del it
        resumed = make_loader(urls, cfg, num_workers=num_workers)
        resumed.load_state_dict(state)
        tail = list(resumed)
        assert len(head) + len(tail) == len(full), cut
        assert all(x == y for x, y in zip(head + tail, full)), cut
        assert resumed.stats.to_dict() == full_loader.stats.to_dict()
    assert buffered > 0


def test_resume_with_another_worker_count_is_elastic(clean_shards):
    urls, samples = clean_shards
    loader = make_loader(urls, **SMALL)
    first = next(iter(loader))
    other = make_loader(urls, num_workers=2, **SMALL)  # re-deals the rest of the epoch (tests/loader/test_elastic.py)
    other.load_state_dict(loader.state_dict())
    assert Counter(keys_of([first]) + keys_of(other)) == Counter(s["__key__"] for s in samples)


def test_epochs_and_passes(clean_shards):
    urls, samples = clean_shards
    two = keys_of(make_loader(urls, epochs=2, **SMALL))
    assert Counter(two) == Counter({s["__key__"]: 2 for s in samples})
    loader = make_loader(urls, **SMALL)
    first, second = keys_of(loader), keys_of(loader)  # each pass is the next epoch
    assert sorted(first) == sorted(second) and first != second
    loader.set_epoch(0)
    assert keys_of(loader) == first


def test_resampled_stream_is_infinite_and_deterministic(clean_shards):
    urls, samples = clean_shards

    def take(n, **kw):
        it = iter(make_loader(urls, resampled=True, **SMALL, **kw))
        return [next(it) for _ in range(n)]

    a, b = take(24), take(24)
    assert all(x == y for x, y in zip(a, b))
    ks = Counter(keys_of(a))
    assert max(ks.values()) > 1  # drawn with replacement, beyond one epoch
    loader = make_loader(urls, resampled=True, **SMALL)
    it = iter(loader)
    [next(it) for _ in range(17)]
    state = loader.state_dict()
    resumed = make_loader(urls, resampled=True, **SMALL)
    resumed.load_state_dict(state)
    it2 = iter(resumed)
    assert all(next(it2) == x for x in a[17:24])


def test_overrides_route_to_sections():
    cfg = LoaderConfig().with_overrides(seq_len=128, patch_size=14, max_patches=64, image__max_pixels=10**6,
                                        batch_size=2)
    assert (cfg.pack.seq_len, cfg.fit.patch_size, cfg.fit.max_patches) == (128, 14, 64)
    assert cfg.image.max_pixels == 10**6 and cfg.batch_size == 2 and cfg.token_dim == 14 * 14 * 3
    with pytest.raises(TypeError, match="ambiguous"):
        LoaderConfig().with_overrides(max_pixels=10)
    with pytest.raises(TypeError, match="unknown"):
        LoaderConfig().with_overrides(sequence_length=10)


def test_grid_multiple_reaches_the_fit_through_loader_options(clean_shards):
    from patchpack.decode.video import VideoConfig

    urls, samples = clean_shards
    batches = list(make_loader(urls, grid_multiple=2, **SMALL))
    sides = [g for b in batches for g in b.grids[..., 1:].reshape(-1, 2).tolist() if g != [0, 0]]
    assert len(sides) == len(samples)
    assert all(h % 2 == 0 and w % 2 == 0 and 4 <= h * w <= SMALL["max_patches"] for h, w in sides)
    plain = [g for b in make_loader(urls, **SMALL) for g in b.grids[..., 1:].reshape(-1, 2).tolist() if g != [0, 0]]
    assert any(h % 2 or w % 2 for h, w in plain)  # the option changed something
    with pytest.raises(ValueError, match="below one 2x2 grid"):
        LoaderConfig().with_overrides(grid_multiple=2, video=VideoConfig(max_tokens=3))


def _mp4(frames: int = 12, h: int = 48, w: int = 64) -> bytes:
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), i * 20, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def test_video_enabled_stream_mixes_images_as_single_tubelets(tmp_path):
    from patchpack.decode import video
    samples = make_samples(4) + [{"__key__": "clip", "mp4": _mp4(), "jpg": image_bytes(16, 16, "JPEG")}]
    urls = write_shards(tmp_path, samples, per_shard=10)
    cfg = LoaderConfig(video=video.VideoConfig(frames=4, tubelet=2)).with_overrides(**dict(SMALL, seq_len=128))
    batches = list(make_loader(urls, cfg))
    grids = {k: b.grids[r, j].tolist() for b in batches for r, row in enumerate(b.sample_keys) for j, k in enumerate(row)}
    assert all(b.patches.shape[-1] == 2 * 8 * 8 * 3 for b in batches)
    assert grids["clip"][0] == 2 and all(g[0] == 1 for k, g in grids.items() if k != "clip")
    # without a video config the clip's poster image is used instead
    plain = {k for b in make_loader(urls, **SMALL) for row in b.sample_keys for k in row}
    assert "clip" in plain


@pytest.mark.parametrize("world,workers", [(3, 2), (2, 0), (4, 1)])
def test_exactly_once_for_uneven_consumer_layouts(tmp_path, world, workers):
    samples = make_samples(23, seed=6)
    urls = write_shards(tmp_path, samples, per_shard=5)  # 5 shards, the last one short
    seen = []
    for rank in range(world):
        seen += keys_of(make_loader(urls, rank=rank, world_size=world, num_workers=workers, **SMALL))
    assert Counter(seen) == Counter(s["__key__"] for s in samples)


def test_patchpack_shards_give_the_same_batches_as_the_images(tmp_path):
    from patchpack.storage.writer import ShardWriter
    from patchpack.tokenize import Tokens, patchify

    samples = make_samples(20, seed=8)
    (tar,) = write_shards(tmp_path, samples, per_shard=100)
    fit = FitConfig(patch_size=8, max_patches=48)
    arrow = str(tmp_path / "x-000000.arrow")
    with ShardWriter(arrow, patch_size=8) as w:
        for s in samples:
            data = next(v for k, v in s.items() if k in ("png", "jpg", "webp"))
            probe = plan_media(data, "image", fit)
            patches, pos = patchify(materialize_image(data, probe)[0], 8)
            w.write(Tokens(s["__key__"], patches, pos, probe.grid, int(s["cls"]),
                           {"source_size": list(probe.source_size), "kind": "image"}))
    kw = dict(SMALL, batch_size=2, drop=DropConfig("constant", rate=0.3))
    online, stored = list(make_loader(tar, **kw)), list(make_loader(arrow, **kw))
    assert len(online) == len(stored) > 2 and all(x == y for x, y in zip(online, stored))
    loader = make_loader(arrow, **kw)
    it = iter(loader)
    next(it), next(it)
    resumed = make_loader(arrow, **kw)
    resumed.load_state_dict(loader.state_dict())
    assert all(x == y for x, y in zip(list(resumed), stored[2:]))


_DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from patchpack import make_loader
    dist.init_process_group("gloo")
    urls = json.loads(sys.argv[1])
    loader = make_loader(urls, num_workers=2, seq_len=64, patch_size=8, max_patches=48, batch_size=2,
                         buffer_size=4)
    assert loader.dataset.rank == dist.get_rank() and loader.dataset.world_size == 2
    mine = [k for b in loader for row in b.sample_keys for k in row]
    errors = [e.key for e in loader.errors]
    gathered = [None, None]
    dist.all_gather_object(gathered, {"keys": mine, "errors": errors})
    if dist.get_rank() == 0:
        print("RESULT" + json.dumps(gathered))
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_exactly_once_across_two_ranks_and_two_workers(tmp_path):
    # 7 shards of uneven length for 4 consumers: 4 whole shards + 3 shared by index
    samples = make_samples(61, seed=4)
    samples.insert(20, {"__key__": "broken", "jpg": b""})
    urls = write_shards(tmp_path, samples, per_shard=9)
    assert len(urls) == 7
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    procs = [
        subprocess.Popen([sys.executable, "-c", _DDP_SCRIPT, json.dumps(urls)], env=dict(env, RANK=str(r)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    (line,) = [x for x in outs[0][0].splitlines() if x.startswith("RESULT")]
    ranks = json.loads(line[len("RESULT"):])
    everything = ranks[0]["keys"] + ranks[1]["keys"]
    assert all(ranks[r]["keys"] for r in range(2))
    assert Counter(everything) == Counter(s["__key__"] for s in samples if s["__key__"] != "broken")
    assert ranks[0]["errors"] + ranks[1]["errors"] == ["broken"]
