"""The arguments of ``dpo-plugin train``: one YAML with every key ``trl dpo --config`` accepts plus the plugin fields.

Command-line flags override the file. An unknown key or a value of the wrong type is a
:class:`ConfigError` before anything loads (``trl dpo`` drops unknown keys silently, and argparse
does not convert YAML values). Relative paths for the model, the reference and the data are
resolved against the YAML file's folder when they exist there. The ``DPOConfig`` is built from the
keys the user gave only, so that it knows which fields were set (a loss's own defaults apply to
the others).
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
from .config import DPOConfig

logger = logging.getLogger(__name__)

PATH_KEYS = ("model_name_or_path", "dataset_name")
#: Fields whose ``true`` means something (resume from the newest intact checkpoint).
ACCEPTS_BOOL = {"resume_from_checkpoint"}


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


def unknown_key(key: str, source: str, known: list[str]) -> ConfigError:
    """The error for a key that is no field, with the closest field."""
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
        if key == "env":
            continue
        if key not in owners:
            raise unknown_key(key, source, list(owners))
        cls, annotation = owners[key]
        if key in ACCEPTS_BOOL and isinstance(value, bool):
            continue
        if not _matches(value, annotation):
            shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            raise ConfigError(
                f"{key} in {source} must be {shown} ({cls.__name__} field), got {value!r} ({type(value).__name__})."
            )


def flag_names(argv: list[str]) -> set[str]:
    """The option names in ``argv`` (``--max-steps=3`` → ``max_steps``; argparse's ``--no_X`` also counts as ``X``)."""
    names = {arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    return names | {name[3:] for name in names if name.startswith("no_")}


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


def parse_train_args(argv: list[str]) -> TrainRequest:
    """Parse ``--config FILE.yaml [--key value ...]`` into TRL's dataclasses, validating before anything loads.

    As TrlParser does: the YAML's values become the parser's defaults (its ``env`` mapping sets
    environment variables) and the flags override them.
    """
    from trl import TrlParser

    argv = _bare_resume(list(argv))
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
    explicit = set(values) | flag_names(argv)
    try:
        namespace, unused = parser.parse_known_args(args=argv)
        if unused:
            flag = next((arg for arg in unused if arg.startswith("-")), unused[0])
            raise unknown_key(flag.lstrip("-").split("=", 1)[0], "the command line", list(_field_types()))
        script, config, model, mixture = _build(namespace, explicit)
    except DpoPluginError:
        raise
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    if not model.model_name_or_path:
        raise ConfigError(f"{source}: model_name_or_path is required (a hub id or a local model folder).")
    if not script.dataset_name and not mixture.datasets:
        raise ConfigError(f"{source}: dataset_name (a hub name or a local json/jsonl/parquet file or folder) is required.")
    return TrainRequest(script, config, model, mixture, frozenset(explicit))
