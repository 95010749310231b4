"""Evaluation of a two-tower model: image<->text retrieval recall@k and zero-shot classification.

* :func:`recall_at_k`: for each image, is its caption among the ``k`` texts most similar to
  it (image -> text), and for each caption, is its image among the ``k`` nearest images
  (text -> image). Captions that are the same token for token are one text: ranking a
  duplicate of the right caption first is a hit (``groups``). :func:`chance_recall` is the
  recall a random ranking gets with the same groups (``k / N`` when captions are unique).
* Zero-shot classification (CLIP §3.1.4): each class is named by one or more phrasings,
  each put into prompt templates (``"a photo of {}"``); a class's embedding is the mean of
  its prompts' unit-norm text embeddings, normalised again (prompt ensembling); an image
  is given the class whose embedding is most similar. Chance is ``1 / C``.
* :func:`evaluate_contrastive`: both over a sequence of packed batches.

Embeddings are the model's unit-norm ones, so similarity is the dot product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .contrastive import TwoTower, text_pairs
from .segments import flatten_slots, real_slots
from ..text import tokenize_texts

__all__ = [
    "TEMPLATES", "class_prompts", "ClassPrompts", "class_embeddings", "zero_shot_accuracy", "text_groups",
    "recall_at_k", "chance_recall", "evaluate_contrastive",
]

#: Prompt templates for zero-shot classification; ``{}`` takes a class's words.
TEMPLATES = ("a photo of {}", "a picture of {}", "an image of {}")


def class_prompts(class_words: Sequence[str | Sequence[str]], templates: Sequence[str] = TEMPLATES) -> list[list[str]]:
    """Per class, every template filled with every phrasing of the class (a string: one phrasing)."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template needs a '{}' for the class words")
    out = []
    for words in class_words:
        names = [words] if isinstance(words, str) else list(words)
        if not names:
            raise ValueError("every class needs at least one phrasing")
        out.append([t.format(w) for w in names for t in templates])
    return out


@dataclass
class ClassPrompts:
    """Tokenized prompts of ``num_classes`` classes.

    Attributes:
        text_ids: int ``[M, T]``, every prompt of every class.
        text_mask: bool ``[M, T]``.
        classes: int64 ``[M]``, the class of each prompt.
        num_classes: ``C``.
    """

    text_ids: torch.Tensor
    text_mask: torch.Tensor
    classes: torch.Tensor
    num_classes: int

    @classmethod
    def build(cls, prompts: Sequence[Sequence[str]], tokenizer: Any, text_len: int) -> "ClassPrompts":
        """From :func:`class_prompts`'s output, tokenized as the loader tokenizes captions (the
        loader's ``tokenizer`` and ``text_len``; :func:`~patchpack.text.tokenize_texts`)."""
        flat: list[str | None] = [p for ps in prompts for p in ps]
        ids, mask, _, _ = tokenize_texts([flat], tokenizer, text_len)
        classes = np.repeat(np.arange(len(prompts)), [len(ps) for ps in prompts])
        return cls(torch.from_numpy(ids[0]), torch.from_numpy(mask[0]), torch.from_numpy(classes), len(prompts))


def class_embeddings(model: TwoTower, prompts: ClassPrompts) -> torch.Tensor:
    """Unit-norm class embeddings ``[C, embed_dim]``: each class's prompt embeddings averaged."""
    device = model.logit_scale.device
    emb = model.encode_text(prompts.text_ids.to(device), prompts.text_mask.to(device))
    sums = emb.new_zeros(prompts.num_classes, emb.shape[-1]).index_add(0, prompts.classes.to(device), emb)
    return torch.nn.functional.normalize(sums, dim=-1)


