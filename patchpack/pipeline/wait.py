"""How long the trainer waits for data: every ``next()`` of a loader timed, summarised.

:class:`DataWait` keeps the count, the sum, the largest wait and a bounded sample of recent
waits (for the 95th percentile) and the wall time the loader was iterated, so
``share = waited / wall`` is the fraction of the trainer's time spent waiting for batches.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DataWait"]


@dataclass
class DataWait:
    """Blocking time of a loader's ``next()`` calls (seconds).

    Attributes:
        batches: batches timed.
        waited: total seconds ``next()`` blocked.
        longest: the longest single wait.
        wall: seconds from the first ``next()`` of each pass to its last batch.
        recent: the last ``window`` waits (for :attr:`p95`).
    """

    batches: int = 0
    waited: float = 0.0
    longest: float = 0.0
    wall: float = 0.0
    window: int = 4096
    recent: deque = field(default_factory=deque)

    def add(self, seconds: float) -> None:
        """Count one ``next()`` that blocked ``seconds``."""
        self.batches += 1
        self.waited += seconds
        self.longest = max(self.longest, seconds)
        self.recent.append(seconds)
        if len(self.recent) > self.window:
            self.recent.popleft()

    @property
    def mean(self) -> float:
        return self.waited / self.batches if self.batches else 0.0

    @property
    def p95(self) -> float:
        return float(np.percentile(np.fromiter(self.recent, float), 95)) if self.recent else 0.0

    @property
    def share(self) -> float:
        """Fraction of the wall time spent waiting for data, in ``[0, 1]``."""
        return min(1.0, self.waited / self.wall) if self.wall > 0 else 0.0

    def summary(self) -> str:
        return (f"data wait         mean {1e3 * self.mean:.1f} ms, p95 {1e3 * self.p95:.1f} ms, "
                f"{100 * self.share:.1f}% of {self.wall:.1f} s")

    def to_dict(self) -> dict:
        return {"batches": self.batches, "waited_s": self.waited, "mean_s": self.mean, "p95_s": self.p95,
                "longest_s": self.longest, "wall_s": self.wall, "share": self.share}
