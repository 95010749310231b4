"""The flags every command shares: one name, one default and one help per idea.

Each shared flag is one :class:`Flag` in :data:`FLAGS`. A *loader flag* sets one
:class:`~patchpack.config.LoaderConfig` option (``key``, spelled as for
:meth:`~patchpack.config.LoaderConfig.with_overrides`: ``seq_len``, ``pack__seq_len``,
``drop__rate``); its default is the config's, read when ``--help`` is printed, never written
here. A loader flag the user did not type is absent from the parsed namespace, so a config
file (``--config``) and the values stored in patchpack shards apply below the flags
(:mod:`patchpack.cli.options`). A *run flag* (``key=None``: ``--workers``, ``--progress``,
``--json``) is about the command, with its default here.

A command adds the groups it uses with :func:`add_flags` and turns the parsed arguments
into a config with :func:`patchpack.cli.options.loader_config`. Nothing here imports numpy
or torch: parsing, argument errors and wrong paths answer before any of it loads.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = [
    "Flag", "FLAGS", "GROUPS", "LOADER_GROUPS", "add_flags", "add_config", "flag", "flag_for_key", "given",
    "loader_default", "HelpFormatter", "positive_int", "non_negative_int", "positive_float", "non_negative_float",
    "number", "fraction", "byte_size", "optional", "name_list",
]


# -- argparse types: a bad value is one ``argument --x: ...`` line --------------------------------------------


def _number(kind: type, text: str, ok: Callable[[Any], bool], need: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {need}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer ``>= 1``."""
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """An integer ``>= 0``."""
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    return _number(float, text, lambda v: 0 < v < math.inf, "a number > 0")


def non_negative_float(text: str) -> float:
    """A finite number ``>= 0``."""
    return _number(float, text, lambda v: 0 <= v < math.inf, "a number >= 0")


def number(text: str) -> float:
    """Any finite number."""
    return _number(float, text, math.isfinite, "a finite number")


def fraction(text: str) -> float:
    """A rate in ``[0, 1)`` (token drop rates)."""
    return _number(float, text, lambda v: 0 <= v < 1, "a rate in [0, 1)")


