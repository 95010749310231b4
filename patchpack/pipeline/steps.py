"""Per-example steps, numpy only: admission from the header, pixels to tokens, stored examples.

:func:`probe_sample` (header -> fit -> label) decides an example's token count before any
pixel exists; :func:`sample_tokens` (materialize -> tokenize) makes its tokens when its
sequence is batched; :func:`stored_plan` admits an already-tokenized example from a
patchpack shard. The worker stream and offline preprocessing both call these, so stored
examples equal online ones.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import decode
from ..augment import AugmentConfig, apply_pixels, draw_crop
from ..errors import SampleError
from ..fit import Plan, plan_example, replay_fit_draw
from ..sources import Sample, StoredSample, sample_label
from ..sources.labels import LABEL_MAX
from ..tokenize import tubeletize

__all__ = ["probe_sample", "plan_media", "plan_cropped", "sample_tokens", "stored_plan"]


def probe_sample(sample: Sample, fit, image, video, label_field: str, rng, augment: AugmentConfig | None = None,
                 augment_rng: np.random.Generator | None = None) -> tuple[str, Plan, int]:
    """Header-only admission of one raw sample: ``(media member name, probe, label)``.

    With ``augment`` (geometric options on), the crop and flip are drawn from the header
    size with ``augment_rng`` and the fit runs on the crop (:func:`plan_cropped`).

    Raises:
        SampleError: ``no-media`` without an image (or, with ``video``, video) member,
            ``bad-label``, or whatever the header probe finds wrong.
    """
    found = decode.media_member(sample.members, video)
    if found is None:
        names = ", ".join(sorted(sample.members)) or "none"
        raise SampleError("no-media", f"no image{'/video' if video else ''} member (members: {names})",
                          stage="source")
    member, kind = found
    label = sample_label(sample, label_field)
    header = decode.read_header(sample.members[member], kind, image, video, key=sample.key)
    if augment is not None and augment.geometric:
        return member, plan_cropped(header, fit, video, rng, augment, augment_rng), label
    plan = plan_example(header, fit, video, rng)
    plan.decode = decode.decode_plan(header, plan)
    return member, plan, label


def plan_media(data: bytes, kind: str, fit, image=None, video=None, rng: np.random.Generator | None = None, *,
               key: str = "") -> Plan:
    """One payload's plan: its header (:func:`patchpack.decode.read_header`), fitted
    (:func:`patchpack.fit.plan_example`), with the decoder's plan for a video's frames."""
    header = decode.read_header(data, kind, image, video, key=key)
    plan = plan_example(header, fit, video, rng)
    plan.decode = decode.decode_plan(header, plan)
    return plan


def plan_cropped(header, fit, video, rng, augment: AugmentConfig, augment_rng: np.random.Generator) -> Plan:
    """Draw the crop box and flip from the header size, then fit the crop: the plan's token
    count is exact before decoding. ``plan.source_size`` stays the full source size;
    ``plan.crop`` holds the box for the decoder."""
    box = draw_crop(*header.source_size, augment, augment_rng)
    plan = plan_example(replace(header, source_size=box.size), fit, video, rng)
    plan.source_size = tuple(int(v) for v in header.source_size)
    plan.crop = box
    plan.decode = decode.decode_plan(header, plan)
    return plan


def sample_tokens(data: bytes, plan: Plan, image, video, patch_size: int, tubelet: int,
                  augment: AugmentConfig | None = None, augment_rng: np.random.Generator | None = None):
    """Pixels at the planned size, cut into tokens: ``(patches [N, D], positions [N, 3])``.

    With ``augment``, its photometric options and user hook run on the pixels (``augment_rng``)
    before they are cut.

    Raises:
        SampleError: from decoding, or ``corrupt`` when the pixels do not tile.
        TransformError: the user hook changed the shape or dtype (a mistake, not bad data).
    """
    frames = decode.materialize(data, plan, image, video)
    if augment is not None and augment.photometric:
        frames = apply_pixels(frames, augment, augment_rng)
    try:
        return tubeletize(frames, patch_size, tubelet)
    except ValueError as exc:
        raise SampleError("corrupt", f"decoded pixels do not tile: {exc}", stage="tokenize") from None



def stored_plan(sample: StoredSample, fit_cfg, tubelet: int, rng: np.random.Generator | None = None) -> Plan:
    """The :class:`~patchpack.fit.Plan` of a stored example, without decoding anything.

    ``rng`` (the loader's per-example generator) is advanced as the online fit would
    advance it (:func:`patchpack.fit.replay_fit_draw`), so drop rates drawn after it
    match the online ones.

    Raises:
        SampleError: ``unsupported`` when the shard's patch size or tubelet differ from the loader's;
            ``bad-row`` when the stored tokens are not ``tubelet * p * p * 3`` wide or exceed
            their grid; ``bad-label`` for a label outside ``[-1, LABEL_MAX]``.
    """
    tok = sample.tokens
    if sample.patch_size != fit_cfg.patch_size or sample.tubelet != tubelet:
        raise SampleError(
            "unsupported",
            f"shard stores patch size {sample.patch_size}, tubelet {sample.tubelet}; "
            f"the loader wants {fit_cfg.patch_size}, {tubelet}",
            key=sample.key, shard=sample.shard, stage="source",
        )
    t, h, w = (int(g) for g in tok.grid)
    width = tubelet * fit_cfg.patch_size**2 * 3
    if tok.patches.ndim != 2 or tok.patches.shape[1] != width or len(tok) > t * h * w:
        raise SampleError("bad-row", f"stored tokens {tuple(tok.patches.shape)} do not fit grid {(t, h, w)} with "
                          f"token width {width}", key=sample.key, shard=sample.shard, stage="source")
    if not -1 <= int(tok.label) <= LABEL_MAX:
        raise SampleError("bad-label", f"stored label {int(tok.label)} is outside [-1, {LABEL_MAX}]",
                          key=sample.key, shard=sample.shard, stage="source")
    src = tuple(int(v) for v in tok.meta.get("source_size", (0, 0)))
    kind = tok.meta.get("kind", "image")
    replay_fit_draw(kind, src, fit_cfg, rng)
    t, h, w = (int(g) for g in tok.grid)
    p = sample.patch_size
    return Plan(kind, src, (h * p, w * p), (t, h, w), stored=True)
