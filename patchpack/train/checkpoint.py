"""Checkpoints: model, optimizer, scheduler, step and loader state, read with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint", "loader_state", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"


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
) -> str:
    """Write a checkpoint atomically (temp file + rename); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": int(step),
        "loader": _plain(loader_state) if loader_state is not None else None,
        "config": json.dumps(asdict(config)) if config is not None else None,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return str(path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a checkpoint without unpickling code: ``{"model", "optimizer", "scheduler", "step", "loader", "config"}``.

    ``config`` is a :class:`TrainConfig` (or ``None``) and ``loader`` the loader state.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    payload["loader"] = _unplain(payload.get("loader"))
    cfg = payload.get("config")
    payload["config"] = TrainConfig(**json.loads(cfg)) if cfg else None
    return payload


def loader_state(loader: Any) -> Any:
    fn = getattr(loader, "state_dict", None)
    return fn() if callable(fn) else None


