"""The help of ``dpo-plugin train``: short by default (the plugin fields, the registered losses, the most used
TRL keys), every key of TRL's parsers with ``--help-all``."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import textwrap
import types
import typing
from typing import Any

import trl

from ...plugins import losses
from .config import DPOConfig
from .train_args import _dataclass_types, _field_types

USAGE = "dpo-plugin train --config FILE.yaml [--key value …]"
DESCRIPTION = (
    "Train with TRL's DPOTrainer from one YAML file that takes every key of `trl dpo --config` plus the plugin "
    "fields below. A flag --key value overrides the file's key (TRL's underscore spelling; hyphens work too). "
    "An unknown key or a value of the wrong type is an error before anything loads."
)
#: The TRL keys most runs set, each with a one-line help (None: the first sentence of TRL's own help).
COMMON_TRL_KEYS: dict[str, str | None] = {
    "model_name_or_path": "The policy to train: a hub id or a model folder (required).",
    "dataset_name": "Preference data: a hub name, or a local json/jsonl/parquet/csv file or folder (required).",
    "dataset_test_split": "Split for evaluation and the post-training checks.",
    "output_dir": "Where the model, checkpoints and the eval/ report go: an empty folder or this run's own.",
    "loss_type": "One or more of the registered losses below; several are mixed with loss_weights.",
    "loss_weights": "One weight per loss_type entry (default: 1.0 each).",
    "beta": None,
    "learning_rate": None,
    "per_device_train_batch_size": None,
    "gradient_accumulation_steps": None,
    "num_train_epochs": None,
    "max_steps": "Total training steps; a positive value overrides num_train_epochs.",
    "max_length": "Maximum tokens of prompt + completion; longer pairs are truncated.",
    "bf16": "bf16 mixed precision (TRL's default: on); set false on a machine without bf16 support.",
    "logging_steps": None,
    "eval_strategy": None,
    "save_strategy": None,
    "report_to": None,
    "seed": None,
    "resume_from_checkpoint": "A checkpoint folder, or true for the newest intact checkpoint in output_dir.",
    "use_peft": "TRL's LoRA switch (with lora_r, lora_alpha, …): the same as adapter: lora.",
}


def plugin_fields() -> list[dataclasses.Field]:
    """The fields :class:`~dpo_plugin.trl.DPOConfig` adds to TRL's, in declaration order."""
    own = {f.name for f in dataclasses.fields(trl.DPOConfig)}
    return [f for f in dataclasses.fields(DPOConfig) if f.init and f.name not in own]


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (its factory called), or None when it has none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _metavar(annotation: Any) -> str:
    """How a value is written on the command line: JSON for mappings, NAME … for lists, else by type."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = [a for a in (typing.get_args(annotation) if union else (annotation,)) if a is not type(None)]
    if any(a is dict or typing.get_origin(a) is dict for a in members):
        return "JSON"
    lists = [a for a in members if typing.get_origin(a) is list]
    if lists:
        return "X [X …]" if typing.get_args(lists[0]) == (float,) else "NAME [NAME …]"
    names = {bool: "true|false", int: "N", float: "X"}
    return next((names[a] for a in members if a in names), "VALUE")


def _field(name: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field ``dpo-plugin train`` reads a key into, and its annotation."""
    cls, annotation = _field_types()[name]
    return next(f for f in dataclasses.fields(cls) if f.name == name), annotation


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _shown(value: Any) -> str:
    """A default as YAML writes it: true/false, a one-item list as its item."""
    if isinstance(value, bool):
        return str(value).lower()
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _add(group: Any, f: dataclasses.Field, annotation: Any, text: str) -> None:
    default = field_default(f)
    shown = f" (default: {_shown(default)})" if default not in (None, "", [], {}) else ""
    group.add_argument(f"--{f.name}", metavar=_metavar(annotation), help=text + shown)


def _epilog(width: int, *, full: bool) -> str:
    """The registered losses, and where the other keys are."""
    paragraphs = [
        f"Registered losses (loss_type; `dpo-plugin losses` shows their parameters): {', '.join(losses())}",
        "The keys above are every key `trl dpo` takes, plus the plugin fields."
        if full
        else "--help-all lists every key: TRL's ScriptArguments, DPOConfig, ModelConfig and DatasetMixtureConfig "
        "fields, with TRL's help.",
    ]
    return "\n\n".join(textwrap.fill(paragraph, width=width) for paragraph in paragraphs)


def _formatter(prog: str) -> argparse.HelpFormatter:
    """The epilog as written (its paragraphs are wrapped here), the helps from column 30."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def train_help(*, full: bool = False) -> str:
    """The text of ``dpo-plugin train --help`` (``full``: ``--help-all``, TRL's parser with every key)."""
    width = shutil.get_terminal_size().columns - 2  # as argparse wraps
    kwargs = {
        "prog": "dpo-plugin train",
        "usage": USAGE,
        "epilog": _epilog(width, full=full),
        "add_help": False,
        "description": textwrap.fill(DESCRIPTION, width=width),
        "formatter_class": _formatter,
    }
    if full:
        from trl import TrlParser

        return TrlParser(_dataclass_types(), **kwargs).format_help()
    parser = argparse.ArgumentParser(**kwargs)
    group = parser.add_argument_group("plugin fields (dpo_plugin.trl.DPOConfig)")
    for f in plugin_fields():
        _add(group, f, _field(f.name)[1], f.metadata.get("help", ""))
    group = parser.add_argument_group("the most used TRL keys")
    for name, text in COMMON_TRL_KEYS.items():
        f, annotation = _field(name)
        _add(group, f, annotation, text or _first_sentence(f.metadata.get("help", "")))
    return parser.format_help()
