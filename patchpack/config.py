"""The one config home: :class:`LoaderConfig` composes the fit, drop, pack, image and video sections.

No torch here: preprocessing, the worker stream and the command line all read this config.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from .augment import AugmentConfig
from .decode import tubelet_of
from .decode.image import ImageConfig
from .drop import DropConfig
from .errors import ERROR_POLICIES
from .fit.image import FitConfig
from .pack.config import PackConfig
from .sources import ReadOptions
from .sources.remote import RemoteConfig

__all__ = ["LoaderConfig", "ConfigWarning", "largest_example", "budget_problem", "check_stored_shards"]


class ConfigWarning(UserWarning):
    """A configuration that runs but loses data (``seq_len`` below the largest example the
    fit allows). The library warns; the command line refuses it."""


@dataclass(frozen=True)
class LoaderConfig:
    """Everything the packed loader does, with its defaults.

    Attributes:
        fit: resolution policy (patch size ``p``, patch/pixel budget, sampling).
        drop: token-drop policy (rate drawn per example).
        pack: packing policy (sequence length ``L``, ``Emax``, buffer, age bound).
        image: image decoding (background, bomb limit, resize filter).
        video: a ``patchpack.decode.video.VideoConfig`` to accept video members
            (images then become one tubelet of ``pt`` repeated frames); ``None``:
            images only.
        batch_size: packed sequences (rows) per batch.
        max_per_seq: ``E``, examples per packed sequence, which is also the example slots
            per row of a batch (``grids [B, E, 3]``). Setting it caps the packer too when
            ``pack.max_per_seq`` is unset; ``None``: ``pack.max_per_seq``, or the batch's
            largest row when that is ``None``.
        seed: seed of the shard shuffle and of every per-example generator.
        shuffle_shards: shuffle the shard order each epoch (seeded by ``(seed, epoch)``).
        epochs: epochs per pass over the loader (``None``: repeat forever). Each new
            pass (``for batch in loader``) continues with the next epoch.
        resampled: infinite stream of shards drawn with replacement per consumer
            (no exactly-once; ``epochs`` is ignored).
        training: draw drop rates (``False``: keep every token, as at evaluation). The drop
            schedule's progress comes from where each example sits in the run (its epoch and
            its shard's place in the epoch) over ``drop.schedule_epochs``.
        errors: ``"record"`` (count, report and go on) or ``"raise"`` (debugging;
            with workers the DataLoader re-raises it as ``RuntimeError``).
        errors_path: JSONL file the main process appends error records to.
        verify: how patchpack shards are checked against their manifest before use:
            ``"sha256"`` (default: each shard hashed once per process and file version,
            one extra sequential read of it), ``"size"`` or ``"none"``; a mismatch is a
            ``checksum`` record and the shard is not used.
        max_member_bytes: largest tar member or folder file read (bytes, checked before
            reading; default 256 MiB); a larger one is an ``oversize-member`` record.
        image_column: parquet and ``datasets`` sources: the column holding the image (``None``:
            the first ``Image`` struct or binary column).
        follow_outside_links: folder sources: follow symlinks whose target is outside the folder
            (default ``False``: they are ``link`` records).
        remote_retries: re-opens allowed per remote stream (``s3://``, ``https://``, ...) in all,
            waiting 0.5 s, then twice as long each time (default 5); then a ``shard`` record.
        label_field: member holding the label(s) as text integers (``"cls"``, or any member name:
            ``"label"`` for a Hugging Face ``ClassLabel`` column), or ``"json:<name>"`` for a key
            of the ``json`` member (an integer or a list of them). Missing -> unlabelled.
        fields: per-example text fields carried with each example (``PackedBatch.texts``):
            a member name (``"txt"``) or ``"json:<key>"``; a trailing ``?`` makes a field
            optional (``None`` when absent). A required field that is missing, not UTF-8,
            holding NUL bytes or over ``field_max_bytes`` is a ``bad-field`` record.
        field_max_bytes: largest field read (bytes; default 64 KiB).
        text_field: the field that fills ``PackedBatch.texts`` (default: the first of ``fields``).
        tokenizer: tokenizes ``texts`` into ``text_ids``/``text_mask [B, E, text_len]`` in the
            worker: any callable ``str -> list[int]``, or an object with the Hugging Face
            tokenizer call convention (``tok(texts, ...)["input_ids"]``). Must be picklable.
            ``None``: no token ids.
        text_len: ``T``, tokens per text (longer texts are truncated and counted).
        num_classes: ``C``: batches get multi-hot ``targets [B, E, C]`` from each example's
            label set (multi-label training); ``None``: no targets.
        rank, world_size: override the distributed position (default:
            ``torch.distributed`` when initialised, else ``RANK`` / ``WORLD_SIZE``).
        augment: training-time augmentation (:class:`~patchpack.augment.AugmentConfig`;
            ``True`` for its defaults). ``None`` (default): none, so evaluation, stats and
            previews see the data as it is. Applied only while ``training``; the crop is
            drawn from the header, so packing stays exact. Raw shards only: examples from
            patchpack shards are already tokenized and pass unchanged.
        decode_threads: threads per worker that decode, resize and tokenize a batch's
            examples (default 1: none). Batches are the same for every value; ``N``
            threads in one worker use ``N`` cores with one packer buffer.
        packed_shards: what the loader does with ``preprocess --packed`` shards when every
            source is one: ``"serve"`` (default) yields their stored rows as they are (no
            repacking, their drop and packing kept); ``"repack"`` reads their examples and
            packs them again with this config.
    """

    fit: FitConfig = field(default_factory=FitConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    video: Any | None = None
    batch_size: int = 8
    max_per_seq: int | None = None
    seed: int = 0
    shuffle_shards: bool = True
    epochs: int | None = 1
    resampled: bool = False
    training: bool = True
    errors: str = "record"
    errors_path: str | None = None
    verify: str = "sha256"
    max_member_bytes: int = 256 * 2**20
    image_column: str | None = None
    remote_retries: int = 5
    follow_outside_links: bool = False
    label_field: str = "cls"
    rank: int | None = None
    world_size: int | None = None
    augment: AugmentConfig | None = None
    decode_threads: int = 1
    packed_shards: str = "serve"
    fields: tuple[str, ...] = ()
    field_max_bytes: int = 64 * 2**10
    text_field: str | None = None
    tokenizer: Any = None
    text_len: int = 64
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fields, str):
            object.__setattr__(self, "fields", (self.fields,))
        object.__setattr__(self, "fields", tuple(self.fields))
        self._check_text()
        if self.max_per_seq is not None and self.pack.max_per_seq is None:
            object.__setattr__(self, "pack", replace(self.pack, max_per_seq=self.max_per_seq))
        if self.augment is True:
            object.__setattr__(self, "augment", AugmentConfig())
        elif self.augment is False:
            object.__setattr__(self, "augment", None)
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig, True or None, got {type(self.augment).__name__}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.errors not in ERROR_POLICIES:
            raise ValueError(f"errors must be one of {ERROR_POLICIES}, got {self.errors!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("epochs must be >= 1 or None")
        if self.max_per_seq is not None and self.max_per_seq < 1:
            raise ValueError("max_per_seq must be >= 1")
        if self.max_per_seq is not None and self.pack.max_per_seq is not None and self.pack.max_per_seq > self.max_per_seq:
            raise ValueError(f"pack.max_per_seq={self.pack.max_per_seq} exceeds max_per_seq={self.max_per_seq} "
                             "(a row cannot hold more examples than it has slots)")
        if self.verify not in ("sha256", "size", "none"):
            raise ValueError(f"verify must be 'sha256', 'size' or 'none', got {self.verify!r}")
        if self.max_member_bytes < 1:
            raise ValueError("max_member_bytes must be >= 1")
        if self.remote_retries < 0:
            raise ValueError(f"remote_retries must be >= 0, got {self.remote_retries}")
        if self.decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1, got {self.decode_threads}")
        if self.packed_shards not in ("serve", "repack"):
            raise ValueError(f"packed_shards must be 'serve' or 'repack', got {self.packed_shards!r}")
        m = self.fit.grid_multiple
        if self.video is not None and self.video.max_tokens is not None and self.video.max_tokens < m * m:
            raise ValueError(f"video max_tokens={self.video.max_tokens} is below one {m}x{m} grid "
                             f"(fit.grid_multiple={m}): raise max_tokens to at least {m * m}")
        if not self.label_field or self.label_field == "json:":
            raise ValueError("label_field must be a member name ('cls') or 'json:<key>'")
        need, have = self.batch_bytes, _physical_memory()
        if have is not None and need > have:
            raise ValueError(f"one batch would hold {need / 2**30:.1f} GiB of patches (batch_size={self.batch_size} x "
                             f"seq_len={self.pack.seq_len} x {self.token_dim} bytes per token), more than this "
                             f"machine's {have / 2**30:.1f} GiB of memory: lower seq_len, batch_size or the patch size")
        problem = budget_problem(self)
        if problem is not None:
            warnings.warn(problem, ConfigWarning, stacklevel=3)

    def _check_text(self) -> None:
        names = [f.removesuffix("?") for f in self.fields]
        for spec, name in zip(self.fields, names):
            if not isinstance(spec, str) or not name or (name.startswith("json:") and len(name) == 5):
                raise ValueError(f"fields: {spec!r} is not a member name ('txt') or 'json:<key>' (a trailing '?' "
                                 "makes it optional)")
        if len(set(names)) != len(names):
            raise ValueError(f"fields: a field is named twice in {list(self.fields)}")
        if self.text_field is not None and self.text_field not in names:
            raise ValueError(f"text_field={self.text_field!r} is not one of fields={names}")
        if self.field_max_bytes < 1 or self.text_len < 1:
            raise ValueError("field_max_bytes and text_len must be >= 1")
        if self.tokenizer is not None and not callable(self.tokenizer):
            raise TypeError(f"tokenizer must be callable (str -> list[int], or a Hugging Face tokenizer), got "
                            f"{type(self.tokenizer).__name__}")
        if self.tokenizer is not None and not names:
            raise ValueError("a tokenizer needs text: pass fields=('txt',) (or the member holding the captions)")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    @property
    def text_name(self) -> str | None:
        """The field that fills ``PackedBatch.texts``: :attr:`text_field`, else the first field."""
        return self.text_field or (self.fields[0].removesuffix("?") if self.fields else None)

    @property
    def batch_bytes(self) -> int:
        """Bytes of one batch's ``patches`` (uint8 ``[batch_size, seq_len, token_dim]``)."""
        return self.batch_size * self.pack.seq_len * self.token_dim

    @property
    def read_options(self) -> ReadOptions:
        """What the shard readers are told (:func:`patchpack.sources.read_shard`)."""
        return ReadOptions(max_member_bytes=self.max_member_bytes, verify=self.verify, image_column=self.image_column,
                           remote=RemoteConfig(retries=self.remote_retries),
                           follow_outside_links=self.follow_outside_links)

    @property
    def active_augment(self) -> AugmentConfig | None:
        """The augmentation in effect: :attr:`augment` while ``training``, else ``None``."""
        return self.augment if self.training else None

    @property
    def patch_size(self) -> int:
        return self.fit.patch_size

    @property
    def tubelet(self) -> int:
        return tubelet_of(self.video)

    @property
    def token_dim(self) -> int:
        """``D = pt * p * p * 3``."""
        return self.tubelet * self.patch_size**2 * 3

    @property
    def row_slots(self) -> int | None:
        """``E`` used for batches: :attr:`max_per_seq`, else ``pack.max_per_seq`` (``None``: the batch's largest row)."""
        return self.max_per_seq if self.max_per_seq is not None else self.pack.max_per_seq

    def with_overrides(self, **overrides: Any) -> "LoaderConfig":
        """A copy with fields replaced; sub-config fields by name (``seq_len=``,
        ``patch_size=``, ``max_patches=``) or ``section__name`` (``image__max_pixels=``)."""
        own = {f.name for f in fields(self)}
        if "max_per_seq" in overrides:  # E is one concept: the packer's cap and the row's slots
            overrides.setdefault("pack__max_per_seq", overrides["max_per_seq"])
        top = {k: v for k, v in overrides.items() if k in own}
        # one replace at the end: the cross-section checks see the final config, never a half-made one
        sections = {s: top.get(s, getattr(self, s)) for s in ("fit", "drop", "pack", "image", "video", "augment")}
        if sections["augment"] is True:
            sections["augment"] = AugmentConfig()
        sections = {s: obj for s, obj in sections.items() if is_dataclass(obj)}
        nested: dict[str, dict[str, Any]] = defaultdict(dict)
        for name, value in overrides.items():
            if name in own:
                continue
            if "__" in name:
                sec, _, sub = name.partition("__")
                if sec not in sections or sub not in {f.name for f in fields(sections[sec])}:
                    raise TypeError(f"unknown loader option {name!r}" + _did_you_mean(name, own, sections))
                nested[sec][sub] = value
                continue
            owners = [s for s, obj in sections.items() if name in {f.name for f in fields(obj)}]
            if not owners:
                raise TypeError(f"unknown loader option {name!r}" + _did_you_mean(name, own, sections))
            if len(owners) > 1:
                raise TypeError(
                    f"option {name!r} is ambiguous; use one of " + ", ".join(f"{s}__{name}" for s in owners)
                )
            nested[owners[0]][name] = value
        if not top and not nested:
            return self
        return replace(self, **{**top, **{sec: replace(sections[sec], **kw) for sec, kw in nested.items()}})


# -- configuration traps -------------------------------------------------------------------------


def largest_example(cfg: LoaderConfig) -> int | None:
    """Most tokens one example can bring to the packer, or ``None`` when nothing bounds it.

    Images: the per-frame patch budget. Videos: the budget times the tubelet steps of
    ``video.frames`` (capped by ``video.max_tokens``); unbounded with ``frames=None`` and no
    ``max_tokens``. A constant drop rate without a schedule is taken off (training only).
    """
    from .drop import keep_count

    budget = cfg.fit.patch_budget
    if budget is None:
        return None
    tokens = budget
    video = cfg.video
    if video is not None:
        steps = None
        if video.frames:
            from .fit.video import round_frames

            steps = round_frames(video.frames, video.tubelet, video.rounding) // video.tubelet
        per_video = None if steps is None else steps * budget
        if video.max_tokens is not None:
            per_video = video.max_tokens if per_video is None else min(per_video, video.max_tokens)
        if per_video is None:
            return None
        tokens = max(tokens, per_video)
    d = cfg.drop
    if cfg.training and d.kind == "constant" and d.schedule == "none":
        tokens = keep_count(tokens, d.rate)
    return tokens


def budget_problem(cfg: LoaderConfig) -> str | None:
    """Why examples the fit allows would be skipped as oversize (``pack.oversize="skip"``), or ``None``."""
    n = largest_example(cfg)
    if cfg.pack.oversize != "skip" or n is None or n <= cfg.pack.seq_len:
        return None
    what = f"max_patches={cfg.fit.patch_budget}"
    if cfg.video is not None:
        what += f" per frame, frames={cfg.video.frames}, tubelet={cfg.video.tubelet}"
        if cfg.video.max_tokens is not None:
            what += f", video max_tokens={cfg.video.max_tokens}"
    return (f"seq_len={cfg.pack.seq_len} is below the largest example the fit allows ({n} tokens: {what}), "
            f"so such examples would be skipped as oversize; raise seq_len to {n} or lower the budget")


def _did_you_mean(name: str, own: set[str], sections: dict[str, Any]) -> str:
    """``"; did you mean 'x'?"`` for the closest option names, or ``""``."""
    import difflib

    names = set(own) | {f.name for obj in sections.values() for f in fields(obj)} | \
        {f"{sec}__{f.name}" for sec, obj in sections.items() for f in fields(obj)}
    close = difflib.get_close_matches(name, sorted(names), n=2, cutoff=0.75)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _physical_memory() -> int | None:
    """This machine's memory in bytes (``None`` where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _stored_budget(fit: dict, meta: dict) -> int | None:
    p = int(fit.get("patch_size") or meta.get("patch_size") or 1)
    caps = [int(fit["max_patches"])] if fit.get("max_patches") else []
    if fit.get("max_pixels"):
        caps.append(int(fit["max_pixels"]) // p**2)
    return min(caps) if caps else None


def check_stored_shards(urls, cfg: LoaderConfig) -> None:
    """Refuse patchpack shards (``*.arrow``) that cannot serve ``cfg`` as stored.

    Stored examples keep the grid they were fitted to when preprocessed; they are not
    refitted (resampling stored pixels would no longer equal the online examples). So the
    loader must ask for the shard's patch size and tubelet, a patch budget at least the
    one the shards were made with (a larger budget reads them as they are) and a
    ``grid_multiple`` that divides the shards' one. The first shard
    of each folder is checked (a folder holds one preprocessing run).

    Raises:
        ValueError: one line naming the shard's values and the loader's, and what to change.
    """
    folders: set[str] = set()
    for url in urls:
        if not str(url).endswith(".arrow") or not os.path.isfile(url):
            continue
        folder = os.path.dirname(os.path.abspath(url))
        if folder in folders:
            continue
        folders.add(folder)
        from .storage.reader import read_shard_metadata

        try:
            meta = read_shard_metadata(url)
        except Exception:  # an unreadable shard is the reader's record, not a config mistake
            continue
        where = os.path.dirname(url) or url
        p, pt = int(meta.get("patch_size", 0)), int(meta.get("tubelet", 1))
        if (p, pt) != (cfg.patch_size, cfg.tubelet):
            raise ValueError(
                f"{where}: the shards were made with patch size {p}, tubelet {pt}; this loader asks for "
                f"patch size {cfg.patch_size}, tubelet {cfg.tubelet}: load them with patch_size={p}"
                + (f" and a video tubelet of {pt}" if pt != cfg.tubelet else "")
                + ", or preprocess the source shards again with the new values"
            )
        fit = (meta.get("config") or {}).get("fit")
        if not isinstance(fit, dict):
            continue  # written without its fit (a hand-made shard): its budget is unknown
        try:
            made_m, stored = int(fit.get("grid_multiple") or 1), _stored_budget(fit, meta)
        except (TypeError, ValueError):  # a tampered config: the reader checks each row against the budget
            continue
        asked_m = cfg.fit.grid_multiple
        if made_m % asked_m:
            raise ValueError(
                f"{where}: the shards were made with grid_multiple={made_m}; this loader asks for "
                f"grid_multiple={asked_m}, and stored examples are not refitted: preprocess the source shards "
                f"again with grid_multiple={asked_m}"
            )
        asked = cfg.fit.patch_budget
        if asked is not None and (stored is None or stored > asked):
            made = f"a budget of {stored} patches per frame" if stored else "no patch budget"
            load = f"max_patches={stored} or more" if stored else "max_patches=None"
            raise ValueError(
                f"{where}: the shards were made with {made}; this loader asks for max_patches={asked}, and "
                f"stored examples are not refitted: load them with {load}, or preprocess the source shards "
                f"again with max_patches={asked}"
            )
