"""From what the user gave to one :class:`~patchpack.config.LoaderConfig`, and config mistakes in the user's words.

Precedence, lowest first: the defaults (:class:`~patchpack.config.LoaderConfig`), the values
stored in patchpack shards (patch size, patch budget, grid multiple, video tubelet; the
sequence length of packed rows), the ``--config`` file, the flags typed. So
``patchpack preprocess ... --max-patches 128`` then ``patchpack stats OUT`` and
``patchpack train OUT`` need no budget flag.

A config ``ValueError`` names Python options (``seq_len=32``); :func:`loader_config` says it
with the flag (``--seq-len 32``) or, for an option the file set, the file's key.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Sequence

from . import checks, flags

__all__ = ["loader_config", "file_options", "stored_options", "in_user_words", "progress_bar"]


def progress_bar(args: argparse.Namespace, **tqdm_options: Any):
    """A tqdm bar on stderr when ``--progress`` was given, or by default when stderr is a terminal
    (``--no-progress``: never); else ``None``."""
    import sys

    show = getattr(args, "progress", None)
    if not (show if show is not None else sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **tqdm_options)


def file_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``--config FILE`` (``{}`` without one); a mistake in the file is a
    :class:`~patchpack.cli.checks.UsageError` line."""
    path = getattr(args, "config", None)
    if not path:
        return {}
    from ..configfile import ConfigFileError, config_overrides

    try:
        return config_overrides(path)
    except ConfigFileError as exc:
        raise checks.UsageError(f"--config {exc}") from None


def stored_options(urls: Sequence[str]) -> dict[str, Any]:
    """What the first patchpack shard among ``urls`` was made with: patch size, patch budget and
    grid multiple, the video config when it holds videos, the sequence length of packed rows
    (``{}`` when no url is a patchpack shard, or its metadata cannot be read)."""
    shard = next((u for u in urls if str(u).endswith(".arrow") and os.path.isfile(u)), None)
    if shard is None:
        return {}
    from ..storage.reader import read_shard_metadata

    try:
        meta = read_shard_metadata(shard)
    except Exception:  # an unreadable shard is the reader's record, not a default
        return {}
    config = meta.get("config") or {}
    fit = config.get("fit") if isinstance(config.get("fit"), dict) else {}
    out: dict[str, Any] = {f"fit__{k}": fit[k] for k in ("patch_size", "max_patches", "max_pixels", "grid_multiple")
                           if k in fit}
    if "patch_size" in meta:
        out["fit__patch_size"] = int(meta["patch_size"])
    video = config.get("video")
    if isinstance(video, dict):
        from dataclasses import fields

        from ..decode.video.config import VideoConfig

        known = {f.name for f in fields(VideoConfig)}
        out["video"] = VideoConfig(**{k: v for k, v in video.items() if k in known})
    pack = config.get("pack")
    if meta.get("format") == "packed" and isinstance(pack, dict) and pack.get("seq_len"):
        out["pack__seq_len"] = int(pack["seq_len"])
    return out


def _field(key: str) -> str:
    return key.rpartition("__")[2]


def _covers(key: str, given: dict[str, Any]) -> bool:
    """Whether ``given`` sets ``key`` (``video`` covers every ``video__*`` and the reverse)."""
    sec = key.partition("__")[0] if "__" in key else key
    return key in given or (sec in ("video", "augment") and any(k == sec or k.startswith(f"{sec}__") for k in given))


def loader_config(args: argparse.Namespace, urls: Sequence[str] | None = None, **fixed: Any):
    """The :class:`~patchpack.config.LoaderConfig` of a command: defaults < values stored in the
    patchpack shards among ``urls`` < ``--config`` file < flags typed < ``fixed`` (options the
    command itself sets). A value the config refuses is a one-line
    :class:`~patchpack.cli.checks.UsageError` in the user's words (:func:`in_user_words`)."""
    from ..config import LoaderConfig
    from ..configfile import apply_overrides

    from_file, typed = file_options(args), flags.given(args)
    stored = {k: v for k, v in (stored_options(urls) if urls else {}).items()
              if not _covers(k, from_file) and not _covers(k, typed) and not _covers(k, fixed)}
    merged = {**stored, **from_file, **typed, **fixed}
    if typed.get("drop__rate") and "drop__kind" not in merged and LoaderConfig().drop.kind == "none":
        merged["drop__kind"] = "constant"  # a rate alone means constant dropping
    origins = {**{_field(k): ("shards", k) for k in stored}, **{_field(k): ("file", k) for k in from_file},
               **{_field(k): ("flag", k) for k in typed}}
    with checks.config_errors(lambda text: in_user_words(text, origins, getattr(args, "config", None))):
        return apply_overrides(LoaderConfig(), merged)


_ASSIGNED = re.compile(r"\b(?:(?:fit|drop|pack|video|image)\.)?(?P<name>[a-z][a-z_]*)=(?P<value>'[^']*'|[^\s,;:)]+)")
_BARE = re.compile(r"(?<![\w.-])(?P<name>[a-z]+(?:_[a-z]+)+)\b(?![=\w])")


def _flag_names() -> dict[str, str]:
    """Option field name -> its flag (``seq_len`` -> ``--seq-len``)."""
    out: dict[str, str] = {}
    for f in flags.FLAGS:
        if f.key is not None:
            out.setdefault(_field(f.key), f.name)
    return out


def in_user_words(text: str, origins: dict[str, tuple[str, str]] | None = None, path: str | None = None) -> str:
    """``text`` with option names as the user gave them: ``seq_len=32`` -> ``--seq-len 32`` (or
    ``pack.seq_len = 32 in run.toml`` when the file set it), ``raise seq_len`` -> ``raise --seq-len``."""
    names, origins = _flag_names(), origins or {}

    def spelled(name: str) -> str | None:
        origin = origins.get(name)
        if origin is not None and origin[0] == "file" and path:
            return origin[1].replace("__", ".") + f" in {path}"
        return names.get(name)

    def assigned(m: re.Match) -> str:
        name, value = m.group("name"), m.group("value").strip("'")
        word = spelled(name)
        if word is None:
            return m.group(0)
        value = "none" if value == "None" else value
        return f"{word.replace(' in ', f' = {value} in ', 1)}" if " in " in word else f"{word} {value}"

    def bare(m: re.Match) -> str:
        return spelled(m.group("name")) or m.group(0)

    return _BARE.sub(bare, _ASSIGNED.sub(assigned, text))
