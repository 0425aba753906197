"""Orchestration: ``dpo-plugin train`` (data, model, training, checks) and ``dpo-plugin evaluate`` (checks only).

``evaluate`` runs the post-training checks on saved models without building a trainer: the
held-out split is tokenised and scored exactly as training would (:func:`~dpo_plugin.hosts.trl.forward.pair_scorer`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...output_folder import check_output_dir
from ...guard import resume_checkpoint
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
    from ...adapter_recipes.recipe import MODEL_CONFIG_ADAPTER_KEYS, adapter_from_model_config

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
    from ...preference_data import load_preference_data, train_eval_splits

    script = request.script
    if request.mixture.datasets:
        from trl import get_dataset

        dataset = get_dataset(request.mixture)
    else:
        dataset = load_preference_data(script.dataset_name, config=script.dataset_config, streaming=script.dataset_streaming)
    return train_eval_splits(dataset, script.dataset_train_split, script.dataset_test_split)


def run_training(request: TrainRequest) -> TrainResult:
    """Load data and model, train, save, and run the requested post-training checks."""
    from ...demo.smollm import resolve_model_name
    from .trainer import DPOTrainer

    config = request.config
    checkpoint = resume_checkpoint(config.resume_from_checkpoint, config.output_dir)
    check_output_dir(config.output_dir, resuming=checkpoint is not None, reuse=config.reuse_output_dir, strict=True)
    _apply_model_config_adapter(request)
    config.model_init_kwargs = _model_init_kwargs(request)
    train, evaluation = load_datasets(request)
    model = resolve_model_name(request.model.model_name_or_path)
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    trainer.state.save_to_json(str(Path(config.output_dir) / "trainer_state.json"))
    trainer.record_outputs()
    logger.info("Model and training log (trainer_state.json) saved to %s.", config.output_dir)
    return TrainResult(
        Path(config.output_dir),
        dict(result.metrics),
        trainer.check_report,
        main_process=trainer.is_world_process_zero(),
    )


@dataclass
class SavedPolicy:
    """A policy loaded for the checks: the model, its tokenizer, and for an adapter folder the base it applies to."""

    model: Any
    tokenizer: Any
    base: str | None = None


def load_saved_policy(source: str, *, base: str | None = None, bf16: bool = False) -> SavedPolicy:
    """A model folder, a PEFT adapter folder (on its base: ``base``, else the one in ``adapter_config.json``), or a hub id.

    The tokenizer comes from the folder when it has one (training saves it there), else from the base.
    Anything that cannot be loaded is a ConfigError saying what and how to fix it.
    """
    import torch

    from ...demo.smollm import resolve_model_name

    folder = Path(source).expanduser()
    adapter_config = folder / "adapter_config.json"
    dtype = torch.bfloat16 if bf16 else torch.float32
    if not adapter_config.is_file():
        if base is not None:
            raise ConfigError(f"--base applies to a PEFT adapter folder, but {source!r} holds no adapter_config.json.")
        tokenizer, model = _load_pretrained(source, source, dtype)
        return SavedPolicy(model, tokenizer)
    base = base or _adapter_base(adapter_config)
    base = resolve_model_name(base)
    tokenizer_source = source if (folder / "tokenizer_config.json").is_file() else base
    tokenizer, model = _load_pretrained(base, tokenizer_source, dtype)
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"Cannot apply the adapter {source!r} to its base {base!r}: {error}") from None
    return SavedPolicy(model, tokenizer, base)


def _adapter_base(adapter_config: Path) -> str:
    import json

    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter_config} names no base model: pass it with --base (a model folder or hub id).")
    if (base.startswith((".", "/", "~")) or base.count("/") > 1) and not Path(base).expanduser().exists():
        raise ConfigError(
            f"The adapter's base model {base!r} (from {adapter_config}) does not exist here: pass it with --base."
        )
    return base


def _load_pretrained(model: str, tokenizer: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded_tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return loaded_tokenizer, AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot load the model {model!r}: {error}") from None


def evaluate_saved_model(
    model: str,
    data: str,
    *,
    base: str | None = None,
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

    ``model``: a model folder, a PEFT adapter folder (applied to ``base``, default: the base its
    ``adapter_config.json`` names) or a hub id. ``reference``: a model folder or hub id; default,
    for an adapter, its base (the policy with the adapter disabled), else none (the checks that need
    one are skipped). Names, settings and data are checked before any model loads; the pairs are
    tokenised and scored as training does (TRL's tokenisation, the fused LM head), with ``beta``.
    """
    import torch

    from ...preference_data import load_preference_data, validate_preference_columns
    from ...evaluation.runner import build_context, run_checks
    from ...demo.smollm import resolve_model_name
    from .forward import pair_scorer

    judge_object = _checks_plan(checks, check_params, judge, judge_params)
    held_out = load_preference_data(data, split=split)
    validate_preference_columns(held_out)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    policy = load_saved_policy(resolve_model_name(model), base=base, bf16=bf16)
    strategy = _reference_for(policy, reference and resolve_model_name(reference))
    reference_model = strategy.prepare(policy.model, peft=policy.base is not None, needs_reference=strategy.provides_logps)
    # the model loaded is the trained one (not reloadable as its own reference)
    scorer = pair_scorer(policy.model, policy.tokenizer, {"eval": held_out}, max_length=max_length, batch_size=batch_size, bf16=bf16, reloadable=False)
    strategy.setup(scorer, None if reference_model is None else scorer.place(reference_model))
    pairs = scorer.splits()["eval"]
    dropped = None if len(pairs) else f"every pair of the {split} split was dropped at max_length={max_length}"
    context = build_context(scorer, strategy, pairs, judge=judge_object, beta=beta, output_dir=output_dir, no_pairs_note=dropped)
    evaluated = {"model": model, "base": policy.base, "reference": reference or policy.base, "data": data, "split": split,
                 "judge": judge, "beta": beta, "max_length": max_length}  # fmt: skip
    extra = {"evaluated": evaluated, "reference": strategy.describe()}
    report, _ = run_checks(context, checks, check_params, output_dir=output_dir, extra=extra)
    return report


def _checks_plan(checks: list[str], params: dict[str, Any] | None, judge: str | None, judge_params: Any) -> Any:
    """Check the names and settings of the checks and build the judge (None without one), before anything loads."""
    from ...evaluation.runner import build_judge, validate_check_params
    from ...plugins import checks as check_registry

    for name in checks:
        check_registry()[name]
    validate_check_params(checks, params, judge)
    return build_judge(judge, judge_params)


def _reference_for(policy: SavedPolicy, reference: str | None) -> Any:
    """The checks' reference: the model named, else an adapter's base (the adapter disabled), else none."""
    from ...reference.adapter import AdapterReference
    from ...reference.model import PathReference
    from ...reference.none import NoReference

    if reference is not None and reference != policy.base:
        return PathReference(model=reference)
    return AdapterReference() if policy.base is not None else NoReference()
