"""The arguments of ``dpo-plugin train``: one YAML with every key ``trl dpo --config`` accepts plus the plugin fields.

Command-line flags override the file. An unknown key or a value of the wrong type is a
:class:`ConfigError` before anything loads (``trl dpo`` drops unknown keys silently, and argparse
does not convert YAML values). Relative paths for the model, the reference and the data are
resolved against the YAML file's folder when they exist there. The ``DPOConfig`` is built from the
keys the user gave only, so that it knows which fields were set (a loss's own defaults apply to
the others).
"""

from __future__ import annotations

import argparse
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

from ...errors import ConfigError, DpoPluginError
from ...yaml_file import read_yaml_mapping
from ..base import flag_names
from .config import DPOConfig

logger = logging.getLogger(__name__)

PATH_KEYS = ("model_name_or_path", "dataset_name")
#: Fields whose ``true`` means something (resume from the newest intact checkpoint).
ACCEPTS_BOOL = {"resume_from_checkpoint"}
#: Keys that transformers 5 renamed or removed (TRL's examples and older configs still use them) → what to write.
REPLACED_KEYS = {
    "torch_dtype": "transformers 5 renamed it dtype (same values: auto, bfloat16, float16, float32)",
    "warmup_ratio": "transformers 5 removed it; give the ratio to warmup_steps, which reads a value below 1 as a "
    "fraction of the training steps (warmup_steps: 0.1)",
    "logging_dir": "transformers 5 removed it; TensorBoard writes to the folder named by the environment variable "
    "TENSORBOARD_LOGGING_DIR (in the YAML: env: {TENSORBOARD_LOGGING_DIR: <folder>})",
    "overwrite_output_dir": "transformers 5 removed it; reuse_output_dir: true lets a run write into a folder that "
    "holds other files (dpo-plugin never overwrites or deletes them)",
    "evaluation_strategy": "transformers renamed it eval_strategy; the old name is gone in transformers 5",
    "no_cuda": "gone in transformers 5; use use_cpu: true",
    "per_gpu_train_batch_size": "gone in transformers 5; use per_device_train_batch_size",
    "per_gpu_eval_batch_size": "gone in transformers 5; use per_device_eval_batch_size",
    "include_inputs_for_metrics": "gone in transformers 5; use include_for_metrics: [inputs]",
}
EMPTY_CONFIG_HINT = (
    "Write the settings as key: value lines, at least model_name_or_path, dataset_name and output_dir "
    "(see docs/configuration.md)."
)


@dataclass
class TrainRequest:
    """The parsed command: TRL's script, training, model and dataset-mixture arguments, and the keys given."""

    script: Any
    config: DPOConfig
    model: Any
    mixture: Any
    explicit: frozenset[str] = frozenset()


