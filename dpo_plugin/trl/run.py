"""``dpo-plugin train``: one YAML with every key ``trl dpo --config`` accepts plus the plugin fields.

Command-line flags override the file. An unknown key or a value of the wrong type is a
:class:`ConfigError` before anything loads (``trl dpo`` drops unknown keys silently, and argparse
does not convert YAML values). Relative paths for the model, the reference and the data are
resolved against the YAML file's folder when they exist there.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DpoPluginError
from .config import DPOConfig, explicit_fields

logger = logging.getLogger(__name__)

PATH_KEYS = ("model_name_or_path", "dataset_name")


@dataclass
class TrainRequest:
    """The parsed command: TRL's script, training, model and dataset-mixture arguments."""

    script: Any
    config: DPOConfig
    model: Any
    mixture: Any


def _dataclass_types() -> tuple[type, ...]:
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

    return (ScriptArguments, DPOConfig, ModelConfig, DatasetMixtureConfig)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a dataclass field's annotation (strings are also accepted where argparse converts them)."""
    if annotation is Any or annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        if not isinstance(value, list):  # a single value for a list field (e.g. `loss_type: sigmoid`)
            return _matches(value, item)
        return all(_matches(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))
        if issubclass(annotation, enum.Enum):
            return value in {member.value for member in annotation} or isinstance(value, annotation)
        if annotation in (int, float):
            if isinstance(value, bool):
                return False
            if isinstance(value, str):
                try:
                    annotation(value)
                except ValueError:
                    return False
                return True
            return isinstance(value, int) or (annotation is float and isinstance(value, float))
        if annotation is str:
            return isinstance(value, str)
        if dataclasses.is_dataclass(annotation):
            return isinstance(value, dict)
    return True


def _field_types() -> dict[str, tuple[type, Any]]:
    owners: dict[str, tuple[type, Any]] = {}
    for cls in _dataclass_types():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                owners.setdefault(f.name, (cls, hints.get(f.name, Any)))
    return owners


def check_yaml(values: dict[str, Any], source: str) -> None:
    """Unknown keys (with the closest known key) and values of the wrong type are ConfigErrors."""
    owners = _field_types()
    for key, value in values.items():
        if key == "env":
            continue
        if key not in owners:
            close = difflib.get_close_matches(key, list(owners), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown key {key!r} in {source}.{hint} Keys are TRL's ScriptArguments, DPOConfig, ModelConfig and "
                "DatasetMixtureConfig fields plus the plugin fields (see docs/configuration.md)."
            )
        cls, annotation = owners[key]
        if not _matches(value, annotation):
            shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            raise ConfigError(
                f"{key} in {source} must be {shown} ({cls.__name__} field), got {value!r} ({type(value).__name__})."
            )


def flag_names(argv: list[str]) -> set[str]:
    """The option names in ``argv`` (``--max-steps=3`` → ``max_steps``)."""
    return {arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}


def _resolve_relative(values: dict[str, Any], folder: Path) -> None:
    for key in PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and not os.path.isabs(value) and (folder / value).exists():
            values[key] = str((folder / value).resolve())
    ref = values.get("reference_params")
    if isinstance(ref, dict) and isinstance(ref.get("model"), str) and (folder / ref["model"]).exists():
        ref["model"] = str((folder / ref["model"]).resolve())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must contain a YAML mapping of keys to values.")
    return values


def parse_train_args(argv: list[str]) -> TrainRequest:
    """Parse ``--config FILE.yaml [--key value ...]`` into TRL's dataclasses, validating before anything loads.

    As TrlParser does: the YAML's values become the parser's defaults (its ``env`` mapping sets
    environment variables) and the flags override them.
    """
    from trl import TrlParser

    argv = list(argv)
    values: dict[str, Any] = {}
    source = "the command line"
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file path.")
        path = Path(argv[index + 1])
        del argv[index : index + 2]
        values = _read_yaml(path)
        source = str(path)
        check_yaml(values, source)
        _resolve_relative(values, path.parent)
    env = values.pop("env", None) or {}
    if not isinstance(env, dict):
        raise ConfigError(f"env in {source} must be a mapping of variable → value.")
    os.environ.update({str(k): str(v) for k, v in env.items()})
    parser = TrlParser(_dataclass_types())
    parser.set_defaults_with_config(**values)
    try:
        with explicit_fields(set(values) | flag_names(argv)):
            script, config, model, mixture = parser.parse_args_into_dataclasses(args=argv)
    except DpoPluginError:
        raise
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    if not model.model_name_or_path:
        raise ConfigError(f"{source}: model_name_or_path is required (a hub id or a local model folder).")
    if not script.dataset_name and not mixture.datasets:
        raise ConfigError(f"{source}: dataset_name (a hub name or a local json/jsonl/parquet file or folder) is required.")
    return TrainRequest(script, config, model, mixture)


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
        if field_name in config.explicit_fields and key in own and own[key] != params.get(key):
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
        getattr(trainer, "check_report", None),
        main_process=trainer.is_world_process_zero(),
    )


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

    The trainer is only the scaffolding that tokenises the pairs and scores them exactly as
    training would; no step is taken.
    """
    import torch

    from ..data import load_preference_data
    from ..smollm import resolve_model_name
    from .trainer import DPOTrainer

    model, reference = resolve_model_name(model), reference and resolve_model_name(reference)
    held_out = load_preference_data(data, split=split)
    with_reference = (
        {"reference": "path", "reference_params": {"model": reference}, "beta": beta, "loss_type": ["sigmoid"]}
        if reference
        else {"reference": "none", "loss_type": ["sft"]}
    )
    config = DPOConfig(
        output_dir=output_dir,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        report_to="none",
        checks=checks,
        check_params=check_params,
        judge=judge,
        judge_params=judge_params,
        max_length=max_length,
        per_device_eval_batch_size=batch_size,
        per_device_train_batch_size=batch_size,
        **with_reference,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=held_out, eval_dataset=held_out)
    return trainer.run_checks()
