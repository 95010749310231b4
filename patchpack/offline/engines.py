"""Preprocessing runs: the driver (:func:`preprocess`) and its engines (local processes, Ray Data).

``patchpack preprocess URLS... --out DIR [--workers N] [--engine local|ray] [--packed]``

Every input shard becomes one output shard (:mod:`patchpack.arrowshard`) holding its
examples decoded, fitted and tokenized at their fitted resolution, *before* token
dropping, so dropping and packing stay random per epoch when the loader reads them back.
With ``packed=True`` each output shard instead holds fully packed sequences (dropping and
bin packing done once, per input shard, with the configured seed).

The output folder holds

* ``NAME-HASH.arrow`` per input shard: ``NAME`` is the input's file name without its tar
  extension, ``HASH`` the first 8 hex digits of the sha1 of the input url (stable, no
  collisions between equally named inputs);
* ``errors/NAME-HASH.jsonl`` per input shard: one :class:`~patchpack.errors.ErrorRecord`
  per line, and ``errors.jsonl`` concatenating them in input order once the run is done;
* ``manifest.json``: the format, the producing patchpack version, the configuration,
  the inputs, one entry per finished input shard (output name, samples, examples,
  errors, tokens, bytes, sha256) and, when every shard is done, ``complete: true``
  and the totals. A source that gives nothing (missing, unreadable, a failing pipe)
  gets no output shard and is listed under ``unread``; such a run, or one where no
  example came through, ends with ``complete: false`` and :class:`PreprocessError`.
  Local inputs that do not exist are refused before anything is written.

Guarantees:

* **atomic**: a shard, its error file and the manifest are each written under a
  temporary name in the same folder and renamed into place, so a reader never sees a
  partial file;
* **resumable**: the manifest is rewritten after every finished shard; a rerun skips
  the inputs whose manifest entry exists and whose output verifies (sha256, or size
  with ``verify=False``) and does the rest. A run killed at any point (even SIGKILL)
  leaves at worst temporary files, which the next run removes;
* **complete**: every input sample is either an example in its output shard or an
  error record (``samples == examples + sample errors`` per entry);
* **deterministic**: the shards' bytes depend only on the inputs, the configuration
  and its seed, not on the worker count or the engine.

One folder takes one run at a time (an ``flock`` on ``DIR/.lock``).

Engines
-------

``"local"`` runs the shards on a :mod:`multiprocessing` pool of ``workers`` processes
(in-process for ``workers=1``) under a tqdm progress bar.

``"ray"`` runs the same per-shard function as Ray Data tasks (``pip install
'patchpack[ray]'``): ``ray.data.from_items`` over the shard list, one block and one
``map`` task per input shard, ``workers`` tasks at a time; the driver collects each
finished shard's entry and writes the manifest. Without a running Ray instance it starts a
local one (``ray.init(num_cpus=workers)``). To run on a cluster:

1. start the cluster (``ray start --head`` on one node, ``ray start --address=HEAD:6379``
   on the others, or a KubeRay / cloud launcher), with patchpack installed on every node;
2. make the inputs readable and ``--out`` writable from every node under the same path
   (a shared file system such as NFS or Lustre), since tasks write their shards
   directly; inputs may also be any url webdataset's ``gopen`` reads
   (``pipe:aws s3 cp s3://bucket/x.tar -``, ``https://...``);
3. point the driver at it: ``RAY_ADDRESS=ray://HEAD:10001 patchpack preprocess ...
   --engine ray --workers 64`` (or ``ray.init(address="auto")`` / ``ray.init(address=...)``
   before calling :func:`preprocess`; an initialised Ray is used as it is).
"""


from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..sources import expand_sources
from ..sources.wds import missing_local
from ..storage.manifest import (
    ERRORS_DIR, ERRORS_FILE, MANIFEST, MANIFEST_FORMAT, MANIFEST_VERSION, ManifestError, entry_ok, read_manifest,
)
from .config import ENGINES, PreprocessConfig
from .job import TMP_MARK, atomic_write_text, merge_counts, process_shard

__all__ = ["preprocess", "run_local", "run_ray", "PreprocessError"]


class PreprocessError(RuntimeError):
    """A run that cannot be marked complete: a source gave nothing (missing, unreadable, a
    failing pipe) or no example came through. The manifest (``complete: false``) and every
    error record are written first; :attr:`manifest` holds it. Finished shards are kept, so
    a rerun after the fix does only the rest."""

    def __init__(self, message: str, manifest: dict):
        super().__init__(message)
        self.manifest = manifest


