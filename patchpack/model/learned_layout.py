"""Where TokenLearner's learned tokens sit: a packed layout over the whole batch.

TokenLearner (arXiv 2106.11297) turns each example's tokens (per time step for video:
a *group*) into ``K`` learned tokens. In a packed batch the rows hold different
numbers of examples, so giving every row room for ``E`` examples (the loader's
``max_per_seq``) leaves the learned sequence mostly padding (32.9% on a real packed
stream at ``max_per_seq=32``). Instead the batch's examples are numbered across rows
(``j = 0, 1, ...`` in row, then slot order) and re-laid in ``B`` learned rows of ``R``
example *places* each: example ``j`` takes place ``j % R`` of learned row ``j // R``,
with ``K * T`` positions (``T = max_frames``; group ``t`` of the example at
``(place * T + t) * K .. + K - 1``). Attention over learned tokens is segment-masked, so
which row an example lands in changes nothing it computes.

``R`` is either static (``TokenLearnerConfig.learned_slots``; e.g. the loader's
``max_per_seq`` always fits, or a tighter examples-per-batch cap / ``B``; checked on the
device, no host read) or chosen per batch from the number ``n`` of examples present:
``R = bucket(ceil(n / B))`` with :func:`bucket_slots` rounding up to at most 8 values per
doubling, so compiled kernels are reused across batches and the rounding costs at most
1/8 of the places. That needs ``n`` on the host: one integer per forward, read through
:class:`HostInt` (on CUDA a non-blocking copy started at the top of the forward and
waited for at the TokenLearner, so the GPU keeps working meanwhile).

Indices are flat over the batch: example ``j``'s group ``t`` is group ``j * T + t`` of
the ``B * R * T`` groups, and the learned tokens ``[B, R * T * K, D]`` reshape to
``[B * R * T, K, D]`` in that order. Padding tokens and empty slots point one past the
end (a dump index).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .posemb import token_grid_sizes
from .segments import check, grid_neighbours, real_slots

__all__ = ["LearnedLayout", "learned_layout", "bucket_slots", "slots_for", "HostInt"]


def bucket_slots(slots: int) -> int:
    """``slots`` rounded up to a multiple of ``2^max(0, floor(log2 slots) - 3)``: at most 8
    values per doubling, at most 1/8 added."""
    slots = max(1, int(slots))
    step = 1 << max(0, slots.bit_length() - 4)
    return -(-slots // step) * step


def slots_for(num_examples: int, rows: int) -> int:
    """Per-batch learned places per row for ``num_examples`` examples over ``rows`` rows."""
    return bucket_slots(-(-max(1, num_examples) // max(1, rows)))


class HostInt:
    """A 0-d integer tensor read on the host once, late: ``HostInt(t).value()``.

    On CUDA the copy to pinned memory starts at construction without blocking, and
    :meth:`value` waits only for that copy (an event), so kernels queued in between
    keep the GPU busy. On the CPU it is a plain read.
    """

    def __init__(self, value: torch.Tensor) -> None:
        self.event = None
        if value.device.type == "cuda" and not torch.compiler.is_compiling():
            self.host = torch.empty((), dtype=value.dtype, pin_memory=True)
            self.host.copy_(value, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = value

    def value(self) -> int:
        if self.event is not None:
            self.event.synchronize()
        return int(self.host)


@dataclass
class LearnedLayout:
    """A batch's learned-token layout (module docstring); ``B`` rows, ``R`` places, ``T`` frames, ``K`` tokens.

    Attributes:
        segment_ids: int64 ``[B, R * T * K]``: place + 1 for the tokens of a present
            example's present time steps, 0 elsewhere.
        positions: int64 ``[B, R * T * K, 3]``: ``(t, 0, k)``.
        grids: int64 ``[B, R, 3]``: ``(T_e, 1, K)`` per present place, 0 elsewhere.
        token_group: int64 ``[B, L]``: flat group ``j * T + t`` of each input token;
            ``B * R * T`` for padding.
        example_place: int64 ``[B, E]``: flat place ``j`` of each input slot; ``B * R`` for
            empty slots.
        group_sizes: float32 ``[B * R * T]``: input tokens per group.
        neighbours: int64 ``[B, L, 9]`` 3 x 3 neighbours of each input token
            (:func:`~.segments.grid_neighbours`; TokenLearner V1.0 only, else ``None``).
        slots, frames, num_tokens: ``R``, ``T``, ``K``.
    """

    segment_ids: torch.Tensor
    positions: torch.Tensor
    grids: torch.Tensor
    token_group: torch.Tensor
    example_place: torch.Tensor
    group_sizes: torch.Tensor
    neighbours: torch.Tensor | None
    slots: int
    frames: int
    num_tokens: int

    @property
    def num_groups(self) -> int:
        """``B * R * T`` (also the dump index of :attr:`token_group`)."""
        return self.segment_ids.shape[0] * self.slots * self.frames

    @property
    def padding_fraction(self) -> torch.Tensor:
        """Share of learned positions that are padding (a 0-d tensor; read it outside the step)."""
        return (self.segment_ids == 0).float().mean()

    def to_slots(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-place ``[B, R, D]`` -> per input slot ``[B, E, D]`` (zero for empty slots)."""
        flat = pooled.reshape(-1, pooled.shape[-1])
        flat = torch.cat([flat, flat.new_zeros(1, flat.shape[-1])], 0)
        return flat[self.example_place]


