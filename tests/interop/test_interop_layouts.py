"""Converters give HF's processor layouts bit for bit on the same already-resized pixels."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from interop_cases import (
    P, image, image_tokens, pack, qwen2_vl_processor, shuffled, siglip2_processor, video, video_tokens,
)
from patchpack.interop import (
    IncompleteGridError, example_slots, merge_grid, normalize, to_qwen2_vl, to_siglip2, to_timm_naflex,
)

pytest.importorskip("transformers")

GRIDS = [(3, 5), (4, 4), (2, 7), (6, 2), (1, 1), (5, 3)]
EVEN = [(2, 4), (4, 4), (6, 2), (2, 2), (4, 6)]


def packed(grids, rows, seq_len, tubelet=1, seed=0, max_per_seq=3):
    imgs = [image(h, w, seed + i) for i, (h, w) in enumerate(grids)]
    toks = [image_tokens(im, f"k{i}", tubelet=tubelet) for i, im in enumerate(imgs)]
    it = iter(toks)
    return imgs, pack([[next(it) for _ in range(r)] for r in rows], seq_len, max_per_seq)


@pytest.mark.parametrize("tubelet", [1, 2])
def test_siglip2_pixels_equal_processor(tubelet):
    imgs, batch = packed(GRIDS, [2, 3, 1], seq_len=40, tubelet=tubelet)
    out = to_siglip2(batch, P, max_num_patches=40)
    raw = siglip2_processor(do_rescale=False, do_normalize=False, max_num_patches=40)(
        imgs, return_tensors="pt", input_data_format="channels_last")
    assert out["pixel_values"].dtype == torch.uint8
    assert torch.equal(out["pixel_values"].to(torch.float32), raw["pixel_values"])
    assert torch.equal(out["pixel_attention_mask"], raw["pixel_attention_mask"].to(torch.int32))
    assert torch.equal(out["spatial_shapes"], raw["spatial_shapes"].to(torch.int64))
    norm = siglip2_processor(max_num_patches=40)(imgs, return_tensors="pt", input_data_format="channels_last")
    ours = normalize(out["pixel_values"], "siglip2")
    valid = out["pixel_attention_mask"].bool()
    torch.testing.assert_close(ours[valid], norm["pixel_values"][valid], rtol=0, atol=1e-6)


def test_siglip2_default_width_is_longest_example():
    _, batch = packed(GRIDS, [2, 3, 1], seq_len=40)
    out = to_siglip2(batch, P)
    assert out["pixel_values"].shape == (6, 16, P * P * 3)
    assert out["pixel_attention_mask"].sum(1).tolist() == [h * w for h, w in GRIDS]
    with pytest.raises(ValueError, match="max_num_patches=10"):
        to_siglip2(batch, P, max_num_patches=10)


def test_examples_in_batch_order_with_tokens_in_any_order():
    """Tokens shuffled inside their span land back in raster order."""
    imgs = [image(h, w, i) for i, (h, w) in enumerate(GRIDS[:4])]
    toks = [shuffled(image_tokens(im, f"k{i}"), seed=i) for i, im in enumerate(imgs)]
    batch = pack([[toks[0]], [toks[1], toks[2]], [toks[3]]], seq_len=32, max_per_seq=3)
    assert example_slots(batch.segment_ids, batch.grids).tolist() == [[0, 0], [1, 0], [1, 1], [2, 0]]
    out = to_siglip2(batch, P)
    raw = siglip2_processor(do_rescale=False, do_normalize=False, max_num_patches=out["pixel_values"].shape[1])(
        imgs, return_tensors="pt", input_data_format="channels_last")
    assert torch.equal(out["pixel_values"].float(), raw["pixel_values"])


@pytest.mark.parametrize("tubelet", [1, 2])
def test_qwen2_vl_pixels_equal_processor(tubelet):
    imgs, batch = packed(EVEN, [2, 2, 1], seq_len=40, tubelet=tubelet, max_per_seq=2)
    out = to_qwen2_vl(batch, P)
    raw = qwen2_vl_processor(do_rescale=False, do_normalize=False)(
        imgs, return_tensors="pt", input_data_format="channels_last")
    assert out.pixel_values.dtype == torch.uint8
    assert torch.equal(out.pixel_values.to(torch.float32), raw["pixel_values"])
    assert torch.equal(out.grid_thw, raw["image_grid_thw"])
    kwargs = out.model_inputs()
    assert set(kwargs) == {"pixel_values", "image_grid_thw"}
    # cu_seqlens: one segment per image, padding left out
    sizes = [h * w for h, w in EVEN]
    assert out.cu_seqlens.tolist() == np.concatenate([[0], np.cumsum(sizes)]).tolist()
    assert out.cu_seqlens.dtype == torch.int32
    norm = qwen2_vl_processor()(imgs, return_tensors="pt", input_data_format="channels_last")
    ours = normalize(out.pixel_values, "qwen2_vl", channels_first=True)
    torch.testing.assert_close(ours, norm["pixel_values"], rtol=0, atol=2e-6)


def _hf_video_layout(clip: np.ndarray, p: int, tp: int, m: int) -> torch.Tensor:
    """HF ``Qwen2VLVideoProcessor.patchify`` (it needs torchvision to import, so restated here)."""
    v = torch.from_numpy(clip).permute(0, 3, 1, 2)[None].float()  # [1, F, C, H, W]
    if pad := -v.shape[1] % tp:
        v = torch.cat((v, v[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
    b, f, c, h, w = v.shape
    gt, gh, gw = f // tp, h // p, w // p
    x = v.view(b, gt, tp, c, gh // m, m, p, gw // m, m, p).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return x.reshape(gt * gh * gw, c * tp * p * p)


@pytest.mark.parametrize("frames,tubelet", [(4, 2), (6, 1), (5, 1)])
def test_qwen2_vl_video_layout(frames, tubelet):
    clip = video(frames, 4, 2, seed=7)
    if frames % tubelet:
        pytest.skip("tubelet must divide the clip")
    vid = video_tokens(clip, "v", tubelet=tubelet)
    img = image_tokens(image(2, 2, 8), "i", tubelet=tubelet)
    batch = pack([[img, vid]], seq_len=64, max_per_seq=2)
    out = to_qwen2_vl(batch, P)
    assert out.is_video.tolist() == [False, True]
    gt = -(-frames // 2)
    assert out.grid_thw.tolist() == [[1, 2, 2], [gt, 4, 2]]
    ref = _hf_video_layout(clip, P, 2, 2)
    n_img = 4
    assert torch.equal(out.pixel_values[n_img:].float(), ref)
    kwargs = out.model_inputs()
    assert torch.equal(kwargs["pixel_values_videos"].float(), ref)
    assert kwargs["video_grid_thw"].tolist() == [[gt, 4, 2]]
    # the tower attends per temporal patch, as HF computes from grid_thw
    assert out.cu_seqlens.tolist() == [0, 4] + [4 + 8 * (i + 1) for i in range(gt)]


def test_qwen2_vl_refuses_odd_grid_and_dropped_tokens():
    _, odd = packed([(3, 4)], [1], seq_len=16)
    with pytest.raises(ValueError, match="merge_size=2.*merge_grid"):
        to_qwen2_vl(odd, P)
    dropped = pack([[shuffled(image_tokens(image(4, 4, 1), "d"), 0, keep=0.5)]], seq_len=16)
    with pytest.raises(IncompleteGridError, match=r"\(row 0, slot 0\) has 8 of 16 tokens"):
        to_qwen2_vl(dropped, P)
    with pytest.raises(IncompleteGridError):
        to_siglip2(dropped, P)
    with pytest.raises(IncompleteGridError, match="allow_dropped"):
        to_timm_naflex(dropped)


def test_timm_layout():
    imgs, batch = packed(GRIDS, [2, 3, 1], seq_len=40)
    out = to_timm_naflex(batch, max_seq_len=20)
    assert out["patches"].shape == (6, 20, P * P * 3)
    for k, (img, (h, w)) in enumerate(zip(imgs, GRIDS)):
        n = h * w
        want = img.reshape(h, P, w, P, 3).transpose(0, 2, 1, 3, 4).reshape(n, -1)
        assert np.array_equal(out["patches"][k, :n].numpy(), want)
        assert out["patch_valid"][k].sum() == n and not out["patch_valid"][k, n:].any()
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        assert np.array_equal(out["patch_coord"][k, :n].numpy(), np.stack([yy.ravel(), xx.ravel()], 1))


def test_timm_allows_dropped_tokens_when_asked():
    tok = image_tokens(image(3, 3, 2), "d")
    kept = shuffled(tok, seed=3, keep=0.6)
    batch = pack([[kept]], seq_len=16)
    out = to_timm_naflex(batch, allow_dropped=True)
    n = len(kept)
    coords = {tuple(c) for c in out["patch_coord"][0, :n].tolist()}
    assert coords == {tuple(c) for c in kept.positions[:, 1:].tolist()}
    for j, (y, x) in enumerate(out["patch_coord"][0, :n].tolist()):
        assert np.array_equal(out["patches"][0, j].numpy(), tok.patches[y * 3 + x])


def test_normalize_layouts_agree():
    x = torch.randint(0, 256, (5, 2 * 2 * 3), dtype=torch.uint8)
    last = normalize(x, "imagenet")
    first = normalize(x.reshape(5, 4, 3).permute(0, 2, 1).reshape(5, 12), "imagenet", channels_first=True)
    torch.testing.assert_close(last.reshape(5, 4, 3).permute(0, 2, 1).reshape(5, 12), first)
    with pytest.raises(ValueError, match="unknown normalisation family"):
        normalize(x, "nope")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.sampled_from([1, 2, 3]), st.one_of(st.none(), st.integers(1, 900)))
def test_merge_grid_invariants(gh, gw, m, budget):
    h, w = merge_grid(gh, gw, m, budget)
    assert h % m == 0 and w % m == 0 and h >= m and w >= m
    if budget is not None and budget >= m * m:
        assert h * w <= budget
    if budget is None:
        assert abs(h - gh) <= m and abs(w - gw) <= m  # rounding alone moves a side by less than m


def test_merge_grid_keeps_multiples():
    assert merge_grid(4, 6, 2) == (4, 6)
    assert merge_grid(3, 5, 2, max_patches=16) == (4, 4)
    assert merge_grid(1, 1, 2) == (2, 2)


def test_loader_batch_equals_processor_on_its_pixels(tmp_path):
    """A real loader batch (decode, fit, pack) against the processors fed its own resized pixels."""
    import patchpack
    from media import make_samples, write_shards

    urls = write_shards(tmp_path, make_samples(12, seed=5), per_shard=6)
    batch = next(iter(patchpack.make_loader(urls, seq_len=64, patch_size=P, max_patches=16, batch_size=3,
                                            max_per_seq=5, training=False)))
    slots = example_slots(batch.segment_ids, batch.grids).tolist()
    imgs = []
    for row, slot in slots:
        mine = batch.segment_ids[row] == slot + 1
        grid = tuple(batch.grids[row, slot].tolist())
        imgs.append(patchpack.unpatchify(batch.patches[row][mine].numpy(), batch.positions[row][mine].numpy(),
                                         grid, P))
    assert len(imgs) == batch.num_examples >= 3
    out = to_siglip2(batch, P, max_num_patches=16)
    raw = siglip2_processor(do_rescale=False, do_normalize=False, max_num_patches=16)(
        imgs, return_tensors="pt", input_data_format="channels_last")
    assert torch.equal(out["pixel_values"].float(), raw["pixel_values"])
    assert torch.equal(out["spatial_shapes"], raw["spatial_shapes"].long())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=7), st.integers(0, 2**16),
       st.integers(1, 3))
def test_any_packing_unpacks_to_each_image(grids, seed, per_row):
    """Whatever the rows and token order, every converter gives each image back in raster order."""
    imgs = [image(2 * h, 2 * w, seed + i) for i, (h, w) in enumerate(grids)]
    toks = [shuffled(image_tokens(im, f"k{i}"), seed + i) for i, im in enumerate(imgs)]
    rows = [toks[i : i + per_row] for i in range(0, len(toks), per_row)]
    batch = pack(rows, seq_len=per_row * 64, max_per_seq=per_row)
    timm = to_timm_naflex(batch)
    sig = to_siglip2(batch, P)
    qwen = to_qwen2_vl(batch, P)
    start = 0
    for k, (img, (h, w)) in enumerate(zip(imgs, grids)):
        gh, gw, n = 2 * h, 2 * w, 4 * h * w
        raster = img.reshape(gh, P, gw, P, 3).transpose(0, 2, 1, 3, 4).reshape(n, -1)
        assert np.array_equal(timm["patches"][k, :n].numpy(), raster)
        assert np.array_equal(sig["pixel_values"][k, :n].numpy(), raster)
        assert sig["spatial_shapes"][k].tolist() == [gh, gw]
        # Qwen: channel-first tokens by 2x2 window, the image repeated to 2 frames
        windows = img.reshape(h, 2, P, w, 2, P, 3).transpose(0, 3, 1, 4, 6, 2, 5)  # h, w, 2, 2, C, p, p
        want = np.repeat(windows[:, :, :, :, :, None], 2, axis=5).reshape(n, -1)
        assert np.array_equal(qwen.pixel_values[start : start + n].numpy(), want)
        start += n