def _check_local(urls: Sequence[str]) -> None:
    """Refuse, before anything is written, local inputs that do not exist."""
    missing = missing_local(urls)
    if missing and len(urls) == 1:
        raise FileNotFoundError(f"input shard {missing[0]} does not exist; check the path (nothing was written)")
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} input shards do not exist (first: {missing[0]}); "
                                "check the paths (nothing was written)")


@contextlib.contextmanager
def _lock(out: Path):
    """One run per folder: a POSIX record lock, held by this process only (not by forked
    workers) and released by the kernel when the process ends, however it ends."""
    fh = open(out / ".lock", "a+")
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ManifestError(f"another preprocess run is writing {out}") from None
    try:
        yield
    finally:
        fcntl.lockf(fh, fcntl.LOCK_UN)
        fh.close()


def _clean_temporaries(out: Path) -> int:
    n = 0
    for folder in (out, out / ERRORS_DIR):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and TMP_MARK in p.name:
                    p.unlink(missing_ok=True)
                    n += 1
    return n



def _manifest(cfg: PreprocessConfig, urls: Sequence[str], entries: dict[str, dict], complete: bool,
              unread: Sequence[dict] = (), errors_file: bool | None = None) -> dict:
    from .. import __version__

    shards = sorted(entries.values(), key=lambda e: e["index"])
    totals = {k: sum(e[k] for e in shards) for k in ("samples", "examples", "rows", "tokens", "errors", "bytes")}
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "patchpack_version": __version__,
        "kind": "packed" if cfg.packed else "examples",
        "config": cfg.to_dict(),
        "inputs": list(urls),
        "complete": complete,
        "totals": totals,
        "error_kinds": merge_counts(e["error_kinds"] for e in shards),
        "errors_file": ERRORS_FILE if (complete if errors_file is None else errors_file) else None,
        "shards": shards,
        "unread": [{k: e[k] for k in ("index", "input", "errors_file", "unread")}
                   for e in sorted(unread, key=lambda e: e["index"])],
    }


def run_local(tasks: list[dict], workers: int) -> Iterator[dict]:
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield process_shard(t)
        return
    import multiprocessing as mp

    import pyarrow as pa

    pa.array([""])  # pyarrow imports its lazy dependencies on first use: once here, not in every worker
    with mp.get_context().Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap_unordered(process_shard, tasks, chunksize=1)


def _ray_task(row: dict, config: PreprocessConfig) -> dict:
    task = dict(json.loads(row["task"]), config=config)
    return {"entry": json.dumps(process_shard(task))}


def run_ray(tasks: list[dict], workers: int) -> Iterator[dict]:
    try:
        import ray
        import ray.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("the ray engine needs Ray Data: pip install 'patchpack[ray]'") from e
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING")
            started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        config = tasks[0]["config"]
        rows = [{"task": json.dumps({k: v for k, v in t.items() if k != "config"})} for t in tasks]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        size = max(1, min(workers, len(rows)))
        try:  # Ray >= 2.51 takes a compute strategy; older releases a concurrency count
            ds = ds.map(_ray_task, fn_kwargs={"config": config}, num_cpus=1,
                        compute=ray.data.TaskPoolStrategy(size=size))
        except (TypeError, AttributeError):  # pragma: no cover - older Ray
            ds = ds.map(_ray_task, fn_kwargs={"config": config}, num_cpus=1, concurrency=size)
        for row in ds.iter_rows():
            yield json.loads(row["entry"])
    finally:
        if started:
            ray.shutdown()


