"""Checkpoints: model, optimizer, scheduler, step, loader state and the run, read with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .run import CHECKPOINT, RunSpec

__all__ = ["save_checkpoint", "load_checkpoint", "loader_state", "CHECKPOINT"]


def _plain(state: Any) -> Any:
    """Loader state as a JSON string when possible (always loadable with weights_only)."""
    try:
        return {"json": json.dumps(state)}
    except (TypeError, ValueError):
        return {"raw": state}


def _unplain(state: Any) -> Any:
    if state is None:
        return None
    return json.loads(state["json"]) if "json" in state else state["raw"]


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    loader_state: Any = None,
    config: TrainConfig | None = None,
    run: RunSpec | None = None,
) -> str:
    """Write a checkpoint atomically (temp file + rename); returns its path.

    ``run`` (the :class:`RunSpec`: loader config, tokenizer, class names) makes the checkpoint
    enough on its own for ``patchpack eval``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else (run.train if run is not None else None)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": int(step),
        "loader": _plain(loader_state) if loader_state is not None else None,
        "config": json.dumps(config.to_dict()) if config is not None else None,
        "run": run.to_json() if run is not None else None,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return str(path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a checkpoint without unpickling code: ``{"model", "optimizer", "scheduler", "step", "loader",
    "config", "run"}``.

    ``config`` is a :class:`TrainConfig` (or ``None``), ``run`` a :class:`RunSpec` (or ``None``)
    and ``loader`` the loader state.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    payload["loader"] = _unplain(payload.get("loader"))
    cfg = payload.get("config")
    payload["config"] = TrainConfig(**json.loads(cfg)) if cfg else None
    run = payload.get("run")
    payload["run"] = RunSpec.from_json(run) if run else None
    return payload


def loader_state(loader: Any) -> Any:
    fn = getattr(loader, "state_dict", None)
    return fn() if callable(fn) else None
