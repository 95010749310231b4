"""Feed patchpack's packed batches to the encoders people train.

Converters (pure functions of a :class:`~patchpack.PackedBatch` plus a few sizes; uint8
out, normalise on the device with :func:`normalize`):

================== ======================================================================
converter          layout
================== ======================================================================
``to_qwen2_vl``    Qwen2-VL / Qwen2.5-VL: flat ``[sum N, C*tp*p*p]``, ``grid_thw``, ``cu_seqlens``
``to_siglip2``     SigLIP2 NaFlex processor: ``pixel_values [n, N, p*p*C]``,
                   ``pixel_attention_mask``, ``spatial_shapes``
``to_timm_naflex`` timm NaFlexViT: ``patches``, ``patch_coord``, ``patch_valid``
================== ======================================================================

Packed towers (the unchanged ``transformers`` weights, run on packed rows):
:class:`PackedSiglip2Vision`, :class:`PackedQwen2VLVision`.

``transformers`` and ``timm`` are optional: nothing here imports them; the towers wrap a
model you built with them.
"""

from .common import MEAN_STD, IncompleteGridError, example_slots, gather_examples, normalize
from .qwen2_vl import PackedQwen2VLOutput, PackedQwen2VLVision, Qwen2VLInputs, merge_grid, to_qwen2_vl
from .siglip2 import PackedSiglip2Output, PackedSiglip2Vision, block_attention_mask, to_siglip2
from .timm_naflex import to_timm_naflex

__all__ = [
    "MEAN_STD", "IncompleteGridError", "example_slots", "gather_examples", "normalize",
    "Qwen2VLInputs", "to_qwen2_vl", "merge_grid", "PackedQwen2VLVision", "PackedQwen2VLOutput",
    "to_siglip2", "PackedSiglip2Vision", "PackedSiglip2Output", "block_attention_mask",
    "to_timm_naflex",
]
