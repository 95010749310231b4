"""Text and label sets as arrays: a batch's ``texts``, ``text_ids``/``text_mask`` and ``targets``.

Plain numpy (the loader's workers and offline preprocessing both call it): the tokenizer (any
callable ``str -> list[int]``, or an object with the Hugging Face tokenizer call convention) is
called on a batch's texts at once when it takes lists, and its ids are cut or 0-padded to
``text_len``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from .tokenize import Tokens

__all__ = ["slot_texts", "tokenize_texts", "encode_texts", "tokenizer_name", "multi_hot"]


def slot_texts(rows: Sequence[Sequence[Tokens]], slots: int, name: str) -> list[list[str | None]]:
    """The field ``name`` of every example, row by row, slot by slot (``None`` for an empty slot
    or an optional field an example lacks)."""
    return [[ex.fields.get(name) for ex in row] + [None] * (slots - len(row)) for row in rows]


def _is_hf(tokenizer: Any) -> bool:
    return hasattr(tokenizer, "model_input_names") or hasattr(tokenizer, "batch_encode_plus")


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if _is_hf(tokenizer):
        out = tokenizer(texts)
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        return [list(map(int, x)) for x in ids]
    result = []
    for text in texts:
        out = tokenizer(text)
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        result.append([int(v) for v in ids])
    return result


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's token ids, uncut (one call for a Hugging Face tokenizer, else one per text).

    Raises:
        ValueError: the tokenizer gave something that is not a list of integers (one line).
    """
    try:
        return _ids(tokenizer, texts)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"the tokenizer did not give token ids for a text ({type(exc).__name__}: "
                         f"{str(exc)[:120]}); it must map str -> list[int]") from None


def tokenizer_name(tokenizer: Any) -> str:
    """A name for a tokenizer, for shard metadata: its ``name_or_path``, else its qualified name."""
    name = getattr(tokenizer, "name_or_path", None) or getattr(tokenizer, "__qualname__", None)
    return str(name or type(tokenizer).__qualname__)[:200]


def tokenize_texts(texts: list[list[str | None]], tokenizer: Any, text_len: int
                   ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(text_ids int32 [B, E, T], text_mask bool [B, E, T], tokenized, truncated)``.

    Raises:
        ValueError: the tokenizer gave something that is not a list of integers (one line).
    """
    b, e = len(texts), max((len(r) for r in texts), default=0)
    ids = np.zeros((b, e, text_len), np.int32)
    mask = np.zeros((b, e, text_len), bool)
    where = [(i, j) for i, row in enumerate(texts) for j, t in enumerate(row) if t is not None]
    if not where:
        return ids, mask, 0, 0
    encoded = encode_texts(tokenizer, [texts[i][j] for i, j in where])
    truncated = 0
    for (i, j), seq in zip(where, encoded):
        n = min(len(seq), text_len)
        truncated += len(seq) > text_len
        ids[i, j, :n] = seq[:n]
        mask[i, j, :n] = True
    return ids, mask, len(where), truncated


def multi_hot(rows: Sequence[Sequence[Tokens]], slots: int, num_classes: int) -> np.ndarray:
    """float32 ``[B, E, C]``: 1 at every label of each example's label set.

    Raises:
        ValueError: a label is not below ``num_classes`` (names the example).
    """
    out = np.zeros((len(rows), slots, num_classes), np.float32)
    for i, row in enumerate(rows):
        for j, ex in enumerate(row):
            for label in ex.label_set:
                if not 0 <= label < num_classes:
                    raise ValueError(f"example {ex.key!r} has label {label}, not below num_classes={num_classes}")
                out[i, j, label] = 1.0
    return out
