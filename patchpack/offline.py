"""Offline preprocessing: webdataset shards in, patchpack Arrow shards out.

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
  and the totals.

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

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .arrowshard import SHARD_SUFFIX, ShardWriter, sha256_file
from .decode import tubelet_of
from .decode.image import ImageConfig
from .drop import DropConfig, drop_rate, drop_tokens, keep_count
from .errors import ErrorRecord, SampleError
from .fit import FitConfig, fit_grid
from .loader import LoaderConfig, example_rng
from .pack import PackConfig, Packer
from .source import Sample, expand_sources, read_shard
from .stream import probe_sample, sample_tokens
from .tokenize import Tokens

__all__ = [
    "PreprocessConfig",
    "ManifestError",
    "preprocess",
    "process_shard",
    "sample_to_tokens",
    "output_name",
    "read_manifest",
    "ENGINES",
    "MANIFEST",
    "add_arguments",
    "run",
]

ENGINES = ("local", "ray")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "patchpack-shards"
MANIFEST_VERSION = 1
ERRORS_DIR = "errors"
ERRORS_FILE = "errors.jsonl"
_TMP = ".tmp-"


class ManifestError(RuntimeError):
    """The output folder holds a manifest that does not match this run (other config or format)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """What the offline shards hold.

    Attributes:
        fit: resolution policy (patch size, budget, sampled modes).
        image: image decode options.
        video: video decode options (a :class:`patchpack.decode.video.VideoConfig`);
            ``None`` treats video members as unsupported.
        seed: seeds every random choice (sampled resolutions, and with ``packed`` the
            drop rates and dropped tokens). Each example uses the loader's generators
            of epoch 0 (:func:`patchpack.loader.example_rng`), so the stored examples
            are the ones the online loader makes in its first epoch.
        label_field: ``"cls"`` (text integer member) or ``"json:<name>"`` (a key of the
            ``json`` member), as for the loader; missing -> -1.
        packed: store packed sequences instead of examples.
        pack, drop: packing and dropping policy for ``packed`` shards.
        rows_per_batch: Arrow record batch size in rows.
    """

    fit: FitConfig = field(default_factory=FitConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    video: Any = None
    seed: int = 0
    label_field: str = "cls"
    packed: bool = False
    pack: PackConfig = field(default_factory=PackConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    rows_per_batch: int = 64

    def __post_init__(self) -> None:
        if self.label_field != "cls" and not self.label_field.startswith("json:"):
            raise ValueError("label_field must be 'cls' or 'json:<key>'")

    @property
    def tubelet(self) -> int:
        return tubelet_of(self.video)

    @classmethod
    def from_loader(cls, loader_cfg: LoaderConfig, **overrides: Any) -> "PreprocessConfig":
        """The offline counterpart of a loader configuration (same fit, decode, labels, seed)."""
        kw = dict(
            fit=loader_cfg.fit, image=loader_cfg.image, video=loader_cfg.video, seed=loader_cfg.seed,
            label_field=loader_cfg.label_field, pack=loader_cfg.pack, drop=loader_cfg.drop,
        )
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-ready form (recorded in the manifest and the shard metadata)."""
        d = dataclasses.asdict(self)
        d["video"] = dataclasses.asdict(self.video) if dataclasses.is_dataclass(self.video) else self.video
        if not self.packed:  # packing options do not affect example shards
            d.pop("pack")
            d.pop("drop")
        return json.loads(json.dumps(d, default=list))


# -- per-sample and per-shard work -------------------------------------------------------------


def _shard_name(url: str) -> str:
    base = url.rstrip("/").rsplit("/", 1)[-1].split("::")[0]
    for ext in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base).strip(".") or "shard"
    return safe[:80]


def output_name(url: str) -> str:
    """Deterministic output file name of an input shard: ``NAME-HASH.arrow``."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:8]
    return f"{_shard_name(url)}-{digest}{SHARD_SUFFIX}"


def sample_to_tokens(sample: Sample, cfg: PreprocessConfig, rng: np.random.Generator | None = None) -> Tokens:
    """probe -> fit -> materialize -> tokenize one sample, no dropping.

    ``rng`` drives sampled fit modes (default: the loader's epoch-0 generator of the key).
    The same two steps as the loader's stream (:func:`patchpack.stream.probe_sample`,
    :func:`patchpack.stream.sample_tokens`), so stored examples equal online ones.

    Raises:
        SampleError: for anything wrong with the sample (with its key and shard).
    """
    try:
        if rng is None:
            rng = example_rng(cfg.seed, 0, sample.key, 0)
        name, pr, label = probe_sample(sample, cfg.fit, cfg.image, cfg.video, cfg.label_field, rng)
        patches, positions = sample_tokens(sample.members[name], pr, cfg.image, cfg.video, cfg.fit.patch_size,
                                           cfg.tubelet)
    except SampleError as e:
        e.key, e.shard = e.key or sample.key, e.shard or sample.shard
        raise
    except ValueError as exc:  # decoded pixels that do not tile
        raise SampleError("corrupt", f"decoded pixels do not tile: {exc}", key=sample.key, shard=sample.shard,
                          stage="tokenize") from None
    meta = {"source_size": tuple(pr.source_size), "source_shard": sample.shard, "kind": pr.kind, "index": sample.index}
    return Tokens(sample.key, patches, positions, tuple(pr.grid), label, meta)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}{_TMP}{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _examples(url: str, cfg: PreprocessConfig, errors: list[ErrorRecord]) -> Iterator[tuple[Tokens, int]]:
    """``(tokens, sample index)`` of one shard's good samples, in order; failures go to ``errors``."""
    for rec in read_shard(url):
        if isinstance(rec, ErrorRecord):
            errors.append(rec)
            continue
        try:
            yield sample_to_tokens(rec, cfg), rec.index
        except SampleError as e:
            errors.append(e.record(rec.key, url))


def process_shard(task: dict) -> dict:
    """Turn one input shard into one output shard plus its error file; returns its manifest entry.

    ``task`` holds ``url``, ``index`` (position among the inputs), ``out_dir`` and
    ``config`` (a :class:`PreprocessConfig`). This is the unit of work of both engines.
    """
    url, cfg = task["url"], task["config"]
    out_dir = Path(task["out_dir"])
    name = output_name(url)
    started = time.perf_counter()
    errors: list[ErrorRecord] = []
    meta = {"config": cfg.to_dict(), "input": url}
    writer = ShardWriter(
        out_dir / name, "packed" if cfg.packed else "examples", patch_size=cfg.fit.patch_size,
        tubelet=cfg.tubelet, channels=3, metadata=meta, rows_per_batch=cfg.rows_per_batch,
    )
    try:
        stream = _examples(url, cfg, errors)
        if cfg.packed:
            _write_packed(stream, writer, cfg, url, errors)
        else:
            for tok, _ in stream:
                writer.write(tok)
        info = writer.close()
    except BaseException:
        writer.abort()
        raise
    # every sample is an example or a sample-level record; "shard" records are about the tar itself
    samples = info.examples + sum(e.kind != "shard" for e in errors)
    err_name = f"{ERRORS_DIR}/{Path(name).stem}.jsonl"
    (out_dir / ERRORS_DIR).mkdir(exist_ok=True)
    _atomic_write_text(out_dir / err_name, "".join(json.dumps(e.to_dict()) + "\n" for e in errors))
    return {
        "index": int(task["index"]),
        "input": url,
        "output": name,
        "errors_file": err_name,
        "samples": samples,
        "examples": info.examples,
        "rows": info.rows,
        "tokens": info.tokens,
        "errors": len(errors),
        "error_kinds": _count(e.kind for e in errors),
        "bytes": info.bytes,
        "sha256": info.sha256,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _count(kinds: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def _merge_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def _rate_rng(cfg: PreprocessConfig, tok: Tokens) -> np.random.Generator:
    """The loader's epoch-0 generator of ``tok`` as it stands after the fit: the same drop rate."""
    rng = example_rng(cfg.seed, 0, tok.key, 0)
    if cfg.fit.mode != "native" and tok.meta.get("kind") == "image":
        src = tok.meta["source_size"]
        fit_grid(int(src[0]), int(src[1]), cfg.fit, rng)  # replays the sampled-size draw
    return rng


def _write_packed(
    stream: Iterator[tuple[Tokens, int]], writer: ShardWriter, cfg: PreprocessConfig, url: str,
    errors: list[ErrorRecord],
) -> None:
    """Drop and pack one shard's examples into sequences; refused (oversize) examples become records."""
    packer = Packer(cfg.pack)
    held: dict[int, tuple[Tokens, int]] = {}

    def emit(seqs) -> None:
        for seq in seqs:
            items = [held.pop(h) for h in seq.handles]
            toks = [t if len(t) == n else Tokens(t.key, t.patches[:n], t.positions[:n], t.grid, t.label, t.meta)
                    for (t, _), n in zip(items, seq.lengths)]  # oversize="truncate" cuts the tail
            writer.write_sequence(toks, [src for _, src in items])

    for tok, index in stream:
        n = len(tok)
        keep = keep_count(n, drop_rate(cfg.drop, n, _rate_rng(cfg, tok)))
        idx = drop_tokens(n, keep, example_rng(cfg.seed, 0, tok.key, 1))
        kept = Tokens(tok.key, tok.patches[idx], tok.positions[idx], tok.grid, tok.label, tok.meta)
        held[index] = (kept, n)
        emit(packer.push(index, keep))
    emit(packer.flush())
    for handle, length in packer.rejected:
        tok, _ = held.pop(handle)
        errors.append(ErrorRecord(tok.key, url, "pack", "oversize",
                                  f"{length} tokens > seq_len={cfg.pack.seq_len} (oversize='skip')"))


# -- the driver --------------------------------------------------------------------------------


def read_manifest(out_dir: str | Path) -> dict | None:
    """The manifest of an output folder, or ``None`` when it has none."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


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
                if p.name.startswith(".") and _TMP in p.name:
                    p.unlink(missing_ok=True)
                    n += 1
    return n


def _verified(out: Path, entry: dict, verify: bool) -> bool:
    shard = out / entry["output"]
    errs = out / entry.get("errors_file", "")
    if not shard.is_file() or not errs.is_file() or shard.stat().st_size != entry["bytes"]:
        return False
    return not verify or sha256_file(shard) == entry["sha256"]


def _manifest(cfg: PreprocessConfig, urls: Sequence[str], entries: dict[str, dict], complete: bool) -> dict:
    from . import __version__

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
        "error_kinds": _merge_counts(e["error_kinds"] for e in shards),
        "errors_file": ERRORS_FILE if complete else None,
        "shards": shards,
    }


def _run_local(tasks: list[dict], workers: int) -> Iterator[dict]:
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


def _run_ray(tasks: list[dict], workers: int) -> Iterator[dict]:
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
    """
    from tqdm.auto import tqdm

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    cfg = config or PreprocessConfig()
    if packed is not None and packed != cfg.packed:
        cfg = dataclasses.replace(cfg, packed=packed)
    urls = expand_sources(urls)
    if len(set(urls)) != len(urls):
        raise ValueError("the same input shard is listed twice")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        _clean_temporaries(out)
        old = read_manifest(out)
        entries: dict[str, dict] = {}
        if old is not None:
            if old.get("format") != MANIFEST_FORMAT or old.get("config") != cfg.to_dict():
                if not overwrite:
                    raise ManifestError(
                        f"{out / MANIFEST} was written with another configuration; "
                        "use another folder or overwrite=True (--overwrite)"
                    )
            else:
                wanted = set(urls)
                entries = {e["input"]: e for e in old["shards"] if e["input"] in wanted and _verified(out, e, verify)}
        index = {u: i for i, u in enumerate(urls)}
        for e in entries.values():
            e["index"] = index[e["input"]]
        todo = [
            {"url": u, "index": i, "out_dir": str(out), "config": cfg} for i, u in enumerate(urls) if u not in entries
        ]
        _atomic_write_text(out / MANIFEST, json.dumps(_manifest(cfg, urls, entries, False), indent=1))
        run_engine: Callable[[list[dict], int], Iterator[dict]] = _run_local if engine == "local" else _run_ray
        bar = tqdm(total=len(urls), initial=len(entries), unit="shard", disable=not progress, desc="preprocess")
        done_examples = sum(e["examples"] for e in entries.values())
        done_errors = sum(e["errors"] for e in entries.values())
        try:
            for entry in run_engine(todo, workers) if todo else ():
                entries[entry["input"]] = entry
                _atomic_write_text(out / MANIFEST, json.dumps(_manifest(cfg, urls, entries, False), indent=1))
                done_examples += entry["examples"]
                done_errors += entry["errors"]
                bar.update(1)
                bar.set_postfix(examples=done_examples, errors=done_errors)
        finally:
            bar.close()
        lines = []
        for e in sorted(entries.values(), key=lambda e: e["index"]):
            lines.append((out / e["errors_file"]).read_text(encoding="utf-8"))
        _atomic_write_text(out / ERRORS_FILE, "".join(lines))
        manifest = _manifest(cfg, urls, entries, True)
        _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", help="webdataset shards (brace patterns allowed)")
    parser.add_argument("--out", required=True, help="output folder (resumed when it holds a run)")
    parser.add_argument("--workers", type=int, default=1, help="processes (local) or concurrent tasks (ray)")
    parser.add_argument("--engine", choices=ENGINES, default="local")
    parser.add_argument("--packed", action="store_true", help="store packed sequences instead of examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-size", type=int, default=16, help="patch side p in pixels")
    parser.add_argument("--max-patches", type=int, default=256, help="patch budget per frame (0: none)")
    parser.add_argument("--fit-mode", default="native", help="resolution policy (see patchpack.fit)")
    parser.add_argument("--seq-len", type=int, default=1024, help="L for --packed")
    parser.add_argument("--max-per-seq", type=int, default=None, help="Emax for --packed")
    parser.add_argument("--drop", type=float, default=0.0, help="constant token drop rate for --packed")
    parser.add_argument("--video", action="store_true", help="also decode video members")
    parser.add_argument("--no-verify", action="store_true", help="on resume, check sizes instead of sha256")
    parser.add_argument("--overwrite", action="store_true", help="replace a run made with another config")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    video = None
    if args.video:
        from .decode.video import VideoConfig

        video = VideoConfig()
    drop = DropConfig(kind="constant", rate=args.drop) if args.drop else DropConfig()
    return PreprocessConfig(
        fit=FitConfig(patch_size=args.patch_size, max_patches=args.max_patches or None, mode=args.fit_mode),
        video=video, seed=args.seed, packed=args.packed,
        pack=PackConfig(seq_len=args.seq_len, max_per_seq=args.max_per_seq), drop=drop,
    )


def run(args: argparse.Namespace) -> int:
    m = preprocess(
        args.urls, args.out, config_from_args(args), workers=args.workers, engine=args.engine,
        verify=not args.no_verify, overwrite=args.overwrite, progress=not args.quiet,
    )
    t = m["totals"]
    print(
        f"{len(m['shards'])} shard(s) -> {args.out}: {t['examples']:,} examples, {t['rows']:,} rows, "
        f"{t['errors']:,} errors ({t['bytes'] / 2**20:.1f} MiB)"
    )
    return 0