def zero_shot_accuracy(image: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``image [N, K]`` whose most similar class (``classes [C, K]``) is ``labels [N]``."""
    if image.shape[0] == 0:
        return float("nan")
    pred = (image.float() @ classes.float().T).argmax(-1)
    return float((pred == labels.to(pred.device)).float().mean())


def text_groups(text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """int64 ``[N]``: the same number for texts with the same real tokens."""
    keyed = text_ids.long().masked_fill(~text_mask.bool(), -1)
    return torch.unique(keyed, dim=0, return_inverse=True)[1]


def _hits(query: torch.Tensor, keys: torch.Tensor, groups: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """bool ``[N]``: does query ``i``'s top ``k`` keys hold a key of ``i``'s group."""
    out = []
    k = min(k, keys.shape[0])
    for s in range(0, query.shape[0], block):
        top = (query[s:s + block].float() @ keys.float().T).topk(k, dim=-1).indices
        out.append((groups[top] == groups[s:s + block, None]).any(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def recall_at_k(image: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = (1, 5),
                groups: torch.Tensor | None = None) -> dict[str, float]:
    """``{"image_to_text_r{k}", "text_to_image_r{k}"}`` for paired ``image``/``text`` ``[N, K]``.

    ``groups`` (``[N]``, e.g. :func:`text_groups`) marks identical captions; default all distinct.
    """
    n = image.shape[0]
    groups = torch.arange(n, device=image.device) if groups is None else groups.to(image.device)
    out = {}
    for k in ks:
        out[f"image_to_text_r{k}"] = float(_hits(image, text, groups, k).float().mean()) if n else float("nan")
        out[f"text_to_image_r{k}"] = float(_hits(text, image, groups, k).float().mean()) if n else float("nan")
    return out


def chance_recall(groups: torch.Tensor, k: int) -> float:
    """Expected recall@k of a random ranking: mean over ``i`` of ``1 - C(N - m_i, k) / C(N, k)``,
    ``m_i`` the size of ``i``'s group."""
    n = int(groups.numel())
    if n == 0:
        return float("nan")
    k = min(k, n)
    sizes = torch.bincount(groups.cpu())[groups.cpu()].tolist()
    total = math.comb(n, k)
    return float(np.mean([1.0 - math.comb(n - m, k) / total for m in sizes]))


@dataclass
class _Embedded:
    """What :func:`evaluate_contrastive` gathers: every real slot's image embedding and label, and
    for the slots with a caption, the pair's embeddings and the caption's tokens."""

    image: torch.Tensor
    labels: torch.Tensor
    pair_image: torch.Tensor
    text: torch.Tensor
    text_ids: torch.Tensor
    text_mask: torch.Tensor


@torch.no_grad()
def _embed_batches(model: TwoTower, batches: Iterable[Any]) -> _Embedded:
    parts: list[list[torch.Tensor]] = [[] for _ in range(6)]
    for batch in batches:
        emb = model.encode_image(batch)
        real = real_slots(batch.grids)
        got = [flatten_slots(emb, real), flatten_slots(batch.labels, real)]
        if getattr(batch, "text_ids", None) is not None:
            pairs = text_pairs(batch)
            ids, mask = flatten_slots(batch.text_ids, pairs), flatten_slots(batch.text_mask, pairs).bool()
            got += [flatten_slots(emb, pairs), model.encode_text(ids, mask), ids, mask]
        for part, t in zip(parts, got):
            part.append(t.cpu())
    return _Embedded(*(torch.cat(p) if p else torch.zeros(0) for p in parts))


def evaluate_contrastive(model: TwoTower, batches: Iterable[Any], class_prompts: ClassPrompts | None = None,
                         ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Retrieval and zero-shot figures of ``model`` over ``batches`` (the model is in eval mode meanwhile).

    ``batches``: packed batches on the model's device, with ``text_ids`` / ``text_mask`` for
    retrieval (without them only zero-shot is measured). Embeddings are kept on the host.

    Returns floats: ``examples`` (real slots), ``pairs`` (those with a caption),
    ``image_to_text_r{k}`` / ``text_to_image_r{k}`` and ``chance_r{k}`` for each ``k`` (over
    the pairs; :func:`recall_at_k`), and with ``class_prompts``, ``zero_shot_accuracy`` (over
    the examples whose label is in ``0..C-1``) and ``zero_shot_chance`` (``1 / C``).
    """
    was_training = model.training
    model.eval()
    try:
        got = _embed_batches(model, batches)
        out = {"examples": float(got.image.shape[0]), "pairs": float(got.text.shape[0])}
        if got.text.shape[0]:
            groups = text_groups(got.text_ids, got.text_mask)
            out.update(recall_at_k(got.pair_image, got.text, ks, groups))
            out.update({f"chance_r{k}": chance_recall(groups, k) for k in ks})
        if class_prompts is not None:
            with torch.no_grad():
                classes = class_embeddings(model, class_prompts).cpu()
            known = (got.labels >= 0) & (got.labels < class_prompts.num_classes)
            out["zero_shot_accuracy"] = zero_shot_accuracy(got.image[known], classes, got.labels[known])
            out["zero_shot_chance"] = 1.0 / class_prompts.num_classes
    finally:
        model.train(was_training)
    return out