def preprocess(
    urls: str | Sequence[str],
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    workers: int = 1,
    engine: str = "local",
    packed: bool | None = None,
    *,
    verify: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Preprocess webdataset shards into patchpack shards in ``out_dir`` (see module doc).

    Args:
        urls: shard urls or brace patterns (expanded with webdataset's rules).
        out_dir: output folder, created if missing; an existing run there is resumed.
        config: what to store (default :class:`PreprocessConfig`).
        workers: processes (``local``) or concurrent tasks (``ray``).
        engine: ``"local"`` or ``"ray"``.
        packed: overrides ``config.packed``.
        verify: on resume, check finished shards' sha256 (else only their size).
        overwrite: start afresh when the folder holds a run with another config.
        progress: show a tqdm bar over input shards.

    Returns:
        The final manifest (also written to ``out_dir/manifest.json``).

    Raises:
        ManifestError: the folder holds another run (other config or inputs' format)
            and ``overwrite`` is false, or another run holds its lock.
        FileNotFoundError: a local input does not exist (raised before anything is written).
        NotADirectoryError: ``out_dir`` exists and is not a folder.
        PreprocessError: a source gave nothing or no example came through; the manifest is
            written with ``complete: false`` (and the error records) first.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    cfg = config or PreprocessConfig()
    if packed is not None and packed != cfg.packed:
        cfg = dataclasses.replace(cfg, packed=packed)
    urls = expand_sources(urls)
    if len(set(urls)) != len(urls):
        raise ValueError("the same input shard is listed twice")
    _check_local(urls)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder: give an output folder")
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        _clean_temporaries(out)
        entries = _finished(out, cfg, urls, verify, overwrite)
        todo = [{"url": u, "index": i, "out_dir": str(out), "config": cfg} for i, u in enumerate(urls)
                if u not in entries]
        atomic_write_text(out / MANIFEST, json.dumps(_manifest(cfg, urls, entries, False), indent=1))
        run_engine: Callable[[list[dict], int], Iterator[dict]] = run_local if engine == "local" else run_ray
        unread = _run(run_engine, todo, workers, entries, out, cfg, urls, progress)
        atomic_write_text(out / ERRORS_FILE, "".join((out / e["errors_file"]).read_text(encoding="utf-8") for e in
                                                     sorted([*entries.values(), *unread], key=lambda e: e["index"])))
        complete = not unread and sum(e["examples"] for e in entries.values()) > 0
        manifest = _manifest(cfg, urls, entries, complete, unread, errors_file=True)
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    _refuse_incomplete(manifest, unread, urls, out)
    return manifest


def _finished(out: Path, cfg: PreprocessConfig, urls: list[str], verify: bool, overwrite: bool) -> dict[str, dict]:
    """The manifest entries of the shards an earlier run over ``out`` finished (to keep).

    Raises:
        ManifestError: the folder holds another run or a damaged manifest and ``overwrite`` is false.
    """
    try:
        old = read_manifest(out)
    except ManifestError as exc:  # damaged: a run can only start afresh over it
        if not overwrite:
            raise ManifestError(f"{exc}; use another folder or overwrite=True (--overwrite)") from None
        return {}
    if old is None:
        return {}
    if old.get("format") != MANIFEST_FORMAT or old.get("config") != cfg.to_dict():
        if not overwrite:
            raise ManifestError(f"{out / MANIFEST} was written with another configuration; "
                                "use another folder or overwrite=True (--overwrite)")
        return {}
    wanted, index = set(urls), {u: i for i, u in enumerate(urls)}
    entries = {e["input"]: e for e in old["shards"] if e["input"] in wanted and entry_ok(out, e, verify)}
    for e in entries.values():
        e["index"] = index[e["input"]]
    return entries


def _run(run_engine, todo: list[dict], workers: int, entries: dict[str, dict], out: Path, cfg: PreprocessConfig,
         urls: list[str], progress: bool) -> list[dict]:
    """Process ``todo`` with the engine, recording each finished shard in ``entries`` and the
    manifest as it comes (a tqdm bar over input shards); returns the sources that gave nothing."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(urls), initial=len(entries), unit="shard", disable=not progress, desc="preprocess")
    examples = sum(e["examples"] for e in entries.values())
    errors = sum(e["errors"] for e in entries.values())
    unread: list[dict] = []  # sources that gave nothing: not finished, retried by a rerun
    try:
        for entry in run_engine(todo, workers) if todo else ():
            errors += entry["errors"]
            if entry.get("unread") is not None:
                unread.append(entry)
            else:
                entries[entry["input"]] = entry
                atomic_write_text(out / MANIFEST, json.dumps(_manifest(cfg, urls, entries, False), indent=1))
                examples += entry["examples"]
            bar.update(1)
            bar.set_postfix(examples=examples, errors=errors)
    finally:
        bar.close()
    return unread


def _refuse_incomplete(manifest: dict, unread: list[dict], urls: list[str], out: Path) -> None:
    """Raise :class:`PreprocessError` for a run that is not complete (the manifest says so already)."""
    if unread:
        first = min(unread, key=lambda e: e["index"])
        raise PreprocessError(
            f"{len(unread)} of {len(urls)} input shard(s) gave nothing (first: {first['input']}: {first['unread']}); "
            f"the run is not complete: fix the source and run again (finished shards are kept)", manifest)
    if not manifest["complete"]:
        t = manifest["totals"]
        kinds = ", ".join(f"{k}={v}" for k, v in manifest["error_kinds"].items()) or "none"
        raise PreprocessError(
            f"no example came through ({t['samples']} samples, {t['errors']} error records: {kinds}); "
            f"the run is not complete: the records are in {out / ERRORS_FILE}", manifest)
