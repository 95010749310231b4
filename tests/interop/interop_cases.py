"""Small packed batches with known pixels, and tiny random transformers models, for interop tests."""

from __future__ import annotations

import numpy as np
import torch

import patchpack

P = 4  # patch size of every tiny model here


def image(grid_h: int, grid_w: int, seed: int, p: int = P) -> np.ndarray:
    """uint8 ``[gh*p, gw*p, 3]`` noise: every pixel differs, so any reordering shows."""
    return np.random.default_rng(seed).integers(0, 256, (grid_h * p, grid_w * p, 3), dtype=np.uint8)


def video(frames: int, grid_h: int, grid_w: int, seed: int, p: int = P) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, grid_h * p, grid_w * p, 3), dtype=np.uint8)


def image_tokens(img: np.ndarray, key: str, p: int = P, tubelet: int = 1, label: int = 0) -> patchpack.Tokens:
    """An image as patchpack tokens; ``tubelet > 1`` repeats it to ``pt`` frames as a video loader does."""
    if tubelet == 1:
        patches, positions = patchpack.patchify(img, p)
    else:
        patches, positions = patchpack.tubeletize(np.repeat(img[None], tubelet, axis=0), p, tubelet)
    gh, gw = img.shape[0] // p, img.shape[1] // p
    return patchpack.Tokens(key=key, patches=patches, positions=positions, grid=(1, gh, gw), label=label)


def video_tokens(clip: np.ndarray, key: str, p: int = P, tubelet: int = 2, label: int = 0) -> patchpack.Tokens:
    patches, positions = patchpack.tubeletize(clip, p, tubelet)
    t, h, w = clip.shape[0] // tubelet, clip.shape[1] // p, clip.shape[2] // p
    return patchpack.Tokens(key=key, patches=patches, positions=positions, grid=(t, h, w), label=label)


def shuffled(tokens: patchpack.Tokens, seed: int, keep: float = 1.0) -> patchpack.Tokens:
    """The same example with its tokens permuted (and a fraction dropped when ``keep < 1``)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokens))[: max(1, int(round(len(tokens) * keep)))]
    return patchpack.Tokens(key=tokens.key, patches=tokens.patches[order], positions=tokens.positions[order],
                            grid=tokens.grid, label=tokens.label)


def pack(rows: list[list[patchpack.Tokens]], seq_len: int, max_per_seq: int | None = None) -> "patchpack.PackedBatch":
    return patchpack.collate(rows, seq_len=seq_len, max_per_seq=max_per_seq)


def tiny_siglip2(seed: int = 0, attn: str = "sdpa", pos_side: int = 4):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(seed)
    cfg = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              patch_size=P, num_patches=pos_side * pos_side, vision_use_head=True)
    return Siglip2VisionModel._from_config(cfg, attn_implementation=attn).eval()


def tiny_qwen2_vl_visual(seed: int = 0, attn: str = "sdpa"):
    from transformers import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    torch.manual_seed(seed)
    cfg = Qwen2VLVisionConfig(depth=2, embed_dim=32, hidden_size=24, num_heads=2, patch_size=P,
                              temporal_patch_size=2, spatial_merge_size=2, in_channels=3, mlp_ratio=2)
    return Qwen2VisionTransformerPretrainedModel._from_config(cfg, attn_implementation=attn).eval()


def siglip2_processor(**kw):
    from transformers import Siglip2ImageProcessorPil

    return Siglip2ImageProcessorPil(patch_size=P, do_resize=False, **kw)


def qwen2_vl_processor(**kw):
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=P, merge_size=2, temporal_patch_size=2, do_resize=False, **kw)