_BYTE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def byte_size(text: str) -> int:
    """A byte count ``>= 1``, plain or with a binary unit (``64M``, ``1GiB``, ``512k``)."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in _BYTE_UNITS and t[-1:] else ""
    try:
        value = float(t[:-1] if unit else t) * _BYTE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a byte size such as 268435456, 256M or 1G, got {text!r}") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a byte size >= 1, got {text}")
    return int(value)


def optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """``kind``, or ``None`` for the word ``none`` (an option whose default may be unset)."""
    def parse(text: str) -> Any:
        return None if text.strip().lower() == "none" else kind(text)
    parse.__name__ = f"optional {kind.__name__}"
    return parse


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names (``txt,json:alt?``)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _bytes_text(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, size in (("G", 2**30), ("M", 2**20), ("k", 2**10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _value_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- the table ---------------------------------------------------------------------------------------------------


def _drop_kinds() -> tuple[str, ...]:
    from ..drop import KINDS

    return tuple(k for k in KINDS if k != "custom")  # custom needs a Python function: config in code only


def _drop_schedules() -> tuple[str, ...]:
    from ..drop import SCHEDULES

    return SCHEDULES


def _fit_modes() -> tuple[str, ...]:
    from ..fit.image import MODES

    return MODES


def _packers() -> tuple[str, ...]:
    from ..pack import PACKERS

    return tuple(PACKERS.names())


@dataclass(frozen=True)
class Flag:
    """One shared flag.

    Attributes:
        name: the flag (``--seq-len``); ``dest`` is its name in the namespace (``seq_len``).
        key: the :class:`~patchpack.config.LoaderConfig` option it sets (``with_overrides``
            spelling), or ``None`` for a run flag.
        help: what it does (the default is appended when ``--help`` is printed).
        group: the group :func:`add_flags` adds it with.
        type: argparse type; ``choices``: a function giving the allowed values (called only
            when the flag is given or ``--help`` is printed).
        default: a run flag's default (a loader flag's is the config's).
        switch: ``--x`` / ``--no-x``.
        show: how the default is written in ``--help``.
        stored: patchpack shards supply this option when it is given neither by flag nor file.
    """

    name: str
    key: str | None
    help: str
    group: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: Callable[[], Sequence[str]] | None = None
    default: Any = None
    switch: bool = False
    show: Callable[[Any], str] = _value_text
    stored: bool = False

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")


_OPT_INT = optional(positive_int)
_F = Flag
FLAGS: tuple[Flag, ...] = (
    # packing
    _F("--seq-len", "pack__seq_len", "L, tokens per packed sequence", "packing", positive_int, "L", stored=True),
    _F("--max-per-seq", "max_per_seq", "E, examples per sequence at most, also the example slots of a batch row "
       "(none: no cap; rows then have as many slots as the batch's fullest row)", "packing", _OPT_INT, "E"),
    _F("--batch-size", "batch_size", "packed sequences (rows) per batch", "packing", positive_int, "B"),
    _F("--buffer-size", "pack__buffer_size", "examples the packer holds while it fills sequences; more: less "
       "padding, more memory and a longer wait per example", "packing", positive_int, "N"),
    _F("--buffer-bytes", "pack__buffer_bytes", "bytes of compressed examples the packer may hold per worker "
       "(none: no cap); 256M, 1G", "packing", optional(byte_size), "BYTES", show=_bytes_text),
    _F("--packer", "pack__algorithm", "packing algorithm", "packing", str, "NAME", choices=_packers),
    _F("--max-wait", "pack__max_wait", "most examples that may arrive after an example before its sequence is "
       "sent (none: twice --buffer-size)", "packing", _OPT_INT, "N"),
    _F("--max-open", "pack__max_open", "sequences with free space kept open for later examples (bfd)", "packing",
       non_negative_int, "N"),
    # resolution
    _F("--patch-size", "fit__patch_size", "p, patch side in pixels", "fit", positive_int, "P", stored=True),
    _F("--max-patches", "fit__max_patches", "patch budget per frame: larger examples are shrunk to fit (none: "
       "no budget)", "fit", _OPT_INT, "N", stored=True),
    _F("--fit-mode", "fit__mode", "resolution of each example: its own (native) or drawn per example (NaViT "
       "3.2: side-* draws the side sqrt(h*w), area-* the area)", "fit", str, "MODE", choices=_fit_modes),
    _F("--fit-side-min", "fit__side_min", "drawn modes: smallest side sqrt(h*w) in pixels", "fit", positive_int, "PX"),
    _F("--fit-side-max", "fit__side_max", "drawn modes: largest side in pixels (none: the largest the patch "
       "budget holds, p*sqrt(--max-patches))", "fit", _OPT_INT, "PX"),
    _F("--fit-truncnorm-mean", "fit__truncnorm_mean", "*-truncnorm modes: mean of the normal on [-1, 1] "
       "(-1 = --fit-side-min, 1 = --fit-side-max)", "fit", number, "U"),
    _F("--fit-truncnorm-std", "fit__truncnorm_std", "*-truncnorm modes: its standard deviation", "fit",
       positive_float, "U"),
    # token dropping
    _F("--drop-kind", "drop__kind", "how each example's drop rate is drawn (a --drop-rate alone means constant)",
       "drop", str, "KIND", choices=_drop_kinds),
    _F("--drop-rate", "drop__rate", "constant: share of each example's tokens dropped", "drop", fraction, "RATE"),
    _F("--drop-rate-max", "drop__rate_max", "beta, resolution: the highest rate", "drop", fraction, "RATE"),
    _F("--drop-beta-mean", "drop__beta_mean", "beta: mean drop rate (none: --drop-rate-max / 2)", "drop",
       optional(fraction), "RATE"),
    _F("--drop-beta-var", "drop__beta_var", "beta: variance of rate / --drop-rate-max (none: 0.3 u(1-u), NaViT A.4)",
       "drop", optional(positive_float), "VAR"),
    _F("--drop-res-slope", "drop__res_slope", "resolution: mean rate = slope x tokens + intercept", "drop", number, "X"),
    _F("--drop-res-intercept", "drop__res_intercept", "resolution: the intercept of that line", "drop", number, "X"),
    _F("--drop-res-std", "drop__res_std", "resolution: standard deviation around the mean", "drop", positive_float,
       "X"),
    _F("--drop-schedule", "drop__schedule", "how the rate changes over the run (needs --drop-schedule-epochs)",
       "drop", str, "NAME", choices=_drop_schedules),
    _F("--drop-rho-max", "drop__rho_max", "schedule: multiplier of the rate at the start", "drop",
       non_negative_float, "X"),
    _F("--drop-rho-min", "drop__rho_min", "schedule: multiplier of the rate at the end", "drop", non_negative_float,
       "X"),
    _F("--drop-sigmoid-sharpness", "drop__sigmoid_sharpness", "sigmoid schedule: its steepness", "drop",
       positive_float, "X"),
    _F("--drop-schedule-epochs", "drop__schedule_epochs", "schedule: length of the run in epochs", "drop",
       optional(positive_float), "EPOCHS"),
    # video
    _F("--frames", "video__frames", "frames sampled per clip", "video", positive_int, "N"),
    _F("--fps", "video__fps", "frames per second sampled (none: --frames spread over the clip)", "video",
       optional(positive_float), "FPS"),
    _F("--tubelet", "video__tubelet", "frames per tubelet (one token spans this many frames)", "video",
       positive_int, "PT"),
    _F("--video-tokens", "video__max_tokens", "tokens per video at most; frames are traded against resolution "
       "(none: no cap)", "video", _OPT_INT, "N"),
    # reading
    _F("--decode-threads", "decode_threads", "threads per worker that decode, resize and tokenize (batches are "
       "the same for any value)", "reading", positive_int, "N"),
    _F("--max-member-bytes", "max_member_bytes", "largest tar member or file read; larger ones are error "
       "records, never read", "reading", byte_size, "BYTES", show=_bytes_text),
    _F("--verify", "verify", "how patchpack shards are checked against their manifest", "reading", str, "HOW",
       choices=lambda: ("sha256", "size", "none")),
    _F("--image-column", "image_column", "parquet and datasets sources: the column holding the image (none: "
       "the first image column)", "reading", optional(str), "NAME"),
    _F("--remote-retries", "remote_retries", "re-opens per remote shard (s3://, https://) after a failed read",
       "reading", non_negative_int, "N"),
    _F("--follow-outside-links", "follow_outside_links", "folder sources: read symlinks that lead out of the "
       "folder", "reading", switch=True),
    _F("--packed-shards", "packed_shards", "shards from preprocess --packed: serve their rows as stored, or "
       "repack their examples with these flags", "reading", str, "HOW", choices=lambda: ("serve", "repack")),
    _F("--seed", "seed", "seed of every random choice (shard order, sizes, drop rates)", "reading", int, "N"),
    _F("--errors", "errors_path", "write every error record to FILE (JSON lines)", "reading", optional(str),
       "FILE"),
    # labels and text
    _F("--label-field", "label_field", "member holding the labels: cls, any member name (label), or "
       "json:<key>", "labels", str, "NAME"),
    _F("--fields", "fields", "text fields carried with each example, comma-separated: a member (txt) or "
       "json:<key>; a trailing ? makes one optional", "labels", name_list, "NAMES"),
    _F("--text-field", "text_field", "the field that fills batch texts (none: the first of --fields)", "labels",
       optional(str), "NAME"),
    _F("--text-len", "text_len", "T, tokens per text when a tokenizer makes text_ids (longer texts are cut)",
       "labels", positive_int, "T"),
    _F("--num-classes", "num_classes", "C: give batches multi-hot targets over C classes (none: no targets)",
       "labels", _OPT_INT, "C"),
    # run flags (about the command, not the loader)
    _F("--workers", None, "worker processes (0: all work in this process)", "run", non_negative_int, "N", default=0),
    _F("--progress", None, "progress bars on stderr (default: when stderr is a terminal)", "run", switch=True),
    _F("--json", None, "print one JSON object instead of the summary", "run", default=False),
)

#: group -> its flags' names
GROUPS: dict[str, tuple[str, ...]] = {}
for _flag in FLAGS:
    GROUPS.setdefault(_flag.group, ())
    GROUPS[_flag.group] += (_flag.name,)
#: the groups of loader flags
LOADER_GROUPS = ("packing", "fit", "drop", "video", "reading", "labels")
_BY_NAME = {f.name: f for f in FLAGS}
_BY_KEY = {f.key: f for f in FLAGS if f.key is not None}


def flag(name: str) -> Flag:
    """The shared flag called ``name`` (``"--seq-len"``)."""
    return _BY_NAME[name]


def flag_for_key(key: str) -> Flag | None:
    """The shared flag that sets loader option ``key`` (``"pack__seq_len"``), if any."""
    return _BY_KEY.get(key)


def loader_default(key: str) -> Any:
    """The default of loader option ``key``: :class:`~patchpack.config.LoaderConfig`'s (a video
    option: :class:`~patchpack.decode.video.config.VideoConfig`'s)."""
    from ..config import LoaderConfig

    section, _, name = key.rpartition("__")
    if section == "video":
        from ..decode.video.config import VideoConfig

        return getattr(VideoConfig(), name)
    return getattr(getattr(LoaderConfig(), section) if section else LoaderConfig(), name)


