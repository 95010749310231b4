"""A small text transformer for the text tower of a two-tower (image-text) model.

Input is ``text_ids`` int ``[N, T]`` with ``text_mask`` bool ``[N, T]`` (True = a real token,
right-padded, as HF tokenizers pad by default); output is one float32 vector ``[N, dim]``
per text. Flow: token embedding + learned position embedding -> pre-norm transformer
blocks (NaViT's :class:`~patchpack.model.navit.Block`, so the same attention backends,
fp32 residual stream and ``save_memory`` recomputation) whose attention sees only each
text's real tokens (a key-padding mask: the mask is built from ``text_mask`` as one
segment per text) -> final LayerNorm -> pooling.

Pooling (``TextConfig.pool``):

* ``"mean"`` (default): the mean over the real tokens; it needs no special token and
  does not depend on where the tokenizer puts EOS.
* ``"last"``: the last real token (the EOS token when the tokenizer appends one, as
  CLIP and SigLIP pool). With bidirectional attention every token sees the whole text.

A text with no real token (a missing caption) pools to zeros; the two-tower model keeps
such slots out of the loss. The loader tokenizes (``LoaderConfig.tokenizer``, ``text_len``;
:func:`patchpack.text.tokenize_texts`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .attention import build_mask
from .navit import Block
from .segments import check

__all__ = ["TextConfig", "TextTransformer", "TEXT_POOLS"]

TEXT_POOLS = ("mean", "last")


@dataclass
class TextConfig:
    """Text transformer hyper-parameters.

    Attributes:
        vocab_size: token ids are in ``[0, vocab_size)`` (checked on the device).
        text_len: most tokens per text (the learned position table's length); the
            loader's ``text_len`` must not exceed it. 64 as SigLIP.
        dim, depth, heads, mlp_ratio: width, blocks, attention heads, MLP hidden / dim.
        pool: ``"mean"`` or ``"last"`` (module docstring).
        qk_norm: LayerNorm on queries and keys.
        dropout: on attention / MLP outputs, training only.
        attention: attention backend (``"auto"`` or one of ``attention.BACKENDS``).
        save_memory: recompute the MLP's tail in backward (see ``NaViTConfig.save_memory``).
    """

    vocab_size: int = 32_000
    text_len: int = 64
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    pool: str = "mean"
    qk_norm: bool = True
    dropout: float = 0.0
    attention: str = "auto"
    save_memory: bool = False

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"text dim={self.dim} is not divisible by heads={self.heads}")
        if self.pool not in TEXT_POOLS:
            raise ValueError(f"unknown text pool {self.pool!r}; expected one of {TEXT_POOLS}")
        if self.vocab_size < 1 or self.text_len < 1:
            raise ValueError("vocab_size and text_len must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextTransformer(nn.Module):
    """``forward(text_ids [N, T], text_mask [N, T]) -> [N, dim]`` float32; see the module docstring."""

    def __init__(self, cfg: TextConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TextConfig()
        self.token = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.position_table = nn.Parameter(torch.zeros(cfg.text_len, cfg.dim))
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.dropout, cfg.save_memory)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.position_table, std=0.02)

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if text_ids.dim() != 2 or text_mask.shape != text_ids.shape:
            raise ValueError(f"text_ids and text_mask must both be [N, T]; got {tuple(text_ids.shape)} and "
                             f"{tuple(text_mask.shape)}")
        t = text_ids.shape[1]
        if t > cfg.text_len:
            raise ValueError(f"texts of {t} tokens are longer than TextConfig.text_len={cfg.text_len}; "
                             "tokenize to at most text_len or raise it")
        ids = text_ids.long()
        check((ids >= 0) & (ids < cfg.vocab_size), f"a token id is outside [0, vocab_size={cfg.vocab_size})")
        real = text_mask.bool()
        x = (self.token(ids) + self.position_table[:t]).float()
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        mask = build_mask(real.int(), cfg.attention, num_slots=1, dtype=dtype,
                          requires_grad=torch.is_grad_enabled() and self.token.weight.requires_grad)
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.norm(x).float()
        return self._pool(x, real)

    def _pool(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        w = real.float()
        if self.cfg.pool == "mean":
            return (x * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
        steps = torch.arange(real.shape[1], device=real.device)
        last = (steps * real).amax(1)  # the last real token's index (0 for an empty text)
        pooled = x[torch.arange(x.shape[0], device=x.device), last]
        return pooled * real.any(1, keepdim=True)
