"""Orchestration: ``dpo-plugin train`` (data, model, training, checks) and ``dpo-plugin evaluate`` (checks only).

``evaluate`` runs the post-training checks on saved models without building a trainer: the
held-out split is tokenised and scored exactly as training would (:func:`~dpo_plugin.trl.forward.pair_scorer`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .train_args import TrainRequest

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    output_dir: Path
    metrics: dict[str, Any]
    report: dict[str, Any] | None
    main_process: bool = True


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
    from ..adapter_recipes.recipe import MODEL_CONFIG_ADAPTER_KEYS, adapter_from_model_config

    mapped = adapter_from_model_config(request.model)
    if mapped is None:
        return
    name, params = mapped
    config = request.config
    if config.adapter not in ("none", name):
        raise ConfigError(
            f"ModelConfig's use_peft options mean adapter: {name}, but adapter is {config.adapter!r}; set only one."
        )
    own = config.adapter_params or {}
    for field_name, key in MODEL_CONFIG_ADAPTER_KEYS.items():
        if field_name in request.explicit and key in own and own[key] != params.get(key):
            raise ConfigError(
                f"ModelConfig's {field_name}={params.get(key)!r} contradicts adapter_params.{key}={own[key]!r}; set only one."
            )
    config.adapter = name
    config.adapter_params = {**params, **own}


def load_datasets(request: TrainRequest) -> tuple[Any, Any]:
    """Train and eval splits from ``dataset_name`` (hub or local file/folder) or TRL's dataset mixture."""
    from ..data import load_preference_data, train_eval_splits

    script = request.script
    if request.mixture.datasets:
        from trl import get_dataset

        dataset = get_dataset(request.mixture)
    else:
        dataset = load_preference_data(script.dataset_name, config=script.dataset_config, streaming=script.dataset_streaming)
    return train_eval_splits(dataset, script.dataset_train_split, script.dataset_test_split)


EARLIER_RUN_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "trainer_state.json",
    "eval/report.json",
)


def refuse_earlier_run(output_dir: str | os.PathLike[str]) -> None:
    """A ConfigError when ``output_dir`` holds a saved model or report of an earlier run (training would overwrite it)."""
    folder = Path(output_dir)
    found = [name for name in EARLIER_RUN_FILES if (folder / name).is_file()]
    if found:
        raise ConfigError(
            f"output_dir {str(folder)!r} already holds an earlier run ({', '.join(found)}), which training would "
            "overwrite. Choose another --output_dir (--output-dir for demo), remove that folder, or continue it "
            "with --resume_from_checkpoint."
        )


def run_training(request: TrainRequest) -> TrainResult:
    """Load data and model, train, save, and run the requested post-training checks."""
    from ..smollm import resolve_model_name
    from .trainer import DPOTrainer

    config = request.config
    if not config.resume_from_checkpoint:
        refuse_earlier_run(config.output_dir)
    _apply_model_config_adapter(request)
    config.model_init_kwargs = _model_init_kwargs(request)
    train, evaluation = load_datasets(request)
    model = resolve_model_name(request.model.model_name_or_path)
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation)
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    trainer.state.save_to_json(str(Path(config.output_dir) / "trainer_state.json"))
    logger.info("Model and training log (trainer_state.json) saved to %s.", config.output_dir)
    return TrainResult(
        Path(config.output_dir),
        dict(result.metrics),
        trainer.check_report,
        main_process=trainer.is_world_process_zero(),
    )


def _load_policy_for_checks(model: str, bf16: bool) -> tuple[Any, Any]:
    """The saved policy and its tokenizer, or a ConfigError naming what could not be loaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16 if bf16 else torch.float32)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot load the model {model!r}: {error}") from None
    return policy, tokenizer


def evaluate_saved_model(
    model: str,
    data: str,
    *,
    reference: str | None = None,
    checks: list[str],
    judge: str | None = None,
    judge_params: dict[str, Any] | None = None,
    check_params: dict[str, Any] | None = None,
    output_dir: str = "dpo-eval",
    split: str = "test",
    beta: float = 0.1,
    max_length: int | None = 1024,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Run the post-training checks on a saved model against a reference, without training.

    Settings, names and data are checked before any model loads; the pairs are tokenised and
    scored as training does (TRL's tokenisation, the fused LM head), with ``beta`` for the rewards.
    """
    import torch

    from ..data import load_preference_data, validate_preference_columns
    from ..evaluation.runner import build_context, build_judge, run_checks, validate_check_params
    from ..plugins import checks as check_registry
    from ..reference.model import PathReference
    from ..reference.none import NoReference
    from ..smollm import resolve_model_name
    from .forward import pair_scorer

    for name in checks:
        check_registry()[name]
    validate_check_params(checks, check_params, judge)
    judge_object = build_judge(judge, judge_params)
    held_out = load_preference_data(data, split=split)
    validate_preference_columns(held_out)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    policy, tokenizer = _load_policy_for_checks(resolve_model_name(model), bf16)
    reference = reference and resolve_model_name(reference)
    strategy = PathReference(model=reference) if reference else NoReference()
    reference_model = strategy.prepare(policy, needs_reference=bool(reference))
    scorer = pair_scorer(policy, tokenizer, {"eval": held_out}, max_length=max_length, batch_size=batch_size, bf16=bf16)
    strategy.setup(scorer, None if reference_model is None else scorer.place(reference_model))
    pairs = scorer.splits()["eval"]
    dropped = None if len(pairs) else f"every pair of the {split} split was dropped at max_length={max_length}"
    context = build_context(scorer, strategy, pairs, judge=judge_object, beta=beta, output_dir=output_dir, no_pairs_note=dropped)
    report, _ = run_checks(context, checks, check_params, output_dir=output_dir, extra={"reference": strategy.describe()})
    return report
