"""``dpo-plugin train`` on the TRL host: data, model, training, saving and the checks, from a parsed request."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...checkpoints import resume_checkpoint
from ...errors import ConfigError
from ...output_folder import check_output_dir
from ...run_lock import holding
from ..base import TrainResult
from .train_args import TrainRequest

logger = logging.getLogger(__name__)


def _model_init_kwargs(request: TrainRequest) -> dict[str, Any]:
    """As ``trl dpo`` does: ModelConfig's loading options, then the config's own model_init_kwargs."""
    model, config = request.model, request.config
    kwargs = {
        "revision": model.model_revision,
        "trust_remote_code": config.trust_remote_code,
        "attn_implementation": model.attn_implementation,
        "dtype": model.dtype,
    }
    kwargs.update(config.model_init_kwargs or {})
    return kwargs


def _apply_model_config_adapter(request: TrainRequest) -> None:
    """TRL ModelConfig's use_peft / lora_* / use_dora / use_rslora / load_in_4bit map onto the adapter recipes."""
    from ...adapter_recipes.recipe import MODEL_CONFIG_ADAPTER_KEYS, adapter_from_model_config

    mapped = adapter_from_model_config(request.model)
    if mapped is None:
        return
    name, params = mapped
    config = request.config
    if config.adapter not in ("none", name) or (config.adapter == "none" and "adapter" in request.explicit):
        raise ConfigError(
            f"ModelConfig's use_peft options mean adapter: {name}, but adapter is {config.adapter!r}; set only one."
        )
    own = config.adapter_params or {}
    for field_name, key in MODEL_CONFIG_ADAPTER_KEYS.items():
        if field_name in request.explicit and key in own and own[key] != params.get(key):
            raise ConfigError(
                f"ModelConfig's {field_name}={params.get(key)!r} contradicts adapter_params.{key}={own[key]!r}; "
                "set only one."
            )
    config.adapter = name
    config.adapter_params = {**params, **own}


def load_datasets(request: TrainRequest) -> tuple[Any, Any]:
    """Train and eval splits from ``dataset_name`` (hub or local file/folder) or TRL's dataset mixture."""
    from ...preference_data import load_preference_data, train_eval_splits

    script = request.script
    if request.mixture.datasets:
        from trl import get_dataset

        dataset = get_dataset(request.mixture)
    else:
        dataset = load_preference_data(
            script.dataset_name, config=script.dataset_config, streaming=script.dataset_streaming
        )
    return train_eval_splits(dataset, script.dataset_train_split, script.dataset_test_split)


def run_training(request: TrainRequest) -> TrainResult:
    """Load data and model, train, save, and run the requested post-training checks; the output folder is locked
    from the start (one run per folder) and checked before anything loads."""
    with holding(request.config.output_dir):
        return _run_training(request)


def _run_training(request: TrainRequest) -> TrainResult:
    from ...demo.smollm import resolve_model_name
    from .trainer import DPOTrainer

    config = request.config
    checkpoint = resume_checkpoint(config.resume_from_checkpoint, config.output_dir)
    check_output_dir(config.output_dir, resuming=checkpoint is not None, reuse=config.reuse_output_dir, strict=True)
    _apply_model_config_adapter(request)
    config.model_init_kwargs = _model_init_kwargs(request)
    config.resume_from_checkpoint = checkpoint  # the trainer compares it with this run before the model loads
    train, evaluation = load_datasets(request)
    model = resolve_model_name(request.model.model_name_or_path)
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation)
    script = request.script
    if script.dataset_name and evaluation is not None:
        trainer.session.eval_data = (script.dataset_name, script.dataset_test_split)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.session.save_final()  # (already saved before the checks, when there were checks)
    return TrainResult(
        Path(config.output_dir),
        dict(result.metrics),
        trainer.check_report,
        main_process=trainer.is_world_process_zero(),
        strict_checks=config.strict_checks,
    )
