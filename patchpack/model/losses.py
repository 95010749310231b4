"""Contrastive image-text losses over the real examples of a packed batch.

Which slots are examples: :func:`real_slots` (``grids[b, e].prod() > 0``) is the one
test, used by the image tower's masking and by the losses; :func:`flatten_slots` turns
``[B, E, ...]`` into ``[N, ...]`` over those slots (row-major, so example ``n`` is the
``n``-th real slot reading the rows in order). Empty slots never enter a loss.

Losses take unit-norm embeddings ``image [N, K]`` and ``text [N, K]`` (row ``i`` of each
is a pair), the scale ``t`` and the bias ``b`` (tensors, usually learnable), and return a
scalar. Registered in :data:`LOSSES` by name:

* ``"sigmoid"``: SigLIP (Zhai et al. 2023, arXiv 2303.15343, §3.2, in the sign convention of
  its Algorithm 1): every image-text pair is a binary classification::

      L = -1/N * sum_i sum_j log sigmoid(z_ij * (t * x_i . y_j + b)),  z_ij = 1 if i == j else -1

  SigLIP starts ``t = exp(t')`` at 10 and ``b`` at -10 (the many negatives dominate at first).
* ``"softmax"``: CLIP's InfoNCE (SigLIP §3.1), softmax over each row and each column::

      L = -1/(2N) * sum_i [ log softmax_j(t x_i . y_j)_i + log softmax_j(t x_j . y_i)_i ]

  (the bias plays no part; CLIP starts ``t`` at 1 / 0.07).

``chunk``: with ``chunk=c`` the ``N x N`` logits are never held whole. The sum is cut into
blocks of ``c`` rows (and, for the softmax loss's column term, ``c`` columns), each block
computed under :func:`torch.utils.checkpoint.checkpoint`: the forward keeps only the
embeddings, and the backward recomputes one ``c x N`` block at a time. Peak memory grows as
``N * c`` instead of ``N^2``; the value and the gradients equal the full loss's. NaViT (arXiv
2307.06304, §2.3, "Padding examples and the contrastive loss") needs this: a batch holds up to
``B * E`` examples, and a dense loss over them would bound ``E``. SigLIP §3.3 chunks the same
sum across devices; here the chunks are in time on one device.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..registry import Registry
from .segments import flatten_slots, real_slots

__all__ = ["sigmoid_loss", "softmax_loss", "contrastive_loss", "LOSSES"]

#: ``fn(image [N, K], text [N, K], scale, bias, chunk) -> scalar``
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, "int | None"], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("contrastive loss", hint="patchpack.model.losses.LOSSES.register")


def _blocks(n: int, chunk: int | None) -> list[tuple[int, int]]:
    step = n if not chunk or chunk >= n else int(chunk)
    return [(s, min(n, s + step)) for s in range(0, n, max(1, step))]


def _by_blocks(block_loss: Callable[..., torch.Tensor], rows: torch.Tensor, cols: torch.Tensor,
               scale: torch.Tensor, bias: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``sum over row blocks [s, e) of block_loss(rows[s:e], cols, scale, bias, s)``; checkpointed per block
    when ``chunk`` cuts the rows and autograd records."""
    n = rows.shape[0]
    blocks = _blocks(n, chunk)
    if len(blocks) <= 1:
        return block_loss(rows, cols, scale, bias, 0)
    record = torch.is_grad_enabled() and any(t.requires_grad for t in (rows, cols, scale, bias))
    total = _wide(rows).new_zeros(())
    for s, e in blocks:
        if record:
            total = total + checkpoint(block_loss, rows[s:e], cols, scale, bias, s, use_reentrant=False)
        else:
            total = total + block_loss(rows[s:e], cols, scale, bias, s)
    return total


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision embeddings are summed in fp32; fp64 stays fp64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _pair_logits(rows: torch.Tensor, cols: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _wide(scale) * (_wide(rows) @ _wide(cols).T)


def _sigmoid_block(rows, cols, scale, bias, offset: int) -> torch.Tensor:
    """``sum_ij -log sigmoid(z_ij l_ij)`` over the block, as ``sum_ij softplus(l_ij) - sum_i l_ii``
    (``-log sigmoid(-l) = softplus(l)``, ``-log sigmoid(l) = softplus(l) - l``): no ``z`` matrix."""
    logits = _pair_logits(rows, cols, scale) + _wide(bias)
    c = rows.shape[0]
    positives = logits[torch.arange(c, device=logits.device), torch.arange(offset, offset + c, device=logits.device)]
    return F.softplus(logits).sum() - positives.sum()


def _softmax_block(rows, cols, scale, bias, offset: int) -> torch.Tensor:
    logits = _pair_logits(rows, cols, scale)
    target = torch.arange(offset, offset + rows.shape[0], device=logits.device)
    return F.cross_entropy(logits, target, reduction="sum")


def _check_pairs(image: torch.Tensor, text: torch.Tensor) -> None:
    if image.dim() != 2 or image.shape != text.shape:
        raise ValueError(f"image and text embeddings must both be [N, K]; got {tuple(image.shape)} and "
                         f"{tuple(text.shape)}")


@LOSSES.register("sigmoid")
def sigmoid_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                 chunk: int | None = None) -> torch.Tensor:
    """SigLIP's sigmoid loss (module docstring): ``-1/N sum_ij log sigmoid(z_ij (t x_i.y_j + b))``; 0 for N = 0."""
    _check_pairs(image, text)
    total = _by_blocks(_sigmoid_block, image, text, scale, bias, chunk)
    return total / max(1, image.shape[0])


@LOSSES.register("softmax")
def softmax_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 chunk: int | None = None) -> torch.Tensor:
    """CLIP's InfoNCE (module docstring): image->text and text->image cross-entropy, averaged; 0 for N = 0."""
    _check_pairs(image, text)
    unused = scale.new_zeros(()) if bias is None else bias
    rows = _by_blocks(_softmax_block, image, text, scale, unused, chunk)
    cols = _by_blocks(_softmax_block, text, image, scale, unused, chunk)
    return (rows + cols) / (2 * max(1, image.shape[0]))


def contrastive_loss(name: str, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """The loss registered as ``name`` (``"sigmoid"`` or ``"softmax"``, or one added to :data:`LOSSES`)."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1 (or None for the full loss), got {chunk}")
    return LOSSES.get(name)(image, text, scale, bias, chunk)
