"""What a worker stream yields: :class:`StreamBatch` rows with a typed :class:`StreamInfo`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import ErrorRecord
from ..stats import PackStats
from ..tokenize import Tokens

__all__ = ["StreamInfo", "StreamBatch"]


@dataclass
class StreamInfo:
    """What happened in a worker since its previous batch, and where it stands now.

    Attributes:
        worker: the DataLoader worker (logical index within this rank).
        consumer: ``rank * num_workers + worker``.
        epoch: the epoch the worker is reading.
        batch_index: batches this worker yielded before this one.
        stats: packing statistics since the previous batch (a delta).
        errors: error records since the previous batch.
        state: the worker's resume state after this batch (JSON-ready).
        empty: a marker batch with no rows, carrying the worker's last stats and errors.
        sources: per source name, its statistics since the previous batch (mixtures only).
        wait_seconds: seconds the loader's ``next()`` blocked for this batch (set in the main process).
    """

    worker: int
    consumer: int
    epoch: int
    batch_index: int
    stats: PackStats
    errors: list[ErrorRecord]
    state: dict
    empty: bool = False
    sources: dict[str, PackStats] = field(default_factory=dict)
    wait_seconds: float = 0.0


class StreamBatch(NamedTuple):
    """``rows``: one list of :class:`~patchpack.tokenize.Tokens` per packed sequence; ``info``."""

    rows: list[list[Tokens]]
    info: StreamInfo
