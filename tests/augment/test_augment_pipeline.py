"""Augmentation wired into the pipeline: header-time token counts are exact, crops and flips
read back from drawn patterns, videos share one draw, determinism, off at evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, JpegImagePlugin

from media import encode, encode_oriented, make_samples, write_shards
from videos import encode_video, read_indices
from patchpack import decode
from patchpack.augment import AugmentConfig, CropBox, apply_box
from patchpack.config import LoaderConfig
from patchpack.decode.video import VideoConfig
from patchpack.fit import FitConfig
from patchpack.loader import make_loader
from patchpack.config import LoaderConfig
from patchpack.pipeline.admission import plan_cropped
from patchpack.pipeline.tokens import pixels_to_tokens

BLOCK = 48


def blocks(rows: int, cols: int) -> np.ndarray:
    """uint8 ``[rows*48, cols*48, 3]``: each 48 px block coloured by its (row, col)."""
    by, bx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    colour = np.stack([20 + 9 * by, 20 + 9 * bx, np.full_like(by, 128)], axis=-1).astype(np.uint8)
    return np.repeat(np.repeat(colour, BLOCK, axis=0), BLOCK, axis=1)


def read_back(out: np.ndarray, box: CropBox, rows: int, cols: int) -> tuple[int, int]:
    """(checked, wrong) patch centres: each output pixel's source block, via the crop and flip."""
    oh, ow = out.shape[:2]
    checked = wrong = 0
    for y in range(2, oh, 5):
        for x in range(2, ow, 5):
            sy = box.top + (y + 0.5) * box.height / oh
            xx = ow - 1 - x if box.flip else x
            sx = box.left + (xx + 0.5) * box.width / ow
            # only where the source point is well inside a block (filters blend at the edges)
            margin = 3 + max(box.height / oh, box.width / ow) * 2
            if min(sy % BLOCK, BLOCK - sy % BLOCK, sx % BLOCK, BLOCK - sx % BLOCK) < margin:
                continue
            r, c = int(sy // BLOCK), int(sx // BLOCK)
            got = out[y, x].astype(int)
            checked += 1
            wrong += int(abs(got[0] - (20 + 9 * r)) > 5 or abs(got[1] - (20 + 9 * c)) > 5)
    return checked, wrong


def _header(data: bytes, kind: str = "image", video=None):
    return decode.read_header(data, kind, None, video)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_crop_and_flip_read_back_on_a_block_pattern(fmt, orientation):
    rows, cols = 8, 13  # 384 x 624 px: big enough for JPEG draft to scale by 1/2 or more
    displayed = blocks(rows, cols)
    data = encode_oriented(displayed, orientation, fmt) if orientation != 1 else encode(displayed, fmt)
    header = _header(data)
    assert header.source_size == (rows * BLOCK, cols * BLOCK)
    fit = FitConfig(patch_size=8, max_patches=100)  # small target: draft() applies to the crop
    total = 0
    for seed in range(6):
        aug = AugmentConfig(scale=(0.2, 0.9), hflip=0.5)
        plan = plan_cropped(header, fit, None, np.random.default_rng(seed), aug, np.random.default_rng(seed))
        box = plan.crop
        out = decode.materialize(data, plan)[0]
        assert out.shape == (*plan.size, 3)
        checked, wrong = read_back(out, box, rows, cols)
        total += checked
        assert wrong == 0, (seed, box, checked, wrong)
    assert total > 50


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 300), w=st.integers(1, 300), fmt=st.sampled_from(["PNG", "JPEG"]),
    orientation=st.sampled_from([1, 2, 5, 6, 7]), crop=st.booleans(), hflip=st.sampled_from([0.0, 0.5, 1.0]),
    scale_lo=st.floats(0.01, 1.0), relative=st.booleans(), patch=st.sampled_from([4, 8, 16]),
    mode=st.sampled_from(["native", "side-uniform", "area-truncnorm"]), budget=st.sampled_from([None, 4, 40]),
    seed=st.integers(0, 2**31),
)
def test_header_time_token_count_equals_the_decoded_count(h, w, fmt, orientation, crop, hflip, scale_lo,
                                                          relative, patch, mode, budget, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    data = encode_oriented(img, orientation, fmt) if orientation != 1 else encode(img, fmt)
    aug = AugmentConfig(crop=crop, scale=(scale_lo, 1.0), ratio_relative=relative, hflip=hflip)
    fit = FitConfig(patch_size=patch, max_patches=budget, mode=mode, side_min=8, side_max=200)
    plan = plan_cropped(_header(data), fit, None, np.random.default_rng(seed), aug, np.random.default_rng(seed + 1))
    box = plan.crop
    assert 0 <= box.top <= h - box.height and 0 <= box.left <= w - box.width  # displayed size is (h, w)
    patches, positions = pixels_to_tokens(data, plan, LoaderConfig(augment=aug).with_overrides(patch_size=patch, max_patches=None),
                                          np.random.default_rng(seed))
    assert len(patches) == plan.tokens == len(positions)


def test_video_gets_one_crop_for_all_frames_and_keeps_its_frames():
    data = encode_video(12, 96, 128, fps=12)
    vcfg = VideoConfig(frames=6, tubelet=2)
    header = _header(data, "video", vcfg)
    fit = FitConfig(patch_size=8, max_patches=64)
    whole = plan_cropped(header, FitConfig(patch_size=1, max_patches=None), vcfg, None,
                         AugmentConfig(crop=False, hflip=0.0), np.random.default_rng(0))
    full = decode.materialize(data, whole, None, vcfg)
    assert read_indices(full) == whole.frame_indices  # the planned frames, read back
    for seed in range(4):
        aug = AugmentConfig(scale=(0.6, 1.0), hflip=0.5)
        plan = plan_cropped(header, fit, vcfg, None, aug, np.random.default_rng(seed))
        clip = decode.materialize(data, plan, None, vcfg)
        assert clip.shape == (len(plan.frame_indices), *plan.size, 3)
        assert plan.tokens == len(pixels_to_tokens(data, plan, LoaderConfig(video=vcfg).with_overrides(patch_size=8, max_patches=None))[0])
        box = plan.crop
        # every frame is cut with the same box: each equals that box of the full-size frame, resized
        assert plan.frame_indices == whole.frame_indices  # the crop does not change which frames
        for f in range(len(clip)):
            ref = apply_box(full[f], box)
            ref = np.asarray(Image.fromarray(np.ascontiguousarray(ref)).resize(plan.size[::-1], Image.BILINEAR))
            assert np.abs(ref.astype(int) - clip[f]).mean() < 12, (seed, f)


SMALL = dict(seq_len=64, patch_size=8, max_patches=48, batch_size=3, buffer_size=6)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("aug")
    samples = make_samples(30, seed=11)
    return write_shards(d, samples, per_shard=10)


def _flat(batches):
    return [(tuple(k for row in b.sample_keys for k in row), b.patches.numpy().tobytes(), b.grids.numpy().tobytes())
            for b in batches]


def test_loader_augmentation_is_deterministic_and_off_at_evaluation(shards):
    aug = AugmentConfig(hue=0.1, grayscale=0.2, rand_ops=1)
    a = _flat(make_loader(shards, augment=aug, **SMALL))
    b = _flat(make_loader(shards, augment=aug, **SMALL))
    plain = _flat(make_loader(shards, **SMALL))
    evaluation = _flat(make_loader(shards, augment=aug, training=False, **SMALL))
    assert a == b
    assert a != plain
    assert evaluation == _flat(make_loader(shards, training=False, **SMALL))
    other_seed = _flat(make_loader(shards, augment=aug, seed=1, **SMALL))
    assert other_seed != a


def test_loader_augmentation_resumes_exactly(shards):
    kw = dict(SMALL, augment=True)
    full = _flat(make_loader(shards, **kw))
    loader = make_loader(shards, **kw)
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    resumed = make_loader(shards, **kw)
    resumed.load_state_dict(loader.state_dict())
    assert _flat(head) + _flat(resumed) == full


def test_loader_accepts_augment_options_and_rejects_bad_ones():
    cfg = LoaderConfig().with_overrides(augment=True, augment__hflip=0.0, augment__scale=(0.5, 1.0))
    assert cfg.augment.hflip == 0.0 and cfg.augment.scale == (0.5, 1.0)
    assert LoaderConfig(augment=True, training=False).active_augment is None
    with pytest.raises(TypeError, match="AugmentConfig"):
        LoaderConfig(augment="yes")


def test_jpeg_draft_applies_to_the_crop(monkeypatch):
    """A small crop target of a big JPEG is DCT-downscaled, and the pixels match a full decode."""
    displayed = blocks(16, 24)  # 768 x 1152 px
    data = encode(displayed, "JPEG")
    header = _header(data)
    scales = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        before = self.size
        result = original(self, mode, size)
        scales.append(before[0] / self.size[0])
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fit = FitConfig(patch_size=8, max_patches=256)
    aug = AugmentConfig(scale=(0.5, 0.5), hflip=1.0)
    plan = plan_cropped(header, fit, None, None, aug, np.random.default_rng(3))
    out = decode.materialize(data, plan)[0]
    assert scales and scales[-1] >= 2
    from patchpack.decode.image import ImageConfig

    exact = decode.materialize(data, plan, ImageConfig(draft=False))[0]
    assert np.abs(out.astype(int) - exact).mean() < 3
    checked, wrong = read_back(out, plan.crop, 16, 24)
    assert checked > 10 and wrong == 0
