"""The model registry for training: :func:`register_model` / :func:`build_model` (NaViT and the
two-tower model registered).

A model is registered with a name, its config class and a builder ``build(config) ->
torch.nn.Module``. :func:`build_model` picks the entry whose config class matches the
config it is given; the model's ``loss(logits, labels, label_smoothing)`` static method is
used when it has one, else cross-entropy ignoring label -1. A classifier's ``forward`` takes
a :class:`~patchpack.loader.batch.PackedBatch` and returns per-slot logits ``[B, E, classes]``;
a contrastive model's returns a :class:`~patchpack.model.contrastive.ContrastiveOutput`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from ..registry import Registry

__all__ = ["MODELS", "ModelEntry", "register_model", "build_model", "model_config", "model_loss", "model_name"]


class ModelEntry(NamedTuple):
    """A registered model: its config class and how to build it from a config."""

    config_cls: type
    build: Callable[[Any], torch.nn.Module]


def _build_method(cfg: Any) -> torch.nn.Module:
    return cfg.build()


#: name -> :class:`ModelEntry`.
MODELS: Registry[ModelEntry] = Registry("model", hint="patchpack.train.register_model")


def register_model(name: str, config_cls: type, build: Callable[[Any], torch.nn.Module] | None = None, *,
                   override: bool = False) -> None:
    """Register a model: ``config_cls`` instances are built with ``build`` (default: the config's
    ``build()`` method). ``config_cls.from_dict`` (when present) reads configs back from checkpoints.

    Raises:
        RegistryError: ``name`` is taken and ``override`` is false.
    """
    MODELS.register(name, ModelEntry(config_cls, build or _build_method), override=override)


def _found(config: Any) -> tuple[str, ModelEntry]:
    found = MODELS.find(lambda e: isinstance(config, e.config_cls))
    if found is None:
        raise TypeError(f"no registered model takes a {type(config).__name__}; registered: "
                        f"{', '.join(MODELS.names())} (add one with patchpack.train.register_model)")
    return found


def model_name(config: Any) -> str:
    """The registered name of the model ``config`` describes."""
    return _found(config)[0]


def build_model(config: Any) -> torch.nn.Module:
    """The model a registered config describes."""
    return _found(config)[1].build(config)


def model_config(name: str, data: dict) -> Any:
    """The config of registered model ``name`` from its dict form."""
    cls = MODELS.get(name).config_cls
    return cls.from_dict(data) if hasattr(cls, "from_dict") else cls(**data)


def model_loss(model: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """The model's own ``loss`` when it defines one, else mean cross-entropy over labels ``>= 0``."""
    loss = getattr(type(model), "loss", None)
    if loss is not None:
        return loss(logits, labels, label_smoothing)
    keep = labels >= 0
    return F.cross_entropy(logits[keep], labels[keep], label_smoothing=label_smoothing)


def _register_builtin() -> None:
    from ..model import NaViT, NaViTConfig
    from ..model.contrastive import TwoTower, TwoTowerConfig

    register_model("navit", NaViTConfig, NaViT)
    register_model("two-tower", TwoTowerConfig, TwoTower)


_register_builtin()
