"""Reference NaViT + TokenLearner over packed batches (torch).

* :mod:`.segments`: segment reductions and layouts derived from ``segment_ids`` (no host syncs).
* :mod:`.attention`: segment-masked attention (:mod:`.backends`: window, SDPA, FlexAttention,
  varlen in one registry with capability checks; :mod:`.masks`: the mask forms).
* :mod:`.posemb`: NaViT's positional embeddings over ``(t, y, x)`` (factorized learned / sin-cos /
  Fourier, absolute or fractional; learned 2-D and resized ViT 1-D baselines).
* :mod:`.tokenlearner`: TokenLearner V1.0 / V1.1 and TokenFuser per example inside packed sequences
  (:mod:`.learned_layout`: where the learned tokens sit in the batch).
* :mod:`.heads`: per-slot pooling (masked mean, MAP head).
* :mod:`.navit`: the NaViT classifier.
* :mod:`.flops`: training FLOPs with attention counted analytically.
"""

from .attention import BACKENDS, available_backends, build_mask, explain_backend, segment_attention
from .flops import H100_BF16_PEAK_FLOPS, attention_flops, mfu, train_flops
from .heads import MAPHead
from .navit import NaViT, NaViTConfig
from .posemb import PosEmb, PosEmbConfig
from .tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig

__all__ = [
    "BACKENDS", "available_backends", "build_mask", "explain_backend", "segment_attention", "NaViT", "NaViTConfig",
    "PosEmb", "PosEmbConfig", "TokenFuser", "TokenLearner", "TokenLearnerConfig", "MAPHead",
    "attention_flops", "train_flops", "mfu", "H100_BF16_PEAK_FLOPS",
]
