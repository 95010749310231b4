"""Training on packed batches: config, loop, checkpoints and the model registry (torch)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainResult
from .loaders import make_loaders
from .loop import check_labels, evaluate, lr_factor, train
from .models import MODELS, build_model, register_model

__all__ = [
    "TrainConfig", "TrainResult", "train", "evaluate", "lr_factor", "check_labels", "save_checkpoint", "load_checkpoint",
    "make_loaders", "register_model", "build_model", "MODELS",
]