def learned_layout(segment_ids: torch.Tensor, positions: torch.Tensor, grids: torch.Tensor, *, num_tokens: int,
                   frames: int, slots: int, neighbours: bool = False) -> LearnedLayout:
    """The layout of ``num_tokens`` learned tokens per group over ``slots`` places per row (module docstring).

    Args:
        segment_ids: int ``[B, L]``; positions: int ``[B, L, 3]``; grids: int ``[B, E, 3]``.
        frames: ``T``, time steps per example the layout holds (device-checked).
        slots: ``R``, example places per learned row; the batch's examples must fit in
            ``B * R`` (device-checked).
        neighbours: also find each input token's 3 x 3 neighbours (TokenLearner V1.0).
    """
    b, l = segment_ids.shape
    e, k, t_max, r = grids.shape[1], num_tokens, frames, slots
    dev = segment_ids.device
    seg, gl = segment_ids.long(), grids.long()
    check((positions[..., 0] < t_max) | (seg == 0),
          lambda: f"an example has more than token_learner.max_frames={t_max} time steps; set max_frames to the "
          "loader's frame budget / tubelet")
    present = real_slots(gl)  # [B, E]
    j = torch.cumsum(present.reshape(-1).long(), 0).reshape(b, e) - 1
    check(j[-1, -1] < b * r, lambda: f"a batch has more examples than {b} rows x learned_slots={r}; raise "
          "token_learner.learned_slots (max_per_seq always fits) or leave it None (chosen per batch)")
    place = torch.where(present, j, torch.full_like(j, b * r))  # [B, E]; empty -> dump
    slot_of_token = (seg - 1).clamp(min=0)
    t_tok = positions[..., 0].long().clamp(0, t_max - 1)
    j_tok = place.gather(1, slot_of_token)
    group = torch.where((seg > 0) & (j_tok < b * r), j_tok * t_max + t_tok, torch.full_like(seg, b * r * t_max))
    ones = torch.ones(b * l, device=dev)
    sizes = torch.zeros(b * r * t_max + 1, device=dev).index_add(0, group.reshape(-1), ones)[:-1]

    place_grid = torch.zeros(b * r + 1, 3, dtype=torch.long, device=dev)
    place_grid = place_grid.index_copy(0, place.reshape(-1), gl.reshape(-1, 3))[:-1]  # [B*R, 3]
    frames_e = place_grid[:, 0].reshape(b, r)  # T_e per place (0 when empty)
    grids_out = torch.stack([frames_e, (frames_e > 0).long(), (frames_e > 0).long() * k], -1)
    tt = torch.arange(t_max, device=dev)
    live = tt[None, None, :] < frames_e[..., None]  # [B, R, T]
    seg_out = (torch.arange(r, device=dev)[None, :, None] + 1) * live  # [B, R, T]
    seg_out = seg_out[..., None].expand(b, r, t_max, k).reshape(b, r * t_max * k)
    kk = torch.arange(k, device=dev)
    pos = torch.stack(torch.broadcast_tensors(tt[:, None], torch.zeros_like(kk)[None], kk[None]), -1)  # [T, K, 3]
    pos_out = (pos[None, None] * live[..., None, None]).reshape(b, r * t_max * k, 3)
    nbr = grid_neighbours(seg, positions, token_grid_sizes(grids, seg)) if neighbours else None
    return LearnedLayout(seg_out, pos_out, grids_out, group, place, sizes, nbr, r, t_max, k)
