"""Training stage: `Trainer` and the per-method steps."""

from .trainer import Trainer, TrainResult

__all__ = ["Trainer", "TrainResult"]
