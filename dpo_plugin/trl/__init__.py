"""Host integration with TRL: the drop-in ``DPOConfig`` and ``DPOTrainer``.

The only package that knows TRL's internals, so a TRL upgrade is mended here.
"""

from .config import DPOConfig
from .trainer import DPOTrainer

__all__ = ["DPOConfig", "DPOTrainer"]
