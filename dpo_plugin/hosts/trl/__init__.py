"""The TRL host: the drop-in ``DPOConfig`` and ``DPOTrainer``."""

from .config import DPOConfig
from .trainer import DPOTrainer

__all__ = ["DPOConfig", "DPOTrainer"]
