"""Loud failures for the commands: a user's mistake ends in one line and a hint, not in zeros.

* :class:`UsageError` is a mistake in what was asked (a bad option value, a path that does
  not exist, a configuration trap). :func:`patchpack.cli.main` prints it as one line,
  ``patchpack COMMAND: error: ...``, and exits with code 2.
* :func:`config_errors` turns the ``ValueError`` a config raises while the command line is
  turned into configs (and :class:`~patchpack.config.ConfigWarning`) into a
  :class:`UsageError`. Other exceptions (a ``TypeError`` is a bug, not a bad value) and
  errors raised later, while data flows, keep their traceback.
* :func:`check_sources` refuses, before anything runs, local paths that do not exist,
  brace patterns that match no file and folders without files.
* :func:`sniff` reads the first samples (raw bytes, nothing decoded) to say what the
  sources hold: media members by extension, labels. It gives the hints.
* :func:`report_outcome` ends a run: exit code 1 with the first error records and a hint
  when no example came through or a source could not be opened at all, else 0.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator, Sequence

from ..errors import ErrorKind

__all__ = ["UsageError", "config_errors", "check_sources", "Sniff", "sniff", "unopened", "report_outcome", "printable",
           "check_output_folder", "check_output_file"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: what makes an argument more than a plain local path: a url scheme, a brace pattern, a glob
_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|[{}*?\[]")


def check_output_folder(path: str | None, flag: str, *, create: bool = False) -> None:
    """Refuse, before any work, an output folder ``path`` (given as ``flag``) that exists as a
    file or lies under one; with ``create``, make it now (a folder that cannot be made or
    written is refused too)."""
    if path is None:
        return
    p = os.path.abspath(path)
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            return
        p = parent
    if not os.path.isdir(p):
        raise UsageError(f"{flag} {path}: {p} is a file, not a folder")
    if create:
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None


def check_output_file(path: str | None, flag: str) -> None:
    """Refuse, before any work, an output file ``path`` (given as ``flag``) that is a folder, lies
    in a folder that does not exist or cannot be written; else start it empty."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise UsageError(f"{flag} {path}: the folder {folder} {what}")
    try:
        open(path, "w").close()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write it ({exc.strerror or exc})") from None


def printable(text: str) -> str:
    """``text`` with control characters as ``\\xNN``: keys and messages come from the data, and an
    escape sequence in a member name must not reach the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)

#: error records shown when a run fails
SHOWN_RECORDS = 3
#: samples :func:`sniff` reads at most (raw bytes only)
SNIFF_SAMPLES = 64


class UsageError(Exception):
    """A user's mistake in what was asked; shown as one line, exit code 2."""


@contextmanager
def config_errors(rename: Callable[[str], str] | None = None) -> Iterator[None]:
    """Turn config ``ValueError`` (and config warnings) into :class:`UsageError`, its text passed
    through ``rename`` (options in the user's words, see :func:`patchpack.cli.options.in_user_words`)."""
    from ..config import ConfigWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        try:
            yield
        except (ValueError, ConfigWarning) as exc:
            text = str(exc)
            raise UsageError(rename(text) if rename else text) from None


def _has_files(folder: str) -> bool:
    for _, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.startswith(".") for f in files):
            return True
    return False


def check_sources(urls: str | Sequence[str]) -> list[str]:
    """The expanded urls of ``urls``; :class:`UsageError` when a local one cannot be found.

    Refused: a path that does not exist, a brace pattern none (or only some) of whose
    names exist, a folder with no (non-hidden) file. Remote and ``pipe:`` urls are not
    checked here (their failures are records; see :func:`unopened`).
    """
    if isinstance(urls, (str, os.PathLike)):
        urls = [os.fspath(urls)]
    for arg in urls:  # a plain path that is not there: said before any library loads
        if not _PATTERN.search(arg) and not os.path.exists(arg):
            raise UsageError(f"{arg}: no such file or folder")
    from ..sources import expand_sources
    from ..sources.wds import local_path, missing_local

    out: list[str] = []
    for arg in urls:
        try:
            expanded = expand_sources(arg)
        except ValueError as exc:
            raise UsageError(f"{arg}: {exc}") from None
        missing = missing_local(expanded)
        if missing and len(expanded) == 1:
            raise UsageError(f"{arg}: no such file or folder")
        if missing:
            if len(missing) == len(expanded):
                raise UsageError(f"{arg}: none of the {len(expanded)} files it names exist (first: {missing[0]})")
            raise UsageError(f"{arg}: {len(missing)} of the {len(expanded)} files it names do not exist "
                             f"(first missing: {missing[0]})")
        for u in expanded:
            p = local_path(u)
            if p is not None and os.path.isdir(p) and not _has_files(p):
                raise UsageError(f"{arg}: the folder holds no files")
        out.extend(expanded)
    return out


