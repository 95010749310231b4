"""Images and videos in one loader and one packed batch, through the real loader."""

import io

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from patchpack.decode.video import VideoConfig
from patchpack.pipeline.admission import plan_media
from patchpack.fit import FitConfig
from patchpack.loader import LoaderConfig, make_loader
from patchpack.rng import example_rng
from patchpack.pack import PackConfig
from patchpack.tokenize import untubeletize

from videos import encode_audio_only, encode_gif, encode_video, frame_pattern, garbage, read_index

P, PT = 16, 2
FIT = FitConfig(patch_size=P, max_patches=12)
VIDEO = VideoConfig(frames=5, tubelet=PT, clip="random", max_tokens=40)

IMAGE_BASE = 1000  # images show 1000 + i, videos show their frame index


def _png(index, h, w):
    buf = io.BytesIO()
    Image.fromarray(frame_pattern(index, h, w)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    videos = [
        ("mp4", dict(num_frames=23)),
        ("webm", dict(num_frames=17, fmt="webm", codec="libvpx-vp9", height=97, width=131)),
        ("mkv", dict(num_frames=11, fmt="matroska", height=48, width=160)),
        ("mp4", dict(num_frames=3)),  # shorter than asked: frames repeat
        ("mp4", dict(num_frames=9, pts_ms=[0, 30, 60, 400, 430, 800, 1200, 1230, 1260])),  # variable rate
    ]
    samples, kinds = [], {}
    for i, (ext, kw) in enumerate(videos):
        key = f"v{i:03d}"
        samples.append({"__key__": key, ext: encode_video(**kw), "cls": str(i).encode()})
        kinds[key] = "video"
    for i in range(8):
        key = f"i{i:03d}"
        h, w = [(64, 64), (40, 100), (130, 50), (16, 200)][i % 4]
        samples.append({"__key__": key, "png": _png(IMAGE_BASE + i, h, w), "cls": str(100 + i).encode()})
        kinds[key] = "image"
    bad = {
        "b-trunc": ("mp4", encode_video(20)[:900], "truncated"),
        "b-audio": ("mp4", encode_audio_only(), "no-video-stream"),
        "b-garbage": ("webm", garbage(), "not-media"),
    }
    for key, (ext, data, _) in bad.items():
        samples.append({"__key__": key, ext: data})
    # interleave images, videos and bad samples over two shards
    order = np.random.default_rng(0).permutation(len(samples))
    pattern = str(d / "mixed-%03d.tar")
    with wds.ShardWriter(pattern, maxcount=(len(samples) + 1) // 2) as sink:
        for j in order:
            sink.write(samples[j])
    urls = sorted(str(p) for p in d.glob("mixed-*.tar"))
    data = {s["__key__"]: next(v for k, v in s.items() if k not in ("__key__", "cls")) for s in samples}
    return urls, kinds, {k: v[2] for k, v in bad.items()}, data


def _config(**kw):
    base = dict(
        fit=FIT, video=VIDEO, pack=PackConfig(seq_len=96, buffer_size=4, max_per_seq=6),
        batch_size=2, shuffle_shards=False, training=False, seed=3,
    )
    base.update(kw)
    return LoaderConfig(**base)


def test_mixed_batches_hold_images_and_videos_with_the_right_layout(mixed):
    urls, kinds, bad, data = mixed
    cfg = _config()
    loader = make_loader(urls, cfg)
    seen: dict[str, str] = {}
    both_in_one_row = False
    for batch in loader:
        assert batch.patches.shape[-1] == PT * P * P * 3  # one token width for both
        for b, keys in enumerate(batch.sample_keys):
            row_kinds = {kinds[k] for k in keys}
            both_in_one_row |= row_kinds == {"image", "video"}
            seg = batch.segment_ids[b].numpy()
            # examples are laid back to back from the row start, padding after
            n_tok = int((seg > 0).sum())
            assert np.all(seg[:n_tok] > 0) and np.all(seg[n_tok:] == 0)
            for j, key in enumerate(keys):
                seen[key] = kinds[key]
                mask = seg == j + 1
                t, gh, gw = (int(v) for v in batch.grids[b, j])
                pos = batch.positions[b][mask].numpy()
                assert mask.sum() == t * gh * gw  # no dropping at evaluation
                assert len({tuple(p) for p in pos}) == len(pos)
                assert pos[:, 0].max() < t and pos[:, 1].max() < gh and pos[:, 2].max() < gw
                clip = untubeletize(batch.patches[b][mask].numpy(), pos, (t, gh, gw), P, PT)
                if kinds[key] == "image":
                    assert t == 1 and np.all(pos[:, 0] == 0)
                    assert np.array_equal(clip[0], clip[1])  # the image repeated pt times
                    assert read_index(clip[0]) == IMAGE_BASE + int(key[1:])
                else:
                    # the loader's per-example generator gives the same probe as a direct call
                    probe = plan_media(data[key], "video", FIT, None, VIDEO, example_rng(cfg.seed, 0, key, 0))
                    assert (t, gh, gw) == tuple(probe.grid)
                    assert t * gh * gw <= VIDEO.max_tokens
                    assert [read_index(f) for f in clip] == probe.frame_indices
                    assert batch.labels[b, j] == int(key[1:])
            # empty slots are marked
            for j in range(len(keys), batch.grids.shape[1]):
                assert batch.labels[b, j] == -1 and int(batch.grids[b, j].sum()) == 0
    # every sample is packed or reported, exactly once
    errors = {e.key: e.kind for e in loader.errors}
    assert set(seen) == set(kinds)
    assert errors == bad
    assert both_in_one_row


def test_dropping_keeps_video_positions_consistent(mixed):
    urls, kinds, _, _ = mixed
    from patchpack.drop import DropConfig

    loader = make_loader(urls, _config(training=True, drop=DropConfig(kind="constant", rate=0.5)))
    videos = dropped = 0
    for batch in loader:
        for b, keys in enumerate(batch.sample_keys):
            seg = batch.segment_ids[b].numpy()
            for j, key in enumerate(keys):
                t, gh, gw = (int(v) for v in batch.grids[b, j])
                pos = batch.positions[b][seg == j + 1].numpy()
                assert 1 <= len(pos) <= t * gh * gw
                dropped += t * gh * gw - len(pos)
                assert len({tuple(p) for p in pos}) == len(pos)
                assert pos[:, 0].max() < t
                videos += kinds[key] == "video"
    assert videos == 5 and dropped > 0


def test_images_only_stream_is_unchanged_by_the_video_hook(mixed, tmp_path):
    # without a video config the same shards give image-width tokens and videos are reported
    urls, kinds, _, _ = mixed
    loader = make_loader(urls, _config(video=None))
    keys = set()
    for batch in loader:
        assert batch.patches.shape[-1] == P * P * 3
        keys |= {k for row in batch.sample_keys for k in row}
    assert keys == {k for k, v in kinds.items() if v == "image"}
    assert {e.key for e in loader.errors} >= {k for k, v in kinds.items() if v == "video"}


def test_gif_member_in_a_video_stream(tmp_path):
    pattern = str(tmp_path / "gif-%03d.tar")
    with wds.ShardWriter(pattern, maxcount=10) as sink:
        sink.write({"__key__": "g0", "gif": encode_gif(6, durations_ms=[40, 80, 40, 80, 40, 80])})
        sink.write({"__key__": "g1", "png": _png(IMAGE_BASE + 1, 32, 32)})
    loader = make_loader(sorted(str(p) for p in tmp_path.glob("gif-*.tar")), _config())
    grids = {}
    for batch in loader:
        for b, keys in enumerate(batch.sample_keys):
            for j, key in enumerate(keys):
                grids[key] = tuple(int(v) for v in batch.grids[b, j])
    assert set(grids) == {"g0", "g1"} and grids["g1"][0] == 1


def test_stats_command_on_mixed_shards(mixed, capsys):
    import json

    from patchpack.cli import main

    urls, kinds, bad, _ = mixed
    rc = main(["stats", *urls, "--frames", "5", "--fps", "10", "--tubelet", "2", "--max-patches", "12",
               "--seq-len", "256", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["examples"] == len(kinds)
    assert out["errors"] == len(bad)
    assert out["error_kinds"] == {"truncated": 1, "no-video-stream": 1, "not-media": 1}
