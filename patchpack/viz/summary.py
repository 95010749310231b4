"""What a packing run cost, in plain words: packed vs unpacked token slots and a few summary lines.

:class:`PackingCost` puts what packing achieved beside what the same examples would cost
without it: one example per sequence of ``L`` tokens, or each example padded to the patch
budget (the longest example the fit allows). :func:`summary_text` says it in a few lines
(``patchpack stats``, ``patchpack simulate``); :mod:`patchpack.viz.report` draws it. No
plotting library is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..stats import PackStats

__all__ = ["PackingCost", "summary_rows", "summary_text", "bucket_range"]


def bucket_range(k: int) -> str:
    """The token range of power-of-two bin ``k`` of ``tokens_per_example``: ``"129-256"``."""
    if k <= 0:
        return "1"
    lo, hi = 2 ** (k - 1) + 1, 2**k
    return str(hi) if lo == hi else f"{lo}-{hi}"


@dataclass(frozen=True)
class PackingCost:
    """Token slots (sequence positions the model computes on) with packing and without.

    Attributes:
        examples, tokens: examples packed and their kept tokens.
        sequences, seq_len: packed sequences and ``L``.
        budget: tokens of the longest example the fit allows (``None``: unbounded), the
            length every example is padded to without packing in the second way.
    """

    examples: int
    tokens: int
    sequences: int
    seq_len: int
    budget: int | None = None

    @classmethod
    def of(cls, stats: PackStats, cfg: Any = None, budget: int | None = None) -> "PackingCost":
        """From a run's stats and its :class:`~patchpack.config.LoaderConfig` (``L`` and the budget)."""
        if cfg is not None:
            from ..config import largest_example

            budget = budget or largest_example(cfg)
            seq_len = cfg.pack.seq_len
        else:
            seq_len = stats.capacity // stats.sequences if stats.sequences else 0
        return cls(stats.examples, stats.tokens, stats.sequences, seq_len, budget)

    @property
    def packed(self) -> int:
        return self.sequences * self.seq_len

    @property
    def one_per_sequence(self) -> int:
        return self.examples * self.seq_len

    @property
    def padded_to_budget(self) -> int | None:
        return None if self.budget is None else self.examples * self.budget

    def times(self, slots: int | None) -> float:
        """``slots`` as a multiple of the packed cost."""
        return (slots or 0) / self.packed if self.packed else 0.0

    def rows(self) -> list[tuple[str, int, int, float]]:
        """``(way, sequences, token slots, padding share)``: packed, then the ways without packing."""
        out = [(f"packed, {self.seq_len:,}-token sequences", self.sequences, self.packed),
               (f"one example per {self.seq_len:,}-token sequence", self.examples, self.one_per_sequence)]
        if self.padded_to_budget is not None:
            out.append((f"each example padded to the {self.budget:,}-token budget", self.examples,
                        self.padded_to_budget))
        return [(w, n, s, 1 - self.tokens / s if s else 0.0) for w, n, s in out]

    def to_dict(self) -> dict:
        ways = ("packed", "one_per_sequence", "padded_to_budget")
        return {"examples": self.examples, "tokens": self.tokens, "seq_len": self.seq_len, "budget": self.budget,
                **{w: {"sequences": n, "token_slots": s, "padding": pad, "times_packed": self.times(s)}
                   for w, (_, n, s, pad) in zip(ways, self.rows())}}


def _wait_text(wait: dict | None, workers: int | None) -> str | None:
    if not wait or not wait.get("batches"):
        return None
    ms = f"every {1e3 * wait['mean_s']:.1f} ms on average, 95% within {1e3 * wait['p95_s']:.1f} ms"
    if workers:
        return f"{ms}; waited {100 * wait['share']:.0f}% of {wait['wall_s']:.1f} s for data with {workers} workers"
    return f"{ms} (made in this process, no model: the loader's own speed)"


def summary_rows(stats: PackStats, cost: PackingCost | None = None, wait: dict | None = None,
                 workers: int | None = None) -> list[tuple[str, str]]:
    """``(what, value)`` lines of the summary, in plain words."""
    cost = cost or PackingCost.of(stats)
    rows = [
        ("examples", f"{stats.examples:,} packed into {stats.sequences:,} sequences of {cost.seq_len:,} tokens "
                     f"({stats.mean_examples_per_seq:.1f} per sequence)"),
        ("padding", f"{100 * stats.padding_fraction:.1f}% of {stats.capacity:,} token slots"),
        ("tokens", f"{stats.tokens:,} kept, {stats.dropped_tokens:,} dropped ({100 * stats.drop_fraction:.1f}% "
                   f"of {stats.source_tokens:,})"),
    ]
    if stats.examples:
        ways = cost.rows()[1:]
        for i, (way, n, slots, _) in enumerate(ways):
            rows.append(("without packing" if i == 0 else "", f"{way}: {n:,} sequences, {slots:,} token slots, "
                                                              f"{cost.times(slots):.1f}x the packed cost"))
        rows.append(("packer delay", f"an example stays in the packer while {stats.mean_wait:.0f} others arrive, "
                                     f"on average (at most {stats.max_wait:,})"))
    wait_line = _wait_text(wait, workers)
    if wait_line:
        rows.append(("batches came", wait_line))
    if stats.texts:
        rows.append(("texts", f"{stats.texts:,} tokenized, {stats.truncated_texts:,} cut to text_len"))
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(stats.error_kinds.items())) or "none"
    rows.append(("errors", f"{stats.errors:,} ({kinds})"))
    return rows


def summary_text(stats: PackStats, cost: PackingCost | None = None, wait: dict | None = None,
                 workers: int | None = None) -> str:
    """The summary as aligned lines (what ``patchpack stats`` prints)."""
    return "\n".join(f"{k:<17} {v}".rstrip() for k, v in summary_rows(stats, cost, wait, workers))
