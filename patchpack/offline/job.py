"""The unit of preprocessing work: one input shard -> one patchpack shard plus its error file.

No torch: a preprocessing worker (local process or Ray task) imports only the sources,
the per-example steps of the loader (:mod:`patchpack.pipeline.admission`,
:mod:`patchpack.pipeline.tokens`), packing and the shard writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..drop import drop_rate, drop_tokens, keep_count
from ..errors import ErrorRecord, SampleError
from ..fit import replay_fit_draw
from ..pack import make_packer
from ..pipeline.admission import admit_sample
from ..pipeline.tokens import pixels_to_tokens
from ..rng import DROP_STREAM, FIT_STREAM, example_rng
from ..sources import Sample, read_shard
from ..storage.manifest import ERRORS_DIR, SHARD_SUFFIX
from ..sources.fields import field_name
from ..storage.format import TextIdsSpec
from ..storage.writer import ShardWriter
from ..text import encode_texts, tokenizer_name
from ..tokenize import Tokens
from .config import PreprocessConfig

__all__ = ["process_shard", "sample_to_tokens", "output_name", "atomic_write_text", "TMP_MARK", "merge_counts"]

TMP_MARK = ".tmp-"
#: Test hook, unset in normal use: ``"SHARD:EXAMPLES"`` makes the worker processing input shard
#: number ``SHARD`` stop after writing ``EXAMPLES`` examples, wait until the manifest lists a
#: finished shard, and SIGKILL its whole process group (driver and workers, like a lost machine).
#: Tests use it to interrupt a run at a known point instead of racing a timer.
KILL_AT_ENV = "PATCHPACK_TEST_KILL_AT"


def _interrupt_here(task: dict, written: int) -> None:
    """The :data:`KILL_AT_ENV` test hook (a no-op unless it names this shard and count)."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    shard, _, count = spec.partition(":")
    if int(shard) != int(task["index"]) or int(count or 1) != written:
        return
    import signal

    manifest = Path(task["out_dir"]) / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # an event the driver writes: a finished shard in the manifest
        try:
            if json.loads(manifest.read_text(encoding="utf-8"))["shards"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    os.killpg(os.getpgrp(), signal.SIGKILL)


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


def sample_to_tokens(sample: Sample, cfg: PreprocessConfig) -> Tokens:
    """header -> fit -> pixels -> tokens of one sample, no dropping: what the loader makes of it in
    its first epoch (the same steps: :func:`patchpack.pipeline.admission.admit_sample`,
    :func:`patchpack.pipeline.tokens.pixels_to_tokens`), with its labels and text fields.

    Raises:
        SampleError: for anything wrong with the sample (with its key and shard).
    """
    lcfg = cfg.loader_config()
    try:
        held = admit_sample(sample, lcfg, 0, 0, 0.0)
        pr = held.plan
        patches, positions = pixels_to_tokens(held.data, pr, lcfg)
    except SampleError as e:
        e.key, e.shard = e.key or sample.key, e.shard or sample.shard
        raise
    except ValueError as exc:  # decoded pixels that do not tile
        raise SampleError("corrupt", f"decoded pixels do not tile: {exc}", key=sample.key, shard=sample.shard,
                          stage="tokenize") from None
    except Exception as exc:  # an untyped failure on one sample must not stop the shard
        raise SampleError("failed", f"{type(exc).__name__}: {str(exc)[:300]}", key=sample.key,
                          shard=sample.shard, stage="decode") from None
    meta = {"source_size": tuple(pr.source_size), "source_shard": sample.shard, "kind": pr.kind, "index": sample.index}
    return Tokens(sample.key, patches, positions, tuple(pr.grid), meta=meta, label_set=held.labels,
                  fields=held.fields, text_ids=_text_ids(held.fields, lcfg))


def _text_ids(fields: dict[str, str | None], cfg) -> dict:
    """Token ids of the text field, cut to ``text_len`` (none without a tokenizer)."""
    name = cfg.text_name
    if cfg.tokenizer is None or name is None:
        return {}
    text = fields.get(name)
    if text is None:
        return {name: None}
    (ids,) = encode_texts(cfg.tokenizer, [text])
    return {name: np.asarray(ids[: cfg.text_len], np.int32)}


def _writer(path: Path, cfg: PreprocessConfig, meta: dict) -> ShardWriter:
    lcfg = cfg.loader_config()
    text = None
    if cfg.tokenizer is not None and lcfg.text_name is not None:
        text = TextIdsSpec(tokenizer=tokenizer_name(cfg.tokenizer), text_len=cfg.text_len, fields=(lcfg.text_name,),
                           vocab_size=getattr(cfg.tokenizer, "vocab_size", None))
    return ShardWriter(path, "packed" if cfg.packed else "examples", patch_size=cfg.fit.patch_size,
                       tubelet=cfg.tubelet, channels=3, fields=[field_name(s) for s in cfg.fields],
                       field_max_bytes=cfg.field_max_bytes, text=text, metadata=meta,
                       rows_per_batch=cfg.rows_per_batch)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _examples(url: str, cfg: PreprocessConfig, errors: list[ErrorRecord]) -> Iterator[tuple[Tokens, int]]:
    """``(tokens, sample index)`` of one shard's good samples, in order; failures go to ``errors``."""
    for rec in read_shard(url, options=cfg.loader_config().read_options):
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
    A source that gave no sample at all, only a shard record (missing, unreadable, a failing
    pipe), writes no output shard: the entry then has ``unread`` (the record's message) and
    ``output=None``, and only its error file is written.
    """
    url, cfg = task["url"], task["config"]
    out_dir = Path(task["out_dir"])
    name = output_name(url)
    started = time.perf_counter()
    errors: list[ErrorRecord] = []
    meta = {"config": cfg.to_dict(), "input": url}
    writer = _writer(out_dir / name, cfg, meta)
    try:
        stream = _examples(url, cfg, errors)
        if cfg.packed:
            _write_packed(stream, writer, cfg, url, errors)
        else:
            for written, (tok, _) in enumerate(stream, 1):
                writer.write(tok)
                _interrupt_here(task, written)
        # every sample is an example or a sample-level record; records keyed by the shard are about the shard
        samples = writer.examples + sum(e.key != e.shard for e in errors)
        unread = next((e.message for e in errors if e.key == e.shard), None) if samples == 0 else None
        if unread is not None:  # the source gave nothing but a shard record: no (empty) output shard
            writer.abort()
        else:
            info = writer.close()
    except BaseException:
        writer.abort()
        raise
    err_name = f"{ERRORS_DIR}/{Path(name).stem}.jsonl"
    (out_dir / ERRORS_DIR).mkdir(exist_ok=True)
    atomic_write_text(out_dir / err_name, "".join(json.dumps(e.to_dict()) + "\n" for e in errors))
    if unread is not None:
        return {"index": int(task["index"]), "input": url, "output": None, "errors_file": err_name,
                "unread": unread, "errors": len(errors), "error_kinds": _count(e.kind for e in errors)}
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


def merge_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def _rate_rng(cfg: PreprocessConfig, tok: Tokens) -> np.random.Generator:
    """The loader's epoch-0 generator of ``tok`` as it stands after the fit: the same drop rate."""
    rng = example_rng(cfg.seed, 0, tok.key, FIT_STREAM)
    replay_fit_draw(tok.meta.get("kind", "image"), tok.meta["source_size"], cfg.fit, rng)
    return rng


def _write_packed(
    stream: Iterator[tuple[Tokens, int]], writer: ShardWriter, cfg: PreprocessConfig, url: str,
    errors: list[ErrorRecord],
) -> None:
    """Drop and pack one shard's examples into sequences; refused (oversize) examples become records."""
    packer = make_packer(cfg.pack)
    held: dict[int, tuple[Tokens, int]] = {}
    rejected: list[ErrorRecord] = []  # reported after the shard's read errors

    def emit(seqs) -> None:
        for handle, length in seqs.rejected:
            tok, _ = held.pop(handle)
            rejected.append(ErrorRecord(tok.key, url, "pack", "oversize",
                                        f"{length} tokens > seq_len={cfg.pack.seq_len} (oversize='skip')"))
        for seq in seqs:
            items = [held.pop(h) for h in seq.handles]
            toks = [t if len(t) == n else replace(t, patches=t.patches[:n], positions=t.positions[:n])
                    for (t, _), n in zip(items, seq.lengths)]  # oversize="truncate" cuts the tail
            writer.write_sequence(toks, [src for _, src in items])

    for tok, index in stream:
        n = len(tok)
        p = cfg.fit.patch_size
        keep = keep_count(n, drop_rate(cfg.drop, n, _rate_rng(cfg, tok), height=tok.grid[1] * p,
                                       width=tok.grid[2] * p))
        idx = drop_tokens(n, keep, example_rng(cfg.seed, 0, tok.key, DROP_STREAM))
        kept = replace(tok, patches=tok.patches[idx], positions=tok.positions[idx])
        held[index] = (kept, n)
        emit(packer.push(index, keep))
    emit(packer.flush())
    errors.extend(rejected)
