"""QLoRA: LoRA adapters on a base model quantized to 4-bit NF4 (CUDA and bitsandbytes only)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .lora import LoRA

if TYPE_CHECKING:
    from peft import LoraConfig


class QLoRA(LoRA):
    """QLoRA: LoRA on a base quantized to 4-bit NormalFloat, bf16 compute (Dettmers et al. 2023, arXiv:2305.14314).

    The base loads through bitsandbytes with NF4 weights, double quantization (the quantization
    constants quantized too) and bfloat16 compute; the adapters train in full precision.
    """

    def pre_load(self, params: Mapping[str, Any], model_init_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check the params, CUDA and bitsandbytes, then add the 4-bit ``quantization_config``; no model loads here."""
        import torch

        self.resolve_params(params)
        if not torch.cuda.is_available():
            raise ConfigError(
                "adapter: qlora needs a CUDA GPU (bitsandbytes' 4-bit kernels) and this machine has none; "
                "use adapter: lora here."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("adapter: qlora needs bitsandbytes, which is not installed: pip install bitsandbytes.")
        if "quantization_config" in model_init_kwargs:
            raise ConfigError(
                "adapter: qlora sets the 4-bit quantization itself; remove the quantization_config given."
            )
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        return {**model_init_kwargs, "quantization_config": quantization}

    def peft_config(self, model: Any, params: Mapping[str, Any]) -> LoraConfig:
        """LoRA's config, for a model that :meth:`pre_load`'s quantization loaded in 4 bits."""
        if not getattr(model, "is_loaded_in_4bit", False):
            raise ConfigError(
                "adapter: qlora needs the model loaded in 4 bits: give the trainer a model path or hub id, so it loads "
                "the model with qlora's quantization; an already-loaded full-precision model cannot be quantized here."
            )
        return super().peft_config(model, params)