class _Choices:
    """Allowed values computed when first needed (argparse asks only when the flag is given)."""

    def __init__(self, make: Callable[[], Sequence[str]]) -> None:
        self.make, self._values = make, None

    def values(self) -> Sequence[str]:
        if self._values is None:
            self._values = tuple(self.make())
        return self._values

    def __contains__(self, value: object) -> bool:
        return value in self.values()

    def __iter__(self):
        return iter(self.values())


def _add(parser: argparse.ArgumentParser, f: Flag) -> None:
    kw: dict[str, Any] = {"dest": f.dest, "help": f.help}
    if f.switch:
        kw["action"] = argparse.BooleanOptionalAction
    elif f.type is None:
        kw["action"] = "store_true"
    else:
        kw.update(type=f.type, metavar=f.metavar)
        if f.choices is not None:
            kw["choices"] = _Choices(f.choices)
    kw["default"] = argparse.SUPPRESS if f.key is not None else f.default
    action = parser.add_argument(f.name, **kw)
    action.shared_flag = f  # read by HelpFormatter and options.given


def add_flags(parser: argparse.ArgumentParser, groups: Sequence[str] | None = None, *, exclude: Sequence[str] = (),
              only: Sequence[str] = ()) -> None:
    """Add the shared flags of ``groups`` (each group under its own heading; default: every loader
    group, :data:`LOADER_GROUPS`, unless ``only`` is given), less the flag names in ``exclude``, plus
    the single flags named in ``only`` (``only=("--workers",)``)."""
    if groups is None:
        groups = () if only else LOADER_GROUPS
    titles = {"packing": "packing", "fit": "resolution", "drop": "token dropping",
              "video": "video (any of these decodes video members)", "reading": "reading, seed and errors",
              "labels": "labels and text", "run": "run"}
    for g in groups:
        names = [n for n in GROUPS[g] if n not in exclude]
        if names:
            sub = parser.add_argument_group(titles[g])
            for n in names:
                _add(sub, _BY_NAME[n])
    for n in only:
        _add(parser, _BY_NAME[n])


def add_config(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: loader options from a TOML or YAML file; flags override it."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="loader options from a TOML (.toml) or YAML (.yaml) file, as `patchpack config` "
                             "prints them; flags given override it")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The loader options the user typed as flags: ``{key: value}`` (``with_overrides`` keys)."""
    return {f.key: getattr(args, f.dest) for f in FLAGS if f.key is not None and hasattr(args, f.dest)}


class HelpFormatter(argparse.HelpFormatter):
    """Help lines end with the flag's default (loader flags: the config's, read only now) and its choices."""

    def _get_help_string(self, action: argparse.Action) -> str:
        f: Flag | None = getattr(action, "shared_flag", None)
        text = action.help or ""
        if f is None:
            return text
        if f.choices is not None:
            text += f"; one of {', '.join(f.choices())}"
        default = f.default if f.key is None else loader_default(f.key)
        if not (f.key is None and f.switch and f.default is None):
            text += f" (default {f.show(default)}" + ("; patchpack shards: theirs" if f.stored else "") + ")"
        return text.replace("%", "%%")