def _dataclass_types() -> tuple[type, ...]:
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

    return (ScriptArguments, DPOConfig, ModelConfig, DatasetMixtureConfig)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a dataclass field's annotation
    (strings are also accepted where argparse converts them)."""
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


def unknown_key(key: str, source: str, known: list[str]) -> ConfigError:
    """The error for a key that is no field: what replaced it (:data:`REPLACED_KEYS`), else the closest field."""
    if key in REPLACED_KEYS:
        return ConfigError(f"Unknown key {key!r} in {source}: {REPLACED_KEYS[key]}.")
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"Unknown key {key!r} in {source}.{hint} Keys are TRL's ScriptArguments, DPOConfig, ModelConfig and "
        "DatasetMixtureConfig fields plus the plugin fields (see docs/configuration.md)."
    )


def check_yaml(values: dict[str, Any], source: str) -> None:
    """Unknown keys (with the closest known key) and values of the wrong type are ConfigErrors."""
    owners = _field_types()
    for key, value in values.items():
        if key in ("env", "host"):  # environment variables; the host (dpo-plugin train read it)
            continue
        if key not in owners:
            raise unknown_key(key, source, list(owners))
        cls, annotation = owners[key]
        if key in ACCEPTS_BOOL and isinstance(value, bool):
            continue
        if not _matches(value, annotation):
            shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            quote = (
                f" YAML reads an unquoted yes, no, on or off as a boolean: quote the word you meant ({key}: 'no')."
                if isinstance(value, bool) and _matches("no", annotation)
                else ""
            )
            raise ConfigError(
                f"{key} in {source} must be {shown} ({cls.__name__} field), "
                f"got {value!r} ({type(value).__name__}).{quote}"
            )


def _resolve_relative(values: dict[str, Any], folder: Path) -> None:
    for key in PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and not os.path.isabs(value) and (folder / value).exists():
            values[key] = str((folder / value).resolve())
    ref = values.get("reference_params")
    if isinstance(ref, dict) and isinstance(ref.get("model"), str) and (folder / ref["model"]).exists():
        ref["model"] = str((folder / ref["model"]).resolve())


def _bare_resume(argv: list[str]) -> list[str]:
    """``--resume_from_checkpoint`` without a value means ``true`` (the newest intact checkpoint)."""
    for flag in ("--resume_from_checkpoint", "--resume-from-checkpoint"):
        if flag in argv:
            index = argv.index(flag)
            if index + 1 == len(argv) or argv[index + 1].startswith("--"):
                argv.insert(index + 1, "true")
    return argv


def _build(namespace: Any, explicit: set[str]) -> list[Any]:
    """Each dataclass from the parsed values; the ``DPOConfig`` from the keys the user gave only."""
    built = []
    for cls in _dataclass_types():
        keys = {f.name for f in dataclasses.fields(cls) if f.init}
        values = {k: v for k, v in vars(namespace).items() if k in keys}
        if cls is DPOConfig:
            values = {k: v for k, v in values.items() if k in explicit}
        built.append(cls(**values))
    return built


def _config_file(argv: list[str]) -> tuple[dict[str, Any], str]:
    """The checked values of the ``--config`` YAML (removed from ``argv``) and the file's name; none without one."""
    if "--config" not in argv:
        return {}, "the command line"
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise ConfigError("--config needs a YAML file path.")
    path = Path(argv[index + 1])
    del argv[index : index + 2]
    values = read_yaml_mapping(path, empty_hint=EMPTY_CONFIG_HINT)
    check_yaml(values, str(path))
    _resolve_relative(values, path.parent)
    return values, str(path)


def _apply_env(values: dict[str, Any], source: str) -> None:
    """The YAML's ``env`` mapping (removed from ``values``) set as environment variables, as TrlParser does."""
    values.pop("host", None)
    env = values.pop("env", None) or {}
    if not isinstance(env, dict):
        raise ConfigError(f"env in {source} must be a mapping of variable → value.")
    for name, value in env.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"env.{name} in {source} must be a string or a number, got a {type(value).__name__}.")
    os.environ.update({str(k): str(v) for k, v in env.items()})


def parse_train_args(argv: list[str]) -> TrainRequest:
    """Parse ``--config FILE.yaml [--key value ...]`` into TRL's dataclasses, validating before anything loads.

    As TrlParser does: the YAML's values become the parser's defaults (its ``env`` mapping sets
    environment variables) and the flags override them.
    """
    from trl import TrlParser

    argv = _bare_resume(list(argv))
    values, source = _config_file(argv)
    _apply_env(values, source)
    parser = TrlParser(_dataclass_types(), exit_on_error=False, allow_abbrev=False)  # no prefix matching of flags
    parser.set_defaults_with_config(**values)
    flags = flag_names(argv)
    explicit = set(values) | flags
    both = f"{source} with the command-line flags" if flags and values else source if values else "the command line"
    try:
        namespace, unused = parser.parse_known_args(args=argv)
        if unused:
            flag = next((arg for arg in unused if arg.startswith("-")), unused[0])
            raise unknown_key(flag.lstrip("-").split("=", 1)[0], "the command line", list(_field_types()))
        script, config, model, mixture = _build(namespace, explicit)
    except DpoPluginError:
        raise
    except argparse.ArgumentError as error:
        raise ConfigError(f"the command line: {error}.") from None
    except ValueError as error:
        raise ConfigError(f"{both}: {error}") from None
    if not model.model_name_or_path:
        raise ConfigError(f"{both}: model_name_or_path is required (a hub id or a local model folder).")
    if not script.dataset_name and not mixture.datasets:
        raise ConfigError(
            f"{both}: dataset_name (a hub name or a local json/jsonl/parquet file or folder) is required."
        )
    return TrainRequest(script, config, model, mixture, frozenset(explicit))
