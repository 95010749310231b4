"""Training on packed batches: config, tasks, loop, run folders, checkpoints, evaluation and the model registry (torch)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import EvalRow, StepRow, TrainConfig, TrainResult
from .loaders import eval_config, make_loaders
from .loop import evaluate, lr_factor, train
from .models import MODELS, build_model, register_model
from .run import RunSpec, default_run_dir, read_log
from .tasks import TASKS, Task, check_labels, make_task
from .text import CaptionTokenizer

__all__ = [
    "TrainConfig", "TrainResult", "StepRow", "EvalRow", "train", "evaluate", "lr_factor", "check_labels",
    "save_checkpoint", "load_checkpoint", "make_loaders", "eval_config", "register_model", "build_model", "MODELS",
    "TASKS", "Task", "make_task", "RunSpec", "default_run_dir", "read_log", "CaptionTokenizer",
]
