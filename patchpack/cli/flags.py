"""The command-line flags shared by ``stats``, ``show``, ``preprocess``, ``train`` and ``simulate``.

Each flag is defined once here, with one name per concept: ``--seq-len`` (L),
``--patch-size`` (p), ``--max-patches``, ``--max-per-seq`` (E), ``--buffer-size``,
``--drop-kind``/``--drop-rate``, and video switched on by ``--frames`` (with ``--fps``,
``--tubelet``, ``--video-tokens``; any of them enables video members), and the reading and
memory options of the loader (``--decode-threads``, ``--buffer-bytes``, ``--max-member-bytes``,
``--verify``). Older spellings
stay accepted as hidden aliases: ``--max-examples``/``--emax``, ``--buffer``, ``--drop``
(a kind in ``simulate``, a rate elsewhere), ``--video`` and ``--video-frames``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..drop import KINDS as DROP_KINDS
from ..drop import DropConfig
from ..pack.config import PackConfig

__all__ = [
    "add_seq_len", "add_fit", "add_max_per_seq", "add_buffer_size", "add_drop", "add_video", "add_seed",
    "add_reading", "reading_options", "byte_size", "READING",
    "drop_config", "video_config", "positive_int", "non_negative_int", "positive_float", "non_negative_float",
    "fraction",
]

_HIDE = argparse.SUPPRESS


def _number(kind: type, text: str, ok, need: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {need}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ``>= 1`` (a bad value is one ``argument --x: ...`` line)."""
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ``>= 0``."""
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number ``> 0``."""
    return _number(float, text, lambda v: 0 < v < float("inf"), "a number > 0")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number ``>= 0``."""
    return _number(float, text, lambda v: 0 <= v < float("inf"), "a number >= 0")


def fraction(text: str) -> float:
    """argparse type: a fraction in ``[0, 1)`` (token drop rates)."""
    return _number(float, text, lambda v: 0 <= v < 1, "a rate in [0, 1)")


_BYTE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def byte_size(text: str) -> int:
    """argparse type: a byte count ``>= 1``, plain or with a binary unit (``64M``, ``1GiB``, ``512k``)."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in _BYTE_UNITS and t[-1:] else ""
    try:
        value = float(t[:-1] if unit else t) * _BYTE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a byte size such as 268435456, 256M or 1G, got {text!r}") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a byte size >= 1, got {text}")
    return int(value)


def _alias(parser: argparse.ArgumentParser, *names: str, dest: str, **kw: Any) -> None:
    """A hidden old spelling of a flag (no help line, no default of its own)."""
    parser.add_argument(*names, dest=dest, help=_HIDE, default=_HIDE, **kw)


def add_seq_len(parser: argparse.ArgumentParser, default: int | None = 1024, required: bool = False) -> None:
    parser.add_argument("--seq-len", type=positive_int, default=default, required=required,
                        help="tokens per packed sequence L" + (f" (default {default})" if default else ""))


def add_fit(parser: argparse.ArgumentParser, patch_size: int | None = 16, max_patches: int | None = 256) -> None:
    parser.add_argument("--patch-size", type=positive_int, default=patch_size,
                        help="patch side p in pixels" + (f" (default {patch_size})" if patch_size else ""))
    parser.add_argument("--max-patches", type=non_negative_int, default=max_patches,
                        help="patch budget per frame" + (f" (default {max_patches})" if max_patches else ""))


