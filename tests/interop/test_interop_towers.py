"""Packed HF towers: each example's output from a packed row equals the model on that image alone."""

import numpy as np
import pytest
import torch

from interop_cases import (
    P, image, image_tokens, pack, qwen2_vl_processor, shuffled, siglip2_processor, tiny_qwen2_vl_visual,
    tiny_siglip2, video, video_tokens,
)
from patchpack.interop import PackedQwen2VLVision, PackedSiglip2Vision, example_slots, normalize, to_siglip2

pytest.importorskip("transformers")

# sizes below, at and above the 4x4 position-embedding table (resize up and down)
GRIDS = [(3, 5), (4, 4), (2, 7), (6, 2), (1, 1), (5, 3), (8, 6)]
ROWS = [[0, 1], [2, 3, 4], [5], [6]]


def _batch(grids, rows, seq_len, seed=0, max_per_seq=3):
    imgs = [image(h, w, seed + i) for i, (h, w) in enumerate(grids)]
    toks = [image_tokens(im, f"k{i}", label=i) for i, im in enumerate(imgs)]
    return imgs, pack([[toks[i] for i in r] for r in rows], seq_len, max_per_seq)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_siglip2_packed_equals_alone(attn):
    model = tiny_siglip2(attn=attn)
    tower = PackedSiglip2Vision(model)
    imgs, batch = _batch(GRIDS, ROWS, seq_len=48)
    slots = example_slots(batch.segment_ids, batch.grids).tolist()
    processor = siglip2_processor(max_num_patches=48)
    with torch.no_grad():
        packed = tower.encode(batch)
        pooled = packed.pooled()
        assert pooled.shape == (len(GRIDS), 32)
        for k, img in enumerate(imgs):
            alone = model(**processor([img], return_tensors="pt", input_data_format="channels_last"))
            torch.testing.assert_close(pooled[k], alone.pooler_output[0], rtol=0, atol=1e-5)
            row, slot = slots[k]
            mine = packed.last_hidden_state[row][batch.segment_ids[row] == slot + 1]
            torch.testing.assert_close(mine, alone.last_hidden_state[0, : len(mine)], rtol=0, atol=1e-5)


def test_siglip2_converter_feeds_the_unchanged_model():
    """``Siglip2VisionModel(**to_siglip2(batch))`` after device normalisation gives the packed tower's output."""
    model = tiny_siglip2(seed=1)
    imgs, batch = _batch(GRIDS[:5], [[0, 1], [2, 3, 4]], seq_len=40)
    inputs = to_siglip2(batch, P)
    inputs["pixel_values"] = normalize(inputs["pixel_values"], "siglip2")
    with torch.no_grad():
        unpacked = model(**inputs).pooler_output
        packed = PackedSiglip2Vision(model).encode(batch).pooled()
    torch.testing.assert_close(packed, unpacked, rtol=0, atol=1e-5)


def test_siglip2_dropped_tokens_do_not_see_row_mates():
    """With dropped, shuffled tokens an example's output is the same alone or packed with others."""
    model = tiny_siglip2(seed=2)
    tower = PackedSiglip2Vision(model)
    toks = [shuffled(image_tokens(image(h, w, i), f"k{i}"), seed=i, keep=0.7) for i, (h, w) in enumerate(GRIDS[:4])]
    together = pack([toks], seq_len=64, max_per_seq=4)
    with torch.no_grad():
        pooled = tower.encode(together).pooled()
        for k, t in enumerate(toks):
            alone = tower.encode(pack([[t]], seq_len=len(t) + 3, max_per_seq=1)).pooled()
            torch.testing.assert_close(pooled[k], alone[0], rtol=0, atol=1e-5)


def test_siglip2_packed_trains():
    """Gradients reach the wrapped model's own parameters through packed rows."""
    model = tiny_siglip2(seed=3).train()
    tower = PackedSiglip2Vision(model)
    _, batch = _batch(GRIDS, ROWS, seq_len=48)
    out = tower.encode(batch)
    out.pooled().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.embeddings.position_embedding.weight.grad.abs().sum() > 0


def test_siglip2_refuses_wrong_token_width():
    tower = PackedSiglip2Vision(tiny_siglip2())
    toks = image_tokens(image(2, 2, 0, p=8), "big", p=8)
    with pytest.raises(ValueError, match="patch_size 4"):
        tower.encode(pack([[toks]], seq_len=8))


def _qwen_alone(visual, img):
    raw = qwen2_vl_processor()([img], return_tensors="pt", input_data_format="channels_last")
    return visual(raw["pixel_values"], grid_thw=raw["image_grid_thw"])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_qwen2_vl_packed_equals_alone(attn):
    visual = tiny_qwen2_vl_visual(attn=attn)
    tower = PackedQwen2VLVision(visual)
    grids = [(2, 4), (4, 4), (6, 2), (2, 2), (4, 6), (8, 4)]
    imgs, batch = _batch(grids, [[0, 1], [2, 3, 4], [5]], seq_len=40)
    with torch.no_grad():
        out = tower.encode(batch)
        per_example = out.per_example()
        assert [len(t) for t in per_example] == [h * w // 4 for h, w in grids]
        for k, img in enumerate(imgs):
            alone = _qwen_alone(visual, img)
            torch.testing.assert_close(per_example[k], alone.pooler_output, rtol=0, atol=1e-5)


def test_qwen2_vl_video_packed_equals_alone():
    """A clip next to an image in one row: each equals the tower on its own HF-layout tokens."""
    visual = tiny_qwen2_vl_visual(seed=4)
    tower = PackedQwen2VLVision(visual)
    clip = video(4, 2, 4, seed=5)
    img = image(4, 2, seed=6)
    batch = pack([[video_tokens(clip, "v", tubelet=2), image_tokens(img, "i", tubelet=2)]], seq_len=32, max_per_seq=2)
    with torch.no_grad():
        out = tower.encode(batch)
        vid_out, img_out = out.per_example()
        img_alone = _qwen_alone(visual, img)
        torch.testing.assert_close(img_out, img_alone.pooler_output, rtol=0, atol=1e-5)
        alone = tower.encode(pack([[video_tokens(clip, "v", tubelet=2)]], seq_len=16))
        torch.testing.assert_close(vid_out, alone.merged, rtol=0, atol=1e-5)
    assert out.inputs.is_video.tolist() == [True, False]
    assert set(out.inputs.model_inputs()) == {"pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"}


def test_qwen2_vl_packed_trains():
    visual = tiny_qwen2_vl_visual(seed=7).train()
    _, batch = _batch([(2, 4), (4, 4), (2, 2)], [[0, 1], [2]], seq_len=24)
    PackedQwen2VLVision(visual).encode(batch).mean_pooled().square().sum().backward()
    assert visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert np.isfinite(visual.merger.mlp[0].weight.grad.numpy()).all()
