"""Reference NaViT + TokenLearner over packed batches (torch).

* :mod:`.attention`: segment-masked attention backends (SDPA, FlexAttention, varlen).
* :mod:`.posemb`: factorised positional embeddings over ``(t, y, x)``.
* :mod:`.tokenlearner`: TokenLearner V1.1 / TokenFuser per example inside packed sequences.
* :mod:`.navit`: the NaViT classifier.
"""

from .attention import BACKENDS, available_backends, build_mask, segment_attention
from .navit import NaViT, NaViTConfig
from .posemb import FactorizedPosEmb, PosEmbConfig
from .tokenlearner import TokenFuser, TokenLearner, TokenLearnerConfig

__all__ = [
    "BACKENDS", "available_backends", "build_mask", "segment_attention", "NaViT", "NaViTConfig",
    "FactorizedPosEmb", "PosEmbConfig", "TokenFuser", "TokenLearner", "TokenLearnerConfig",
]
