"""QLoRA: LoRA adapters on a 4-bit NF4-quantized base model (CUDA and bitsandbytes only)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .recipe import LoraRecipe


@dataclass(frozen=True)
class QLoraRecipe(LoraRecipe):
    """LoRA on a base loaded in 4-bit NF4 with double quantization and bf16 compute (Dettmers et al. 2023)."""

    def pre_load(self, params: Mapping[str, Any], model_init_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check CUDA and bitsandbytes, then add the 4-bit quantization config — before any model loads."""
        import torch

        self.validate(params)
        if not torch.cuda.is_available():
            raise ConfigError(
                "adapter: qlora needs a CUDA GPU (bitsandbytes' 4-bit kernels), and this machine has none. "
                "Use adapter: lora on this machine."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("adapter: qlora needs bitsandbytes: pip install bitsandbytes.")
        from transformers import BitsAndBytesConfig

        if "quantization_config" in model_init_kwargs:
            raise ConfigError("adapter: qlora sets the quantization itself; remove quantization_config.")
        return {
            **model_init_kwargs,
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
        }

    def peft_config(self, model: Any, params: Mapping[str, Any]) -> Any:
        if not getattr(model, "is_loaded_in_4bit", False):
            raise ConfigError(
                "adapter: qlora needs the model loaded by the trainer from a path or hub id (so it can quantize it); "
                "an already-loaded model cannot be quantized."
            )
        return super().peft_config(model, params)
