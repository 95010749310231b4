"""Reference NaViT + TokenLearner over packed batches (torch).

* :mod:`.segments`: segment reductions and layouts derived from ``segment_ids`` (no host syncs).
* :mod:`.attention`: segment-masked attention backends (window, SDPA, FlexAttention, varlen).
* :mod:`.posemb`: factorised positional embeddings over ``(t, y, x)``.
* :mod:`.tokenlearner`: TokenLearner V1 / V1.1 and TokenFuser per example inside packed sequences.
* :mod:`.heads`: per-slot pooling (masked mean, MAP head).
* :mod:`.navit`: the NaViT classifier.
* :mod:`.flops`: training FLOPs with attention counted analytically.
"""

from .attention import BACKENDS, available_backends, build_mask, segment_attention
from .flops import attention_flops, train_flops
from .heads import MAPHead
from .navit import NaViT, NaViTConfig
from .posemb import FactorizedPosEmb, PosEmbConfig
from .tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig

__all__ = [
    "BACKENDS", "available_backends", "build_mask", "segment_attention", "NaViT", "NaViTConfig",
    "FactorizedPosEmb", "PosEmbConfig", "TokenFuser", "TokenLearner", "TokenLearnerConfig", "MAPHead",
    "attention_flops", "train_flops",
]
