"""A packed two-tower (image-text) model trained contrastively, SigLIP style.

Image tower: patchpack's packed :class:`~patchpack.model.NaViT` (segment-masked attention,
factorised positions, optional TokenLearner, mean or MAP pooling) without its classifier:
:class:`ImageTower` gives one feature vector per example slot, ``[B, E, dim]``. Text
tower: :class:`~patchpack.model.text.TextTransformer` over each slot's caption. Each tower
ends in a linear projection to ``embed_dim`` and an L2 normalisation. The loss scale
``t = exp(t')`` and bias ``b`` are learnable scalars (SigLIP, arXiv 2303.15343, §3.2:
``t`` starts at 10, ``b`` at -10).

Pairs: an example enters the loss when its slot is real (:func:`~.segments.real_slots`, the
same test the image tower masks with) and it has a caption (``text_mask`` has a real
token). Those slots are flattened row-major (:func:`~.losses.flatten_slots`) into ``N``
image and ``N`` text embeddings; the text tower runs on those ``N`` captions only.

The batch is a :class:`~patchpack.loader.batch.PackedBatch` (or anything with its fields)
carrying ``text_ids`` int ``[B, E, T]`` and ``text_mask`` bool ``[B, E, T]`` beside the
image tensors. Each image's embedding equals its embedding alone, whatever its neighbours
in the row, and no gradient crosses examples inside a tower (tested); only the loss
couples examples.

Training step (what a training loop calls; ``loss`` is a name in :data:`~.losses.LOSSES`)::

    loss = contrastive_step(model, batch.to(device), loss="sigmoid", chunk=None)
    loss.backward(); opt.step()
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .losses import contrastive_loss
from .segments import flatten_slots, real_slots
from .navit import NaViT, NaViTConfig
from .text import TextConfig, TextTransformer

__all__ = ["TwoTowerConfig", "TwoTower", "ImageTower", "ContrastiveOutput", "contrastive_step", "text_pairs"]


def _default_image() -> NaViTConfig:
    return NaViTConfig(pool="map")


@dataclass
class TwoTowerConfig:
    """Two-tower hyper-parameters.

    Attributes:
        image: the image tower's :class:`NaViTConfig` (``num_classes`` is ignored: the tower
            has no classifier). Default: NaViT's defaults with MAP pooling, as SigLIP.
        text: the text tower's :class:`TextConfig`.
        embed_dim: width of the shared embedding space (both projections' output).
        init_scale: ``t`` at initialisation (SigLIP: 10; CLIP's softmax loss: 1 / 0.07).
        init_bias: ``b`` at initialisation (SigLIP: -10; the softmax loss ignores it).
        max_scale: ``t`` is clamped to at most this in the forward (CLIP's 100).
    """

    image: NaViTConfig = field(default_factory=_default_image)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    init_scale: float = 10.0
    init_bias: float = -10.0
    max_scale: float = 100.0

    def __post_init__(self) -> None:
        if isinstance(self.image, dict):
            self.image = NaViTConfig.from_dict(self.image)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not 0 < self.init_scale <= self.max_scale:
            raise ValueError(f"init_scale must be in (0, max_scale={self.max_scale}], got {self.init_scale}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TwoTowerConfig":
        return cls(**d)

    def build(self) -> "TwoTower":
        return TwoTower(self)


class ImageTower(NaViT):
    """NaViT without a classifier: ``forward(patches, segment_ids, positions, grids) -> [B, E, dim]``.

    The features are NaViT's pooled slot vectors after its final LayerNorm, zero for
    empty slots (:func:`~.segments.real_slots`). ``cfg.num_classes`` is not used.
    """

    def __init__(self, cfg: NaViTConfig | None = None):
        super().__init__(replace(cfg or NaViTConfig(), num_classes=1))
        self.head = nn.Identity()

    def forward(self, patches: torch.Tensor, segment_ids: torch.Tensor, positions: torch.Tensor,
                grids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pooled, _ = self.forward_features(patches, segment_ids, positions, grids)
        return self.norm(pooled) * real_slots(grids)[..., None]


@dataclass
class ContrastiveOutput:
    """What :meth:`TwoTower.forward` returns.

    Attributes:
        image, text: unit-norm embeddings ``[N, embed_dim]``; row ``i`` of each is a pair.
        scale, bias: the loss's ``t`` and ``b`` (0-d tensors).
        pairs: bool ``[B, E]``, the slots the ``N`` rows come from (row-major).
    """

    image: torch.Tensor
    text: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor
    pairs: torch.Tensor

    def loss(self, name: str = "sigmoid", chunk: int | None = None) -> torch.Tensor:
        """The contrastive loss ``name`` over the ``N`` pairs (see :mod:`.losses`)."""
        return contrastive_loss(name, self.image, self.text, self.scale, self.bias, chunk)


def text_pairs(batch: Any) -> torch.Tensor:
    """bool ``[B, E]``: slots that hold an example with a caption (a real text token)."""
    for name in ("text_ids", "text_mask"):
        if getattr(batch, name, None) is None:
            raise ValueError(f"the batch has no {name}: a two-tower model needs captions tokenized by the loader "
                             "(give it a tokenizer and text_len)")
    return real_slots(batch.grids) & batch.text_mask.bool().any(-1)


class TwoTower(nn.Module):
    """The packed two-tower model; see the module docstring."""

    def __init__(self, cfg: TwoTowerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TwoTowerConfig()
        self.image = ImageTower(cfg.image)
        self.text = TextTransformer(cfg.text)
        self.image_proj = nn.Linear(cfg.image.dim, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.text.dim, cfg.embed_dim)
        for proj in (self.image_proj, self.text_proj):
            nn.init.trunc_normal_(proj.weight, std=0.02)
            nn.init.zeros_(proj.bias)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_bias)))

    @property
    def scale(self) -> torch.Tensor:
        """``t = exp(t')``, clamped to ``max_scale``."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_scale)

    def encode_image(self, batch: Any) -> torch.Tensor:
        """Unit-norm image embeddings ``[B, E, embed_dim]``; zero for empty slots."""
        feats = self.image(batch.patches, batch.segment_ids, batch.positions, batch.grids)
        return F.normalize(self.image_proj(feats).float(), dim=-1) * real_slots(batch.grids)[..., None]

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings ``[..., embed_dim]`` for ``text_ids``/``text_mask`` ``[..., T]``;
        zero for texts without a real token."""
        lead, t = text_ids.shape[:-1], text_ids.shape[-1]
        ids, mask = text_ids.reshape(-1, t), text_mask.reshape(-1, t).bool()
        feats = self.text_proj(self.text(ids, mask)).float()
        out = F.normalize(feats, dim=-1) * mask.any(-1, keepdim=True)
        return out.reshape(*lead, -1)

    def forward(self, batch: Any) -> ContrastiveOutput:
        """Embeddings of the batch's image-text pairs (:func:`text_pairs`), with ``t`` and ``b``."""
        pairs = text_pairs(batch)
        image = flatten_slots(self.encode_image(batch), pairs)
        text = self.encode_text(flatten_slots(batch.text_ids, pairs), flatten_slots(batch.text_mask, pairs))
        return ContrastiveOutput(image, text, self.scale, self.logit_bias, pairs)


def contrastive_step(model: TwoTower, batch: Any, loss: str = "sigmoid", chunk: int | None = None) -> torch.Tensor:
    """The contrastive loss of ``model`` on ``batch`` (forward only; the caller runs backward and the optimizer).

    Args:
        model: a :class:`TwoTower` (or anything whose ``forward(batch)`` returns a :class:`ContrastiveOutput`).
        batch: a packed batch with ``text_ids`` / ``text_mask``, on the model's device.
        loss: ``"sigmoid"`` (SigLIP) or ``"softmax"`` (CLIP), or a name added to :data:`~.losses.LOSSES`.
        chunk: compute the loss in blocks of this many rows (memory ``N * chunk`` instead of
            ``N^2``; same value and gradients); ``None`` for the full loss.
    """
    return model(batch).loss(loss, chunk)
