"""``DPOTrainer``: TRL's trainer running a :class:`~dpo_plugin.session.DPOSession`.

Same constructor as TRL's. The session resolves the losses, reference strategy and adapter through
the registries before TRL's ``__init__`` runs (TRL is handed a ready ``ref_model``, or none, so it
never reloads one from disk); each step goes through the session (:class:`~.internals.SessionHooks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import datasets
import trl
from accelerate.utils import is_peft_model
from transformers import TrainerCallback

from ...session import Connection, DPOSession
from .config import DPOConfig
from .internals import (
    TRL_DEFAULTS,
    SessionHooks,
    TrlBackend,
    forward_settings,
    held_reference,
    load_policy,
    loss_request,
    strip_fused_head,
    tell_trl,
    trl_init_view,
)


def plugin_config(args: Any, model: Any) -> DPOConfig:
    """``args`` as a plugin :class:`DPOConfig` (a plain TRL config is converted; None gives TRL's default)."""
    if isinstance(args, DPOConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "name_or_path", "") or "model"
        return DPOConfig(output_dir=f"{name.split('/')[-1]}-DPO")
    if isinstance(args, trl.DPOConfig):
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(trl.DPOConfig) if f.init}
        return DPOConfig(**{k: v for k, v in values.items() if v != TRL_DEFAULTS[k]})
    raise TypeError(f"args must be a dpo_plugin.trl.DPOConfig (or TRL's DPOConfig), got {type(args).__name__}.")


def packing_obstacle(
    args: DPOConfig, model: Any, peft_config: Any, collator: Any, processor: Any, train: Any, compute_metrics: Any
) -> str | None:
    """Why this run cannot take a packed layout, whatever the model (None when nothing stands in the way)."""
    from transformers import ProcessorMixin

    prompt_learning = getattr(peft_config, "is_prompt_learning", False) or (
        is_peft_model(model) and model.active_peft_config.is_prompt_learning
    )
    columns = set(getattr(train, "column_names", None) or ())
    obstacles = {
        "a data_collator was passed, and it decides the layout": collator is not None,
        "a prompt-learning PEFT adapter prepends virtual tokens": prompt_learning,
        "vision-language data is collated by TRL's vision collator": isinstance(processor, ProcessorMixin)
        or bool({"image", "images"} & columns),
        "torch_compile would recompile for every packed row": bool(args.torch_compile),
        "compute_metrics expects TRL's padded rows": compute_metrics is not None,
        "a streaming dataset on several processes is gathered as padded batches": isinstance(
            train, datasets.IterableDataset
        )
        and args.world_size > 1,
    }
    return next((reason for reason, present in obstacles.items() if present), None)


class DPOTrainer(SessionHooks, trl.DPOTrainer):
    """Drop-in for TRL's ``DPOTrainer``: same constructor; losses, reference and adapter come from the registries."""

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: DPOConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
    ):
        args = plugin_config(args, model)
        backend = TrlBackend()
        session = DPOSession(args, loss_request(args, args.explicit_fields), backend, output_dir=args.output_dir)
        self.session = session
        session.check_data(train_dataset, eval_dataset)
        loaded_here = isinstance(model, str)
        if isinstance(model, str):
            model = load_policy(model, args, session.pre_load, quantization_config)
        else:
            strip_fused_head(model)  # patched by an earlier trainer: a copy of it would still run the original
        peft_config, rewrites = session.adapter_config(model, peft_config)
        peft = peft_config is not None or is_peft_model(model)
        run = session.run_facts(peft=peft, base_weights_change=rewrites, args=args, train_dataset=train_dataset)
        trl_ref_model = session.prepare_reference(model, ref_model, run)
        blocked = packing_obstacle(
            args, model, peft_config, data_collator, processing_class, train_dataset, compute_metrics
        )
        connection = Connection(forward_settings(args), lambda: held_reference(self), blocked, args.pad_to_multiple_of)
        session.connect(self, connection)
        precompute = session.reference_strategy.precomputes or (trl_ref_model is None and not peft)
        with trl_init_view(args, precompute=precompute, loaded_here=loaded_here):
            super().__init__(
                model,
                ref_model=trl_ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        tell_trl(self, session)
        session.attach(base_weights_change=rewrites)
