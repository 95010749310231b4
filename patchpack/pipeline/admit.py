"""The admit stage: samples in, :class:`~patchpack.pipeline.held.Held` examples (or records) out.

Each arrival is admitted with *its own source's* config (``configs[arrival.source]``, passed
down, never swapped on a shared object), from its header alone
(:func:`~patchpack.pipeline.admission.admit_sample`). A failure is an
:class:`~patchpack.errors.ErrorRecord` with the sample's key; an exception no step typed is a
``failed`` record. Only a user transform's :class:`~patchpack.augment.TransformError` stops the
stream (a mistake, not bad data). The stage holds nothing: its state is its parent's.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from ..augment import TransformError
from ..config import LoaderConfig
from ..errors import ErrorKind, ErrorRecord, SampleError
from .admission import admit_sample
from .held import Held
from .read import Arrival, EpochEnd, ReadStage

__all__ = ["AdmitStage", "failed_record"]


def failed_record(key: str, shard: str, stage: str, exc: BaseException) -> ErrorRecord:
    """The record of an exception no step typed."""
    return ErrorRecord(key[:512], shard, stage, ErrorKind.FAILED, f"{type(exc).__name__}: {str(exc)[:300]}")


class AdmitStage:
    """Admission of every arrival of ``parent`` with its source's config (module doc)."""

    def __init__(self, parent: ReadStage, configs: Sequence[LoaderConfig]) -> None:
        self.parent, self.configs = parent, list(configs)

    def state_dict(self) -> dict:
        return {"parent": self.parent.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.parent.load_state_dict(state["parent"])

    def __iter__(self) -> Iterator[Held | ErrorRecord | EpochEnd]:
        for item in self.parent:
            yield self.admit(item) if isinstance(item, Arrival) else item

    def admit(self, arrival: Arrival) -> Held | ErrorRecord:
        sample = arrival.sample
        try:
            return admit_sample(sample, self.configs[arrival.source], arrival.source, arrival.epoch,
                                arrival.fraction)
        except SampleError as err:
            return err.record(sample.key[:512], sample.shard)
        except TransformError:
            raise
        except Exception as exc:  # an untyped failure on one sample must not stop the stream
            return failed_record(sample.key, sample.shard, "probe", exc)
