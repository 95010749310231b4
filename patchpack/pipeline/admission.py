"""Admission of one example from its header alone: plan, labels, text fields, kept tokens.

:func:`admit_sample` (media member -> header -> fit -> drop rate -> kept tokens; labels and
fields from the other members) decides an example's token count before any pixel exists;
:func:`admit_stored` does the same for an already-tokenized example of a patchpack shard.
Both return a :class:`~patchpack.pipeline.held.Held` the packer can place, or raise
:class:`~patchpack.errors.SampleError`. They are pure functions of the sample, its source's
config and where it sits in the run: the worker stream and offline preprocessing share them,
so stored examples equal online ones.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import decode
from ..augment import AugmentConfig, draw_crop
from ..config import LoaderConfig
from ..drop import drop_rate, keep_count, schedule_progress
from ..errors import SampleError
from ..example import Header, Plan
from ..fit import plan_example, replay_fit_draw
from ..rng import CROP_STREAM, FIT_STREAM, example_rng
from ..sources import Sample, StoredSample
from ..sources.fields import field_name, sample_fields
from ..sources.labels import LABEL_MAX, sample_labels
from .held import Held

__all__ = ["admit_sample", "admit_stored", "plan_media", "plan_cropped", "MAX_KEY_BYTES"]

#: Longest sample key admitted (bytes, UTF-8); a longer one is a ``bad-name`` record.
MAX_KEY_BYTES = 4096


def plan_media(data: bytes, kind: str, fit, image=None, video=None, rng: np.random.Generator | None = None, *,
               key: str = "") -> Plan:
    """One payload's plan: its header (:func:`patchpack.decode.read_header`), fitted
    (:func:`patchpack.fit.plan_example`), with the decoder's plan for a video's frames."""
    header = decode.read_header(data, kind, image, video, key=key)
    plan = plan_example(header, fit, video, rng)
    plan.decode = decode.decode_plan(header, plan)
    return plan


def plan_cropped(header: Header, fit, video, rng, augment: AugmentConfig, augment_rng: np.random.Generator) -> Plan:
    """Draw the crop box and flip from the header size, then fit the crop: the plan's token
    count is exact before decoding. ``plan.source_size`` stays the full source size;
    ``plan.crop`` holds the box for the decoder."""
    box = draw_crop(*header.source_size, augment, augment_rng)
    plan = plan_example(replace(header, source_size=box.size), fit, video, rng)
    plan.source_size = tuple(int(v) for v in header.source_size)
    plan.crop = box
    plan.decode = decode.decode_plan(header, plan)
    return plan


def _kept(plan: Plan, cfg: LoaderConfig, rng: np.random.Generator, epoch: int, fraction: float) -> int:
    n = plan.tokens
    progress = schedule_progress(epoch, fraction, cfg.drop.schedule_epochs)
    h, w = plan.size
    return keep_count(n, drop_rate(cfg.drop, n, rng, progress, cfg.training, height=h, width=w))


def example_fields(sample: Sample, cfg: LoaderConfig) -> dict[str, str | None]:
    """The text fields ``cfg.fields`` asks for (``{}`` when none)."""
    return sample_fields(sample, cfg.fields, cfg.field_max_bytes) if cfg.fields else {}


def _check_key(sample: Sample) -> None:
    if len(sample.key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise SampleError("bad-name", f"sample key of {len(sample.key)} characters is longer than "
                          f"{MAX_KEY_BYTES} bytes", stage="source")


def admit_sample(sample: Sample, cfg: LoaderConfig, source: int, epoch: int, fraction: float) -> Held:
    """Header-only admission of one raw sample (module doc).

    ``epoch`` seeds the example's randomness; ``fraction`` (where it sits in the epoch) and
    ``epoch`` give its drop-schedule progress. With geometric augmentation, the crop and flip
    are drawn from the header size and the fit runs on the crop (:func:`plan_cropped`).

    Raises:
        SampleError: ``no-media`` without an image (or, with video, video) member, ``bad-name``,
            ``bad-label``, ``bad-field``, or whatever the header probe finds wrong.
    """
    if isinstance(sample, StoredSample):
        return admit_stored(sample, cfg, source, epoch, fraction)
    _check_key(sample)
    found = decode.media_member(sample.members, cfg.video)
    if found is None:
        names = ", ".join(sorted(sample.members)) or "none"
        raise SampleError("no-media", f"no image{'/video' if cfg.video else ''} member (members: {names})",
                          stage="source")
    member, kind = found
    labels = sample_labels(sample, cfg.label_field)
    fields = example_fields(sample, cfg)
    rng = example_rng(cfg.seed, epoch, sample.key, FIT_STREAM)
    header = decode.read_header(sample.members[member], kind, cfg.image, cfg.video, key=sample.key)
    aug = cfg.active_augment
    if aug is not None and aug.geometric:
        plan = plan_cropped(header, cfg.fit, cfg.video, rng, aug, example_rng(cfg.seed, epoch, sample.key, CROP_STREAM))
    else:
        plan = plan_example(header, cfg.fit, cfg.video, rng)
        plan.decode = decode.decode_plan(header, plan)
    keep = _kept(plan, cfg, rng, epoch, fraction)
    return Held(sample.key, sample.shard, sample.index, epoch, source, member, sample.members[member], plan, keep,
                labels, fields)


def admit_stored(sample: StoredSample, cfg: LoaderConfig, source: int, epoch: int, fraction: float) -> Held:
    """Admission of an already-tokenized example from a patchpack shard: no decoding at all.

    The example's generator is advanced as the online fit would advance it
    (:func:`patchpack.fit.replay_fit_draw`), so the drop rate drawn after it matches the
    online one.

    Raises:
        SampleError: ``unsupported`` when the shard's patch size or tubelet differ from the
            loader's; ``bad-row`` when the stored tokens are not ``tubelet * p * p * 3`` wide or
            exceed their grid; ``bad-label`` for a label outside ``[-1, LABEL_MAX]``.
    """
    tok = sample.tokens
    if sample.patch_size != cfg.patch_size or sample.tubelet != cfg.tubelet:
        raise SampleError("unsupported", f"shard stores patch size {sample.patch_size}, tubelet {sample.tubelet}; "
                          f"the loader wants {cfg.patch_size}, {cfg.tubelet}", stage="source")
    t, h, w = (int(g) for g in tok.grid)
    width = cfg.tubelet * cfg.patch_size**2 * 3
    if tok.patches.ndim != 2 or tok.patches.shape[1] != width or not 1 <= len(tok) <= t * h * w:
        raise SampleError("bad-row", f"stored tokens {tuple(tok.patches.shape)} do not fit grid {(t, h, w)} with "
                          f"token width {width}", stage="source")
    if any(not 0 <= int(v) <= LABEL_MAX for v in tok.label_set):
        raise SampleError("bad-label", f"stored labels {list(tok.label_set)[:4]} outside [0, {LABEL_MAX}]",
                          stage="source")
    fields = stored_fields(tok.fields, cfg)
    src = tuple(int(v) for v in tok.meta.get("source_size", (0, 0)))
    kind = tok.meta.get("kind", "image")
    rng = example_rng(cfg.seed, epoch, sample.key, FIT_STREAM)
    replay_fit_draw(kind, src, cfg.fit, rng)
    p = cfg.patch_size
    plan = Plan(kind, src, (h * p, w * p), (t, h, w), stored=True)
    keep = min(len(tok), _kept(plan, cfg, rng, epoch, fraction))
    return Held(sample.key, sample.shard, sample.index, epoch, source, "", tok, plan, keep, tuple(tok.label_set),
                fields)


def stored_fields(stored: dict[str, str | None], cfg: LoaderConfig) -> dict[str, str | None]:
    """The fields ``cfg`` asks for out of a stored example's: a required one the shard does not carry
    (or carries empty), or one over the loader's ``field_max_bytes``, is a ``bad-field``."""
    out: dict[str, str | None] = {}
    for spec in cfg.fields:
        name = field_name(spec)
        value = stored.get(name)
        if value is None and not spec.endswith("?"):
            why = "has none" if name in stored else "was made without it"
            raise SampleError("bad-field", f"required field {name!r}: the stored example {why}", stage="source")
        if value is not None and len(value.encode("utf-8")) > cfg.field_max_bytes:
            raise SampleError("bad-field", f"field {name!r} is over field_max_bytes={cfg.field_max_bytes}",
                              stage="source")
        out[name] = value
    return out
