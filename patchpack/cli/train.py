"""``patchpack train URLS...``: train the reference NaViT (+ TokenLearner) on packed batches (see :mod:`patchpack.train`).

Tasks (``--task``): ``classify`` (cross-entropy on each example's label, ``--num-classes C``),
``multilabel`` (sigmoid binary cross-entropy on its label set as multi-hot targets, ``--num-classes
C``) and ``contrastive`` (a two-tower image-text model on the captions of ``--fields txt``, with a
word-level tokenizer trained on the first captions and saved in the run folder; zero-shot prompts
from ``--class-names FILE`` or a ``classes.json`` beside the shards).

The loader flags are the shared ones (:mod:`patchpack.cli.flags`) with the loader's defaults;
patchpack shards supply their own patch size and budget. Every run writes a run folder
(``--out``, default ``runs/<timestamp>``; :mod:`patchpack.train.run`) that ``patchpack eval``
reads. Refused up front (one line, exit 2): sources that do not exist, shards whose first samples
hold no label (training on them would show a loss of 0) or a label outside ``[0, --num-classes)``,
videos without ``--frames``, ``--seq-len`` below the largest example the fit allows, model values
that do not fit together (said with the flags). Labels are checked again in every batch, so an
out-of-range label later on stops the run with its sample key.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

from . import checks, flags, options

__all__ = ["add_arguments", "run"]

TASK_NAMES = ("classify", "multilabel", "contrastive")


def _named(what: str, values: Callable[[], Sequence[str]], extra: Sequence[str] = ()) -> Callable[[str], str]:
    """argparse type: one of ``values()`` (read when the flag is given), else one line naming the choices."""
    def parse(text: str) -> str:
        allowed = (*extra, *values())
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; expected one of {', '.join(allowed)}")
        return text
    parse.__name__ = what
    return parse


def _model_names(module: str, name: str) -> Callable[[], Sequence[str]]:
    """The names ``patchpack.model.<module>.<name>`` lists, read when asked (the model imports torch)."""
    def values() -> Sequence[str]:
        import importlib

        return getattr(importlib.import_module(f"patchpack.model.{module}"), name)
    return values


def _backends() -> Sequence[str]:
    from ..model import BACKENDS

    return BACKENDS.names()


def _listed(values: Callable[[], Sequence[str]]) -> str:
    return " | ".join(values())


def _add_run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--task", metavar="TASK", type=_named("task", lambda: TASK_NAMES), default="classify",
                   help="classify | multilabel | contrastive (default classify)")
    g.add_argument("--eval-urls", nargs="+", default=None, metavar="URL", help="held-out shards, evaluated at the end")
    g.add_argument("--out", metavar="DIR", default=None, help="the run folder (default runs/<YYYYmmdd-HHMMSS>)")
    g.add_argument("--steps", metavar="N", type=flags.positive_int, default=1000, help="optimizer steps (default 1000)")
    g.add_argument("--lr", metavar="LR", type=flags.positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    g.add_argument("--warmup", metavar="N", type=flags.non_negative_int, default=None, help="warm-up steps (default 5%% of steps)")
    g.add_argument("--weight-decay", metavar="WD", type=flags.non_negative_float, default=0.05)
    g.add_argument("--label-smoothing", metavar="E", type=flags.fraction, default=0.0, help="classify (default 0)")
    g.add_argument("--device", metavar="DEVICE", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    g.add_argument("--threads", metavar="N", type=flags.positive_int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--deterministic", action="store_true",
                   help="torch's deterministic algorithms: same seed, data and threads -> same weights")
    g.add_argument("--no-resume", action="store_true", help="start afresh even when --out holds a checkpoint")
    g.add_argument("--checkpoint-every", type=flags.positive_int, default=None, metavar="N")
    g.add_argument("--eval-every", type=flags.positive_int, default=None, metavar="N")
    g.add_argument("--log-every", type=flags.non_negative_int, default=10, metavar="N",
                   help="a log line every N steps, with the ETA (0: none; default 10)")


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (NaViT; the image tower of --task contrastive)")
    g.add_argument("--dim", metavar="N", type=flags.positive_int, default=192, help="width (default 192)")
    g.add_argument("--depth", metavar="N", type=flags.positive_int, default=6, help="blocks (default 6)")
    g.add_argument("--heads", metavar="N", type=flags.positive_int, default=3, help="attention heads (default 3)")
    g.add_argument("--mlp-ratio", metavar="R", type=flags.positive_float, default=4.0, help="MLP width / dim (default 4)")
    g.add_argument("--pool", metavar="HOW", type=_named("pooling", lambda: ("mean", "map")), default=None,
                   help="mean | map (default: mean; map for --task contrastive)")
    g.add_argument("--posemb", metavar="KIND", type=_named("positional embedding", _model_names("posemb", "KINDS")), default="learned",
                   help=f"{_listed(_model_names('posemb', 'KINDS'))} (default learned)")
    g.add_argument("--posemb-coords", metavar="COORDS", type=_named("posemb coords", _model_names("posemb", "COORDS")), default="absolute",
                   help=f"{_listed(_model_names('posemb', 'COORDS'))}: the patch index or p / side (NaViT 2.1) (default absolute)")
    g.add_argument("--posemb-combine", metavar="HOW", type=_named("posemb combination", _model_names("posemb", "COMBINES")), default="sum",
                   help=f"{_listed(_model_names('posemb', 'COMBINES'))}: how the per-axis embeddings combine (default sum)")
    g.add_argument("--fractional-scale", type=flags.positive_int, default=64, metavar="S",
                   help="fractional coords: rows of the learned table - 1 (default 64)")
    g.add_argument("--attention", metavar="NAME", type=_named("attention backend", _backends, ("auto",)), default="auto",
                   help=f"auto | {_listed(_backends)} (patchpack.model.BACKENDS; default auto: the first that runs)")
    g.add_argument("--token-learner-tokens", type=flags.non_negative_int, default=0, metavar="K",
                   help="TokenLearner: K learned tokens per example (0: off; default 0)")
    g.add_argument("--token-learner-version", metavar="V", type=_named("TokenLearner version", _model_names("tokenlearner", "VERSIONS")), default="1.1",
                   help=f"{_listed(_model_names('tokenlearner', 'VERSIONS'))}: 1.1 MLP + softmax maps, 1.0 3x3 convs + sigmoid (default 1.1)")
    g.add_argument("--token-learner-at-layer", type=flags.non_negative_int, default=None, metavar="N",
                   help="blocks before the TokenLearner (default half)")
    g.add_argument("--token-learner-pooling", metavar="HOW", type=_named("TokenLearner pooling", _model_names("tokenlearner", "POOLINGS")), default="sum",
                   help=f"version 1.0: {_listed(_model_names('tokenlearner', 'POOLINGS'))} over each map (default sum)")
    g.add_argument("--token-learner-dropout", metavar="P", type=flags.fraction, default=0.0, help="(default 0)")
    g.add_argument("--token-fuser", metavar="HOW", type=_named("TokenFuser", _model_names("tokenlearner", "FUSERS")), default="none",
                   help=f"{_listed(_model_names('tokenlearner', 'FUSERS'))} (default none)")
    g.add_argument("--learned-slots", type=flags.positive_int, default=None, metavar="N",
                   help="example places per learned row (default: chosen per batch)")


def _add_text(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("contrastive (--task contrastive)")
    g.add_argument("--loss", metavar="NAME", type=_named("contrastive loss", lambda: ("sigmoid", "softmax")), default="sigmoid",
                   help="sigmoid (SigLIP) | softmax (CLIP) (default sigmoid)")
    g.add_argument("--loss-chunk", type=flags.positive_int, default=None, metavar="N",
                   help="compute the loss in blocks of N rows: same values, memory N x pairs (default: whole)")
    g.add_argument("--vocab-size", metavar="N", type=flags.positive_int, default=8192, help="tokenizer words at most (default 8192)")
    g.add_argument("--text-dim", metavar="N", type=flags.positive_int, default=None, help="text tower width (default --dim)")
    g.add_argument("--text-depth", metavar="N", type=flags.positive_int, default=2, help="text tower blocks (default 2)")
    g.add_argument("--text-heads", metavar="N", type=flags.positive_int, default=None, help="(default --heads)")
    g.add_argument("--embed-dim", metavar="N", type=flags.positive_int, default=None, help="shared embedding width (default --dim)")
    g.add_argument("--class-names", default=None, metavar="FILE",
                   help="class names for zero-shot prompts: JSON list (or lists of phrasings) or one class a line "
                        "(default: classes.json beside the shards)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="+", help="training shards (webdataset urls or brace patterns, folders, patchpack shards)")
    flags.add_config(p)
    flags.add_flags(p)
    flags.add_flags(p, only=("--workers", "--progress"))
    _add_run(p)
    _add_model(p)
    _add_text(p)


#: model option -> the flag that sets it, for messages in the user's words
_MODEL_FLAGS = {"text dim": "--text-dim", "dim": "--dim", "heads": "--heads", "depth": "--depth", "at_layer": "--token-learner-at-layer",
                "num_tokens": "--token-learner-tokens", "learned_slots": "--learned-slots", "text_len": "--text-len",
                "fractional_scale": "--fractional-scale", "combine": "--posemb-combine", "coords": "--posemb-coords"}


def _in_user_words(text: str) -> str:
    """A config message with loader options and model options named by their flags."""
    text = options.in_user_words(text)
    text = re.sub(r"\btext dim=(\S+) is not divisible by heads=", r"--text-dim \1 is not divisible by --text-heads ", text)
    return re.sub(r"(?<![\w.-])(?:[a-z_]+\.)?(text dim|[a-z_]+)=(\S+?)(?=[\s,;:)]|$)",
                  lambda m: f"{_MODEL_FLAGS[m.group(1)]} {m.group(2)}" if m.group(1) in _MODEL_FLAGS else m.group(0),
                  text)


def run(args: argparse.Namespace) -> int:
    from ..train.run import default_run_dir

    urls = checks.check_sources(args.urls)
    eval_urls = checks.check_sources(args.eval_urls) if args.eval_urls else None
    out = args.out or str(default_run_dir())
    checks.check_output_folder(out, "--out")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with checks.config_errors(_in_user_words):
        setup = _Setup.build(args, urls, eval_urls, out)
    checks.check_output_folder(out, "--out", create=True)  # made once the run is known to start
    return setup.run(args)


@dataclass
class _Setup:
    """Everything a run needs, built from the command line."""

    cfg: Any  # LoaderConfig
    train: Any  # TrainConfig
    loader: Any
    evals: dict[str, Any]
    spec: Any  # RunSpec
    task: Any  # Task
    num_classes: int | None
    urls: list[str]

    @classmethod
    def build(cls, args: argparse.Namespace, urls: list[str], eval_urls: list[str] | None, out: str) -> "_Setup":
        from ..train import make_loaders
        from ..train.run import RunSpec
        from ..train.tasks import build_task

        cfg, schedule = _loader_config(args, urls)
        num_classes = _check_data(args, urls, cfg)
        cfg, class_words = _text(args, urls, cfg)
        tcfg = _train_config(args, cfg, num_classes, out)
        train_loader, evals = make_loaders(urls, cfg, eval_urls=eval_urls, steps=args.steps, drop_schedule=schedule,
                                           num_workers=args.workers, persistent_workers=args.workers > 0)
        spec = RunSpec(tcfg, train_loader.config, urls, eval_urls or [], class_words)
        task = build_task(args.task, cfg, class_words)
        return cls(cfg, tcfg, train_loader, evals, spec, task, num_classes, urls)

    def run(self, args: argparse.Namespace) -> int:
        from ..train import train

        guarded = _LabelGuard(self.loader, self.num_classes if args.task == "classify" else None)
        evals = {n: _LabelGuard(l, self.num_classes if args.task == "classify" else None) for n, l in self.evals.items()}
        try:
            result = train(self.train, guarded, evals, task=self.task, run=self.spec)
        except ValueError:
            if guarded.batches == 0 and self.loader.stats.examples == 0:  # the loader gave nothing
                return self._outcome()
            raise
        if self.loader.stats.examples == 0:  # batches of padding only: every sample failed
            return self._outcome()
        if args.task != "contrastive" and guarded.labelled == 0:
            print(f"patchpack train: error: no labelled example in {guarded.batches} batches: nothing was learnt",
                  file=sys.stderr)
            return 1
        for row in result.evals[-len(evals):] if evals else []:
            print(f"final {row.name}: {self.task.describe(row.metrics)} over {row.examples} examples")
        print(f"run folder: {self.train.out_dir} (patchpack eval {self.train.out_dir} SHARDS draws the "
              "flexible-inference curve)")
        return 0

    def _outcome(self) -> int:
        return checks.report_outcome("train", 0, self.loader.errors, urls=self.urls, video=self.cfg.video,
                                     seq_len=self.cfg.pack.seq_len, label_field=self.cfg.label_field)


def _loader_config(args: argparse.Namespace, urls: list[str]):
    """The loader config and, when a drop schedule is asked for without its length, the schedule's
    fields (train derives ``schedule_epochs`` from ``--steps``)."""
    asked = {**options.file_options(args), **flags.given(args)}
    fixed: dict[str, Any] = {}
    schedule = None
    if asked.get("drop__schedule", "none") != "none" and asked.get("drop__schedule_epochs") is None:
        schedule = {"schedule": asked["drop__schedule"]}
        fixed["drop__schedule"] = "none"
    cfg = options.loader_config(args, urls, **fixed)
    if args.task == "classify" and cfg.num_classes is not None:
        cfg = replace(cfg, num_classes=None)  # classes count the model's outputs; labels stay integers
    return cfg, schedule


def _check_data(args: argparse.Namespace, urls: list[str], cfg) -> int | None:
    """``--num-classes`` (required but for contrastive), checked against the labels of the first samples."""
    asked = {**options.file_options(args), **flags.given(args)}.get("num_classes")
    if args.task == "contrastive":
        if not cfg.fields:
            raise checks.UsageError("--task contrastive trains on captions: give --fields txt (the member holding "
                                    "them)")
        return None
    if asked is None:
        raise checks.UsageError(f"--task {args.task} needs --num-classes C (labels lie in 0..C-1)")
    _check_labels(urls, asked, cfg.video, cfg.label_field)
    return asked


def _text(args: argparse.Namespace, urls: list[str], cfg):
    """Contrastive runs: the loader config with a tokenizer trained on the first captions, and the class names."""
    if args.task != "contrastive":
        return cfg, None
    from ..train.text import CaptionTokenizer, find_class_words, read_captions, read_class_words

    spec = next(f for f in cfg.fields if f.removesuffix("?") == cfg.text_name)
    captions = read_captions(urls, spec)
    if not captions:
        raise checks.UsageError(f"no caption in field {cfg.text_name!r} of the training shards: --fields names the "
                                "member holding them (txt, or json:<key>)")
    tokenizer = CaptionTokenizer.train(captions, vocab_size=args.vocab_size)
    if args.class_names:
        try:
            class_words = read_class_words(args.class_names)
        except (OSError, ValueError) as exc:
            raise checks.UsageError(f"--class-names {args.class_names}: {exc}") from None
    else:
        found = find_class_words(urls)
        class_words = found[0] if found else None
    print(f"tokenizer: {tokenizer.vocab_size} words from {len(captions)} captions; zero-shot classes: "
          f"{len(class_words) if class_words else 'none (give --class-names FILE)'}", file=sys.stderr)
    return replace(cfg, tokenizer=tokenizer), class_words


def _time_steps(cfg, largest: int | None) -> int:
    """Most tubelet steps an example has: 1 for images; the frames asked for over the tubelet for
    videos (with no frame count, the token bound, one token a step at least)."""
    video = cfg.video
    if video is None:
        return 1
    if video.frames:
        from ..fit.video import round_frames

        return max(1, round_frames(video.frames, video.tubelet, video.rounding) // video.tubelet)
    return max(1, largest or 1)


def _image_config(args: argparse.Namespace, cfg, num_classes: int):
    from ..config import largest_example
    from ..model import NaViTConfig, PosEmbConfig, TokenLearnerConfig

    largest = largest_example(replace(cfg, training=False))
    tl = None
    if args.token_learner_tokens:
        tl = TokenLearnerConfig(num_tokens=args.token_learner_tokens, version=args.token_learner_version,
                                pooling=args.token_learner_pooling, dropout=args.token_learner_dropout,
                                at_layer=args.token_learner_at_layer, fuser=args.token_fuser, max_frames=_time_steps(cfg, largest),
                                learned_slots=args.learned_slots)
    posemb = PosEmbConfig(kind=args.posemb, coords=args.posemb_coords, combine=args.posemb_combine,
                          fractional_scale=args.fractional_scale)
    pool = args.pool or ("map" if args.task == "contrastive" else "mean")
    return NaViTConfig(patch_size=cfg.patch_size, tubelet=cfg.tubelet, dim=args.dim, depth=args.depth,
                       heads=args.heads, mlp_ratio=args.mlp_ratio, num_classes=num_classes, pool=pool, posemb=posemb,
                       attention=args.attention, max_example_tokens=largest,
                       token_learner=tl)


def _model_config(args: argparse.Namespace, cfg, num_classes: int | None):
    image = _image_config(args, cfg, num_classes or 0)
    if args.task != "contrastive":
        return image
    from ..model.contrastive import TwoTowerConfig
    from ..model.text import TextConfig

    text = TextConfig(vocab_size=cfg.tokenizer.vocab_size, text_len=cfg.text_len, dim=args.text_dim or args.dim,
                      depth=args.text_depth, heads=args.text_heads or args.heads, mlp_ratio=args.mlp_ratio)
    return TwoTowerConfig(image=image, text=text, embed_dim=args.embed_dim or args.dim)


def _train_config(args: argparse.Namespace, cfg, num_classes: int | None, out: str):
    import torch

    from ..train import TrainConfig

    if args.device != "auto":
        try:
            torch.device(args.device)
        except RuntimeError as exc:
            raise checks.UsageError(f"--device {args.device!r}: {exc}") from None
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    return TrainConfig(
        model=_model_config(args, cfg, num_classes), task=args.task, contrastive_loss=args.loss,
        loss_chunk=args.loss_chunk, steps=args.steps, lr=args.lr,
        warmup_steps=args.warmup if args.warmup is not None else max(1, args.steps // 20),
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, device=args.device,
        log_every=args.log_every, progress=show, eval_every=args.eval_every, out_dir=out,
        checkpoint_every=args.checkpoint_every, resume=not args.no_resume, seed=cfg.seed,
        deterministic=args.deterministic)


def _check_labels(urls: list[str], num_classes: int, video: Any, label_field: str = "cls") -> None:
    """Refuse shards whose first samples hold no usable media, no label, or a label >= ``num_classes``."""
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


def _label_message(label: int, key: str, num_classes: int) -> str:
    return (f"label {label} of sample {key!r} is out of range for --num-classes {num_classes} "
            f"(labels must lie in 0..{num_classes - 1}): raise --num-classes")


class _LabelGuard:
    """A loader's batches passed through, refusing labels ``>= num_classes`` (when given) with the sample key.

    Everything else (``state_dict``, ``stats``, ``errors``, ``config``, ``len``) is the loader's.
    ``batches`` and ``labelled`` count what went through (labelled: a label, or a target for multi-label).
    """

    def __init__(self, loader: Any, num_classes: int | None) -> None:
        self._loader, self.num_classes = loader, num_classes
        self.batches = self.labelled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self._loader:
            labels = batch.labels
            bad = (labels >= self.num_classes).nonzero() if self.num_classes is not None else ()
            if len(bad):
                r, j = (int(v) for v in bad[0])
                raise checks.UsageError(_label_message(int(labels[r, j]), batch.sample_keys[r][j], self.num_classes))
            self.batches += 1
            targets = batch.targets
            self.labelled += int((labels >= 0).sum() if targets is None else (targets.sum(-1) > 0).sum())
            yield batch
