"""Training and evaluation loaders over shards for :func:`patchpack.train.train`.

One home for the loader's defaults: :class:`~patchpack.config.LoaderConfig`. The training
loader is that config with ``training=True``; an evaluation loader is the same config read
as it is (:func:`eval_config`: no dropping, no augmentation, one epoch in a fixed shard
order).

Drop schedules: a :class:`~patchpack.drop.DropConfig` with a ``schedule`` runs over
``schedule_epochs``, which it requires. :func:`make_loaders` takes the schedule's fields
without it (``drop_schedule={"schedule": "sigmoid", "rho_min": 0.25}``) and sets it from the
run's ``steps``: ``steps / batches per pass * epochs per pass``, the batches per pass being
``len(loader)`` where it is known (patchpack shards) or :meth:`PackedLoader.count_batches`
(one read of every sample's header, no pixels) for finite webdataset and folder sources.
Endless loaders and mixtures have no batch count: set ``schedule_epochs`` yourself there.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ..config import LoaderConfig, largest_example
from ..drop import DropConfig
from ..loader import make_loader

__all__ = ["make_loaders", "eval_config", "schedule_epochs", "HELDOUT"]

#: the name of the held-out evaluation loader of :func:`make_loaders`
HELDOUT = "heldout"


def eval_config(config: LoaderConfig, max_patches: int | None = None, upsample: bool = False) -> LoaderConfig:
    """``config`` for evaluation: no token dropping, no augmentation, one epoch, shards in order, and
    each example at its own size under the budget (``native`` fit: a sampled training resolution
    is not drawn at evaluation).

    With ``max_patches``, examples are fitted under that patch budget per frame instead
    (``upsample``: enlarged to fill it, ``FitConfig.allow_upsample``), and ``seq_len`` is
    raised to the largest example that budget allows when it is below it (an evaluation
    budget above the training one needs longer rows; nothing is skipped).
    """
    cfg = replace(config, training=False, shuffle_shards=False, epochs=1, resampled=False, drop=DropConfig(),
                  augment=None, fit=replace(config.fit, mode="native", allow_upsample=False))
    if max_patches is None:
        return cfg
    fit = replace(cfg.fit, max_patches=max_patches, allow_upsample=upsample)
    # the largest example under the new budget, read off a config that does not warn about it
    need = largest_example(replace(cfg, fit=fit, pack=replace(cfg.pack, oversize="truncate")))
    pack = replace(cfg.pack, seq_len=need) if need is not None and need > cfg.pack.seq_len else cfg.pack
    return replace(cfg, fit=fit, pack=pack)


def schedule_epochs(loader: Any, steps: int) -> float:
    """Epochs that ``steps`` batches of ``loader`` make (``len(loader)`` batches a pass of
    ``config.epochs`` epochs; counted with ``count_batches()`` where ``len`` is not known).

    Raises:
        ValueError: the loader's batch count cannot be known (endless, a mixture) or is 0.
    """
    try:
        try:
            batches = len(loader)
        except TypeError:
            batches = loader.count_batches()
    except TypeError as exc:
        raise ValueError(f"the drop schedule needs the run's length in epochs (drop.schedule_epochs, "
                         f"--drop-schedule-epochs): {exc}") from None
    if batches < 1:
        raise ValueError("the training loader has no batch: no sample could be packed")
    return steps / batches * (loader.config.epochs or 1)


def make_loaders(
    urls: Any,
    config: LoaderConfig | None = None,
    *,
    eval_urls: Any = None,
    steps: int | None = None,
    drop_schedule: Mapping[str, Any] | None = None,
    num_workers: int = 0,
    persistent_workers: bool = False,
    **overrides: Any,
) -> tuple[Any, dict[str, Any]]:
    """``(train_loader, {"heldout": eval_loader})`` over :func:`patchpack.make_loader`.

    Args:
        urls: training shards (anything :func:`~patchpack.make_loader` takes).
        config: the loader configuration (default :class:`LoaderConfig`'s defaults);
            ``overrides`` as for :func:`~patchpack.make_loader` (``seq_len=``, ``max_patches=``,
            ``drop__kind=``...).
        eval_urls: held-out shards, evaluated as :func:`eval_config` reads them; ``None``: none.
        steps: the run's optimizer steps.
        drop_schedule: :class:`~patchpack.drop.DropConfig` fields of a drop schedule
            (``schedule``, ``rho_max``, ``rho_min``, ``sigmoid_sharpness``) applied to the
            training loader's ``drop`` with ``schedule_epochs`` derived from ``steps`` (module
            docstring); needs ``steps``.
        num_workers, persistent_workers: as for :func:`~patchpack.make_loader` (both loaders).

    Raises:
        ValueError: a drop schedule whose length cannot be derived (:func:`schedule_epochs`).
    """
    cfg = replace((config or LoaderConfig()).with_overrides(**overrides), training=True)
    options = {"num_workers": num_workers, "persistent_workers": persistent_workers}
    train_loader = make_loader(urls, cfg, **options)
    if drop_schedule:
        if steps is None:
            raise ValueError("drop_schedule needs the run's steps (steps=) to derive schedule_epochs")
        drop = replace(cfg.drop, **drop_schedule, schedule_epochs=schedule_epochs(train_loader, steps))
        train_loader = make_loader(urls, replace(cfg, drop=drop), **options)
    evals = {HELDOUT: make_loader(eval_urls, eval_config(cfg), **options)} if eval_urls else {}
    return train_loader, evals
