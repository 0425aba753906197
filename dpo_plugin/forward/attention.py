"""The attention that reads packed rows, registered with transformers as :data:`ATTENTION`.

With a :class:`~.packing.SegmentPlan` in its keywords, each segment of the row is computed as a
causal sequence over its own keys by the plan's kernel (:mod:`.segment_kernels`: SDPA by length
buckets, varlen flash attention or flex_attention), so no token attends across segments and no
dense ``[T, T]`` mask is ever built. Without a plan it is plain SDPA, so generation and padded
batches are unchanged. :func:`support` says whether a model can take it.

transformers' private names read here (``tests/test_boundaries.py`` lists them):
``PretrainedConfig._attn_implementation`` (which attention a model runs, read to switch it to the
segment attention and to check that the switch took) and ``PreTrainedModel._supports_attention_backend``
(whether a model class calls registered attention functions at all; Falcon and StableLM do not).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ..errors import ConfigError
from .engine import per_model
from .packing import PLAN, SegmentPlan
from .segment_kernels import attend

#: The attention implementation name models run packed batches with (plain SDPA without a plan).
ATTENTION = "dpo_plugin_segments"


def segment_attention(
    module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[Tensor, None]:
    """Attention per segment of the packed row (the plan in ``kwargs``), or plain SDPA without one."""
    plan: SegmentPlan | None = kwargs.pop(PLAN, None)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    for option in ("sliding_window", "softcap"):
        if kwargs.get(option) is not None:
            raise NotImplementedError(f"packed DPO batches do not support attention with {option}; use packing: none")
    return attend(module, query, key, value, plan, **kwargs), None


AttentionInterface.register(ATTENTION, segment_attention)
AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@per_model
def _language_model(model: Any) -> Any:
    from accelerate.utils import extract_model_from_parallel, is_peft_model

    model = extract_model_from_parallel(model)
    return model.get_base_model() if is_peft_model(model) else model


def use_segment_attention(model: Any) -> None:
    """Switch ``model`` (wrapped or not) to :data:`ATTENTION`; a ConfigError when it cannot take packed rows."""
    base = _language_model(model)
    if getattr(base.config, "_attn_implementation", None) == ATTENTION:
        return
    reason = support(base)
    if reason is None:
        base.set_attn_implementation(ATTENTION)
        if getattr(base.config, "_attn_implementation", None) != ATTENTION:
            reason = "it did not take the segment attention (transformers kept its own)"
    if reason is not None:
        raise ConfigError(
            f"A packed batch reached {type(base).__name__}, which cannot take one: {reason}. Use packing: none."
        )


def support(model: Any) -> str | None:
    """Why ``model`` cannot run packed batches (None when it can): the attention, window, experts or adapter type."""
    model = _language_model(model)
    config = model.config.get_text_config()
    implementation = getattr(model.config, "_attn_implementation", None)
    if not getattr(type(model), "_supports_attention_backend", False):
        return f"{type(model).__name__} runs its own attention code, not a registered attention function"
    if implementation not in ("sdpa", ATTENTION):
        return f"its attention implementation is {implementation!r}; packing runs SDPA per segment (use sdpa)"
    sliding = getattr(config, "use_sliding_window", False)
    if sliding or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "it uses sliding-window attention"
    if hasattr(config, "output_router_logits"):
        return "it is a mixture of experts (the router's load-balancing loss needs the padded layout)"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "it soft-caps its attention logits"
    return None
