"""``patchpack train URLS...``: train the reference NaViT (+ TokenLearner) on packed batches (see :mod:`patchpack.train`).

Refused up front (one line, exit 2): sources that do not exist, shards whose first samples
hold no label (training on them would show a loss of 0) or a label outside
``[0, --num-classes)``, videos without ``--frames``. Labels are checked again in every
batch (train and eval), so an out-of-range label later on stops the run with its sample
key instead of an ``IndexError`` deep in the loss (or a device assert on CUDA).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterator

from . import checks, flags

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="+", help="training shards (webdataset urls or brace patterns)")
    p.add_argument("--eval-urls", nargs="*", default=None, help="held-out shards (default: none)")
    p.add_argument("--eval-max-patches", type=flags.positive_int, nargs="*", default=None,
                   help="evaluate at these patch budgets (default: max-patches/4 and max-patches)")
    p.add_argument("--num-classes", type=flags.positive_int, required=True,
                   help="classifier outputs; labels lie in [0, N)")
    p.add_argument("--steps", type=flags.positive_int, default=1000)
    p.add_argument("--batch-size", type=flags.positive_int, default=8, help="packed sequences per batch")
    flags.add_seq_len(p, 256)
    flags.add_max_per_seq(p)
    flags.add_buffer_size(p)
    flags.add_fit(p, 16, 64)
    flags.add_drop(p)
    p.add_argument("--dim", type=flags.positive_int, default=192)
    p.add_argument("--depth", type=flags.positive_int, default=6)
    p.add_argument("--heads", type=flags.positive_int, default=3)
    p.add_argument("--pool", choices=("mean", "attention"), default="mean")
    p.add_argument("--posemb", default="learned", help="learned | fractional | sinusoidal | fourier | none")
    p.add_argument("--token-learner", type=flags.non_negative_int, default=0, metavar="K", help="learned tokens per example (0: off)")
    p.add_argument("--token-fuser", action="store_true")
    p.add_argument("--attention", default="auto", help="auto | sdpa | math | flex | varlen")
    p.add_argument("--lr", type=flags.positive_float, default=1e-3)
    p.add_argument("--warmup", type=flags.non_negative_int, default=None, help="warm-up steps (default: 5%% of steps)")
    p.add_argument("--weight-decay", type=flags.non_negative_float, default=0.05)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for checkpoints and logs")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--deterministic", action="store_true",
                   help="torch's deterministic algorithms: same seed, data and threads -> same weights")
    p.add_argument("--checkpoint-every", type=flags.positive_int, default=None)
    p.add_argument("--eval-every", type=flags.positive_int, default=None)
    p.add_argument("--log-every", type=flags.non_negative_int, default=10)
    flags.add_video(p)
    p.add_argument("--label-field", default="cls",
                   help="label member: 'cls' (an integer as text, default) or 'json:<key>' (a key of the json member)")
    p.add_argument("--workers", type=flags.non_negative_int, default=0, help="DataLoader workers")
    flags.add_reading(p)
    flags.add_seed(p)


def run(args: argparse.Namespace) -> int:
    urls = checks.check_sources(args.urls)
    checks.check_output_folder(args.out, "--out")
    eval_urls = checks.check_sources(args.eval_urls) if args.eval_urls else None
    with checks.config_errors():  # bad values and traps while the configs are built: one line
        cfg, video, train_loader, evals = _build(args, urls, eval_urls)
    return _run(args, cfg, video, urls, train_loader, evals)


def _build(args: argparse.Namespace, urls: list[str], eval_urls: list[str] | None):
    from ..model import NaViTConfig, PosEmbConfig, TokenLearnerConfig
    from ..train import TrainConfig, make_loaders

    video = flags.video_config(args)
    _check_labels(urls, args.num_classes, video, args.label_field)
    _check_device_and_attention(args.device, args.attention)
    model_cfg = NaViTConfig(
        patch_size=args.patch_size,
        tubelet=video.tubelet if video is not None else 1,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        num_classes=args.num_classes,
        pool=args.pool,
        posemb=PosEmbConfig(kind=args.posemb),
        attention=args.attention,
        max_example_tokens=_max_example_tokens(args, video),
        token_learner=TokenLearnerConfig(
            num_tokens=args.token_learner, fuser=args.token_fuser,
            max_frames=max(1, (video.frames or 1) // video.tubelet) if video is not None else 1,
        )
        if args.token_learner > 0
        else None,
    )
    cfg = TrainConfig(
        model=model_cfg,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup if args.warmup is not None else max(1, args.steps // 20),
        weight_decay=args.weight_decay,
        device=args.device,
        log_every=args.log_every,
        eval_every=args.eval_every,
        out_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        resume=not args.no_resume,
        seed=args.seed,
        deterministic=args.deterministic,
    )
    train_loader, evals = make_loaders(
        urls,
        eval_urls=eval_urls,
        eval_max_patches=args.eval_max_patches,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        max_per_seq=args.max_per_seq,
        buffer_size=args.buffer_size,
        patch_size=args.patch_size,
        max_patches=args.max_patches,
        drop=flags.drop_config(args),
        video=video,
        workers=args.workers,
        seed=args.seed,
        label_field=args.label_field,
        loader_options=flags.reading_options(args),
    )
    return cfg, video, train_loader, evals


def _run(args: argparse.Namespace, cfg, video, urls: list[str], train_loader, evals: dict) -> int:
    from ..train import train

    if train_loader.config.pack.seq_len != args.seq_len:
        print(f"patchpack train: note: --seq-len {args.seq_len} raised to {train_loader.config.pack.seq_len}, "
              "the largest example the fit allows", file=sys.stderr)
    guarded = _LabelGuard(train_loader, args.num_classes)
    evals = {name: _LabelGuard(loader, args.num_classes) for name, loader in evals.items()}
    try:
        result = train(cfg, guarded, evals)
    except ValueError:
        if guarded.batches == 0 and train_loader.stats.examples == 0:  # the loader gave nothing
            return checks.report_outcome("train", 0, train_loader.errors, urls=urls, video=video,
                                         seq_len=train_loader.config.pack.seq_len)
        raise
    if train_loader.stats.examples == 0:  # batches of padding only: every sample failed
        return checks.report_outcome("train", 0, train_loader.errors, urls=urls, video=video,
                                     seq_len=train_loader.config.pack.seq_len)
    if guarded.labelled == 0:
        print(f"patchpack train: error: no labelled example in {guarded.batches} batches: nothing was learnt",
              file=sys.stderr)
        return 1
    for name in evals:
        r = result.final_eval(name)
        if r is not None:
            print(f"final {name}: accuracy {r['accuracy']:.3f} over {r['examples']} examples")
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    return 0


def _check_labels(urls: list[str], num_classes: int, video: Any, label_field: str = "cls") -> None:
    """Refuse shards whose first samples hold no usable media, no label, or a label >= ``num_classes``."""
    if label_field != "cls" and not label_field.startswith("json:"):
        raise ValueError(f"--label-field must be 'cls' or 'json:<key>', got {label_field!r}")
    seen = checks.sniff(urls, label_field)
    if not seen.samples:
        return  # nothing readable: the run reports the records
    vids = seen.video_members()
    if not seen.usable and vids and video is None:
        raise checks.UsageError(f"these shards hold {', '.join(vids)} members and no image: pass --frames N "
                                "to decode videos")
    if not seen.labelled:
        raise checks.UsageError(
            f"no labels found in the first {seen.samples} samples with --label-field {label_field} (members: "
            f"{seen.describe_members()}); train needs a 'cls' member holding an integer, class sub-folders in a "
            "folder source, or --label-field json:<key> for a key of a json member"
        )
    if seen.max_label >= num_classes:
        raise checks.UsageError(_label_message(seen.max_label, seen.max_key, num_classes))


def _max_example_tokens(args: argparse.Namespace, video) -> int:
    """Tokens one example can have: the largest per-frame patch budget (training or
    evaluation) times its time steps. Lets ``attention="auto"`` pick the linear-memory
    ``window`` backend on the CPU.
    """
    steps = -(-(video.frames or 1) // video.tubelet) if video is not None else 1
    budget = max([args.max_patches, *(args.eval_max_patches or [])])
    return budget * max(1, steps)


def _check_device_and_attention(device: str, attention: str) -> None:
    import torch

    from ..model.attention import BACKENDS

    if attention != "auto" and attention not in BACKENDS:
        raise ValueError(f"unknown attention backend {attention!r}; expected 'auto' or one of {BACKENDS}")
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"--device {device!r}: {exc}") from None


def _label_message(label: int, key: str, num_classes: int) -> str:
    return (f"label {label} of sample {key!r} is out of range for --num-classes {num_classes} "
            f"(labels must lie in 0..{num_classes - 1}): raise --num-classes")


class _LabelGuard:
    """A loader's batches passed through, refusing labels ``>= num_classes`` with the sample key.

    Everything else (``state_dict``, ``stats``, ``errors``, ``config``) is the loader's.
    ``batches`` and ``labelled`` count what went through.
    """

    def __init__(self, loader: Any, num_classes: int) -> None:
        self._loader, self.num_classes = loader, num_classes
        self.batches = self.labelled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __iter__(self) -> Iterator[Any]:
        for batch in self._loader:
            labels = batch.labels
            bad = (labels >= self.num_classes).nonzero()
            if len(bad):
                r, j = (int(v) for v in bad[0])
                raise checks.UsageError(_label_message(int(labels[r, j]), batch.sample_keys[r][j], self.num_classes))
            self.batches += 1
            self.labelled += int((labels >= 0).sum())
            yield batch