def add_max_per_seq(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-per-seq", type=positive_int, default=None, help="E, examples per sequence at most (default no cap)")
    _alias(parser, "--max-examples", "--emax", dest="max_per_seq", type=positive_int)


def add_buffer_size(parser: argparse.ArgumentParser, default: int | None = PackConfig.buffer_size) -> None:
    parser.add_argument("--buffer-size", type=positive_int, default=default,
                        help="packer buffer in examples" + (f" (default {default})" if default else ""))
    _alias(parser, "--buffer", dest="buffer_size", type=positive_int)


def add_drop(parser: argparse.ArgumentParser, *, kind: str | None = None, rate: float = 0.0,
             legacy: str | None = "rate", rate_max: bool = False) -> None:
    """``--drop-kind`` and ``--drop-rate`` (and ``--drop-max`` with ``rate_max``).

    Without ``--drop-kind`` a positive ``--drop-rate`` means constant dropping. ``legacy``
    says what the old ``--drop`` flag of the command was: ``"rate"``, ``"kind"`` or ``None``.
    """
    parser.add_argument("--drop-kind", choices=DROP_KINDS, default=kind,
                        help="token dropping" + (f" (default {kind})" if kind else "; default: constant when --drop-rate > 0"))
    parser.add_argument("--drop-rate", type=fraction, default=rate, help=f"constant token drop rate (default {rate})")
    if rate_max:
        parser.add_argument("--drop-max", type=fraction, default=0.5, help="max rate for beta/resolution (default 0.5)")
    if legacy == "rate":
        _alias(parser, "--drop", dest="drop_rate", type=fraction)
    elif legacy == "kind":
        _alias(parser, "--drop", dest="drop_kind", choices=DROP_KINDS)


def drop_config(args: argparse.Namespace) -> DropConfig:
    """The :class:`~patchpack.drop.DropConfig` the drop flags describe."""
    rate = float(getattr(args, "drop_rate", 0.0) or 0.0)
    kind = getattr(args, "drop_kind", None) or ("constant" if rate else "none")
    kw: dict[str, Any] = {"kind": kind, "rate": rate if kind == "constant" else 0.0}
    if getattr(args, "drop_max", None) is not None:
        kw["rate_max"] = args.drop_max
    return DropConfig(**kw)


def add_seed(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help="seed of every random choice")


#: the reading flags, by loader option
READING = ("decode_threads", "buffer_bytes", "max_member_bytes", "verify")


def add_reading(parser: argparse.ArgumentParser, options: tuple[str, ...] = READING) -> None:
    """``--decode-threads --buffer-bytes --max-member-bytes --verify`` (those in ``options``): how
    the loader reads and how much memory it may hold (defaults: :class:`~patchpack.config.LoaderConfig`'s)."""
    from ..config import LoaderConfig

    d = LoaderConfig()
    group = parser.add_argument_group("reading and memory")
    if "decode_threads" in options:
        group.add_argument("--decode-threads", type=positive_int, default=d.decode_threads, metavar="N",
                           help=f"threads per worker that decode, resize and tokenize (default {d.decode_threads}; "
                                "batches are the same for any value)")
    if "buffer_bytes" in options:
        group.add_argument("--buffer-bytes", type=_byte_size_or_none, default=d.pack.buffer_bytes, metavar="BYTES",
                           help=f"byte budget of the examples the packer holds, or 'none' "
                                f"(default {_mib(d.pack.buffer_bytes)})")
    if "max_member_bytes" in options:
        group.add_argument("--max-member-bytes", type=byte_size, default=d.max_member_bytes, metavar="BYTES",
                           help=f"largest tar member or file read; larger ones are reported, never read "
                                f"(default {_mib(d.max_member_bytes)})")
    if "verify" in options:
        group.add_argument("--verify", choices=("sha256", "size", "none"), default=d.verify,
                           help=f"how patchpack shards are checked against their manifest (default {d.verify})")


def _byte_size_or_none(text: str) -> int | None:
    return None if text.strip().lower() == "none" else byte_size(text)


def _mib(n: int | None) -> str:
    return "none" if n is None else f"{n // 2**20}M" if n % 2**20 == 0 else str(n)


def reading_options(args: argparse.Namespace) -> dict[str, Any]:
    """The loader options (``make_loader(**options)``) the reading flags given describe."""
    return {name: getattr(args, name) for name in READING if hasattr(args, name)}


#: command-line option -> ``VideoConfig`` field
_VIDEO_OPTIONS = {"frames": "frames", "fps": "fps", "tubelet": "tubelet", "video_tokens": "max_tokens"}


def add_video(parser: argparse.ArgumentParser) -> None:
    """``--frames --fps --tubelet --video-tokens``; any of them enables video members."""
    video = parser.add_argument_group("video (any of these enables video members)")
    video.add_argument("--frames", type=non_negative_int, default=None, help="frames sampled per clip")
    video.add_argument("--fps", type=positive_float, default=None, help="sampling rate in frames per second")
    video.add_argument("--tubelet", type=positive_int, default=None, help="frames per tubelet pt")
    video.add_argument("--video-tokens", type=positive_int, default=None,
                       help="total tokens per video; frames are traded against resolution")
    _alias(video, "--video-frames", dest="frames", type=non_negative_int)
    _alias(video, "--video", dest="video_default", action="store_true")


def video_config(args: argparse.Namespace) -> Any | None:
    """The ``VideoConfig`` the video flags describe, or ``None`` when none is given (``--frames 0``: none)."""
    given = {f: getattr(args, o) for o, f in _VIDEO_OPTIONS.items() if getattr(args, o, None) is not None}
    if given.get("frames") == 0:  # the old `--video-frames 0`: images only
        return None
    if not given and not getattr(args, "video_default", False):
        return None
    from ..decode.video.config import VideoConfig

    return VideoConfig(**given)