@dataclass
class Sniff:
    """What the first samples of the sources hold (raw bytes only, nothing decoded).

    Attributes:
        samples: samples read.
        members: member extension -> samples holding it.
        images, videos: samples with an image / a video member.
        stored: samples from patchpack shards (already tokenized; labels from the shard).
        labelled: samples whose label parsed to a value ``>= 0``.
        max_label: the largest label seen (-1: none), ``max_key`` its sample.
        bad_labels: samples whose label member did not parse.
    """

    samples: int = 0
    members: Counter = field(default_factory=Counter)
    images: int = 0
    videos: int = 0
    stored: int = 0
    labelled: int = 0
    max_label: int = -1
    max_key: str = ""
    bad_labels: int = 0

    @property
    def usable(self) -> int:
        return self.images + self.stored

    def video_members(self) -> list[str]:
        from ..decode.video.config import VIDEO_EXTS

        return sorted(m for m in self.members if m.rsplit(".", 1)[-1].lower() in VIDEO_EXTS)

    def describe_members(self) -> str:
        return ", ".join(f"{m} ({n})" for m, n in self.members.most_common(8)) or "none"


def sniff(urls: Sequence[str], label_field: str = "cls", limit: int = SNIFF_SAMPLES, max_shards: int = 8) -> Sniff:
    """Read up to ``limit`` samples from the first ``max_shards`` sources (see :class:`Sniff`)."""
    from ..decode.image import IMAGE_EXTS
    from ..decode.video.config import VIDEO_EXTS
    from ..errors import SampleError
    from ..sources import Sample, StoredSample, read_shard, sample_labels

    out = Sniff()
    for url in list(urls)[:max_shards]:
        for rec in read_shard(url):
            if not isinstance(rec, Sample):
                continue
            out.samples += 1
            if isinstance(rec, StoredSample):
                out.stored += 1
                label = max(rec.tokens.label_set, default=-1)
            else:
                exts = {m.rsplit(".", 1)[-1].lower() for m in rec.members}
                out.members.update(rec.members.keys())
                out.images += bool(exts & set(IMAGE_EXTS))
                out.videos += bool(exts & set(VIDEO_EXTS))
                try:
                    label = max(sample_labels(rec, label_field), default=-1)
                except SampleError:
                    out.bad_labels += 1
                    label = -1
            if label >= 0:
                out.labelled += 1
                if label > out.max_label:
                    out.max_label, out.max_key = label, rec.key
            if out.samples >= limit:
                return out
    return out


def unopened(errors) -> list:
    """The records of sources that could not be opened or read at all (kind ``unreadable``)."""
    return [e for e in errors if e.kind == ErrorKind.UNREADABLE]


def _hints(command: str, errors, kinds: Counter, seen: Sniff | None, video, seq_len: int | None) -> list[str]:
    hints = []
    if seen is not None and seen.samples:
        vids = seen.video_members()
        if vids and video is None and not seen.images:
            hints.append(f"these shards hold {', '.join(vids)} members: pass --frames N to decode videos")
        elif not seen.usable and not (vids and video is not None):
            hints.append(f"no image or video member in the first {seen.samples} samples "
                         f"(members: {seen.describe_members()})")
    if any(e.kind == ErrorKind.UNREAD_FILES and ".arrow'" in e.message for e in errors) \
            and not (seen is not None and seen.usable):
        hints.append("a folder of .arrow files without its manifest.json is read as a plain folder: "
                     "pass the .arrow files themselves, or the folder patchpack preprocess wrote")
    if kinds.get("oversize"):
        hints.append(f"examples are longer than --seq-len {seq_len}: raise --seq-len or lower --max-patches "
                     "(or --video-tokens)")
    if kinds.get("oversize-member"):
        hints.append("members are larger than --max-member-bytes (default 256M): raise it if they are "
                     "genuine media")
    if unopened(errors):
        hints.append("check the paths and urls: a source that cannot be opened gives no sample")
    if not hints and errors:
        keep = {"stats": " (--errors FILE keeps them all)", "preprocess": " (all of them: errors.jsonl in --out)"}
        hints.append("every sample failed; the records above say why" + keep.get(command, ""))
    return hints


def report_outcome(
    command: str,
    examples: int,
    errors: Sequence,
    *,
    urls: Sequence[str] = (),
    video=None,
    seq_len: int | None = None,
    label_field: str = "cls",
    stream: IO[str] | None = None,
) -> int:
    """Exit code of a finished run: 1 (after the first error records and a hint) when no
    example came through or a source could not be opened at all, else 0."""
    stream = stream or sys.stderr
    gone = unopened(errors)
    if examples > 0 and not gone:
        return 0
    kinds = Counter(e.kind for e in errors)
    if examples == 0:
        what = "no example came through"
    else:
        what = f"{len(gone)} source(s) could not be opened"
    counts = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none"
    print(f"patchpack {command}: error: {what} ({len(errors)} error records: {counts})", file=stream)
    shown = gone if examples > 0 else list(errors)
    for e in shown[:SHOWN_RECORDS]:
        print(f"  {printable(e.key)} [{e.kind}] {printable(e.message)}", file=stream)
    if len(shown) > SHOWN_RECORDS:
        print(f"  ... {len(shown) - SHOWN_RECORDS} more", file=stream)
    seen = sniff(urls, label_field) if examples == 0 and urls else None
    if examples == 0 and not errors and (seen is None or not seen.samples):
        print("hint: the sources hold no samples", file=stream)
    for h in _hints(command, errors, kinds, seen, video, seq_len):
        print(f"hint: {h}", file=stream)
    return 1
