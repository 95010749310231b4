"""Run folders: what a training run writes, and what rebuilds its model and loader later.

``patchpack train`` always writes one (``--out``, default ``runs/<YYYYmmdd-HHMMSS>``);
``patchpack eval`` reads it::

    runs/20250101-120000/
      run.json          the run: task, TrainConfig (with the model config), shards, class names
      loader.toml       the loader config (patchpack stats --config loader.toml reproduces it)
      tokenizer.json    contrastive runs: the caption tokenizer (the tokenizers library's JSON)
      checkpoint.pt     model, optimizer, scheduler, step, loader state and all of the above
      train_log.jsonl   one JSON object a line, "kind": "step" (every step) or "eval"
      report.md         header, final figures, files; patchpack eval adds its curve
      eval_curve.json   patchpack eval: figures per patch budget
      eval_curve.png    patchpack eval: the figure against tokens per image

:class:`RunSpec` is what ``run.json`` (and the checkpoint, so a checkpoint alone is enough)
holds. Every row of ``train_log.jsonl`` of one kind has the same keys
(:class:`~patchpack.train.config.StepRow`, :class:`~patchpack.train.config.EvalRow`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import LoaderConfig
from .config import TrainConfig
from .text import CaptionTokenizer

__all__ = ["RunSpec", "RunLog", "default_run_dir", "read_log", "RUN_FILE", "LOADER_FILE", "TOKENIZER_FILE", "LOG",
           "REPORT", "CHECKPOINT", "RUNS_ROOT"]

RUN_FILE, LOADER_FILE, TOKENIZER_FILE = "run.json", "loader.toml", "tokenizer.json"
LOG, REPORT, CHECKPOINT = "train_log.jsonl", "report.md", "checkpoint.pt"
#: where runs go without ``--out`` (relative to the working folder)
RUNS_ROOT = "runs"
_FORMAT = "patchpack-run"


def default_run_dir(root: str | Path = RUNS_ROOT) -> Path:
    """``root/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... when it exists); not created."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _loader_text(cfg: LoaderConfig) -> str:
    """The loader config as TOML, its Python objects left out (the tokenizer has its own file; a
    custom drop-rate function or augmentation hook cannot be written and evaluation needs neither)."""
    from ..configfile import dump_config

    cfg = replace(cfg, tokenizer=None)
    if cfg.drop.rate_fn is not None:
        cfg = replace(cfg, drop=type(cfg.drop)())
    if cfg.augment is not None and cfg.augment.transform is not None:
        cfg = replace(cfg, augment=replace(cfg.augment, transform=None))
    return dump_config(cfg, "toml")


def _loader_from_text(text: str, tokenizer: Any) -> LoaderConfig:
    from ..configfile import load_config_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / LOADER_FILE
        path.write_text(text, encoding="utf-8")
        cfg = load_config_file(path)
    return replace(cfg, tokenizer=tokenizer)


@dataclass
class RunSpec:
    """What rebuilds a run's model and loader.

    Attributes:
        train: the :class:`TrainConfig` (its ``model`` is the model config).
        loader: the training loader's :class:`LoaderConfig` (tokenizer included).
        urls, eval_urls: training and held-out shards.
        class_words: per class id, its phrasings (zero-shot prompts); ``None``: none known.
    """

    train: TrainConfig
    loader: LoaderConfig
    urls: list[str] = field(default_factory=list)
    eval_urls: list[str] = field(default_factory=list)
    class_words: list[list[str]] | None = None

    @property
    def tokenizer(self) -> CaptionTokenizer | None:
        tok = self.loader.tokenizer
        return tok if isinstance(tok, CaptionTokenizer) else None

    def _head(self) -> dict[str, Any]:
        return {"format": _FORMAT, "version": 1, "task": self.train.task, "train": self.train.to_dict(),
                "urls": list(self.urls), "eval_urls": list(self.eval_urls), "class_words": self.class_words}

    def write(self, folder: str | Path) -> Path:
        """Write ``run.json``, ``loader.toml`` and (contrastive) ``tokenizer.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LOADER_FILE).write_text(_loader_text(self.loader), encoding="utf-8")
        head = {**self._head(), "loader": LOADER_FILE, "tokenizer": None}
        if self.tokenizer is not None:
            head["tokenizer"] = self.tokenizer.save(folder / TOKENIZER_FILE).name
        path = folder / RUN_FILE
        path.write_text(json.dumps(head, indent=1), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> "RunSpec":
        """The run of a folder :meth:`write` wrote.

        Raises:
            ValueError: no ``run.json`` there, or not one of a patchpack run (one line).
        """
        folder = Path(folder)
        try:
            head = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder}: not a patchpack run folder ({RUN_FILE}: {exc})") from None
        tok = CaptionTokenizer.load(folder / head["tokenizer"]) if head.get("tokenizer") else None
        loader = _loader_from_text((folder / head.get("loader", LOADER_FILE)).read_text(encoding="utf-8"), tok)
        return cls._from_head(head, loader)

    @classmethod
    def _from_head(cls, head: dict[str, Any], loader: LoaderConfig) -> "RunSpec":
        if head.get("format") != _FORMAT:
            raise ValueError(f"not a patchpack run (format {head.get('format')!r})")
        return cls(TrainConfig(**head["train"]), loader, head.get("urls", []), head.get("eval_urls", []),
                   head.get("class_words"))

    def to_json(self) -> str:
        """One JSON string holding everything (for the checkpoint)."""
        tok = self.tokenizer
        return json.dumps({**self._head(), "loader_toml": _loader_text(self.loader),
                           "tokenizer_json": tok.to_str() if tok is not None else None})

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        head = json.loads(text)
        tok = CaptionTokenizer(head["tokenizer_json"]) if head.get("tokenizer_json") else None
        return cls._from_head(head, _loader_from_text(head["loader_toml"], tok))


class RunLog:
    """``train_log.jsonl``: one row a line, appended; on resume, rows after the checkpoint's step go."""

    def __init__(self, folder: str | Path | None, resumed_step: int | None = None) -> None:
        self.path = Path(folder) / LOG if folder is not None else None
        self._fh = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_step is not None and self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resumed_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, row: Any) -> None:
        """Append ``row`` (a :class:`StepRow` or :class:`EvalRow`)."""
        if self._fh is not None:
            self._fh.write(json.dumps(row.to_dict()) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``train_log.jsonl`` (a folder: its log)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
