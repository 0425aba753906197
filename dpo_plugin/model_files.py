"""A model named by folder or hub id: its config and its tokenizer read first, with one-line errors.

transformers' own errors about a broken model folder name neither the file nor the fix ("Unrecognized
processing class", "Should have a `model_type` key"); these are read before the weights load, so a
missing ``config.json`` or a damaged ``tokenizer.json`` stops the run in a second, naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: The JSON files of a saved model and tokenizer, checked by name when loading one fails.
JSON_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)


def _broken_json(folder: Path) -> str | None:
    """``<file>, line N: not valid JSON (…)`` for the first JSON file of a model folder that does not parse."""
    for name in JSON_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            return f"{path} is not UTF-8 text"
        except json.JSONDecodeError as error:
            return f"{path}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
    return None


def _first_line(error: BaseException) -> str:
    text = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_model_config(name: str, **kwargs: Any) -> Any:
    """``AutoConfig.from_pretrained(name, **kwargs)``; a ConfigError naming the missing or broken file."""
    from transformers import AutoConfig

    folder = Path(name).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ConfigError(
            f"The model folder {name!r} has no config.json: a model folder holds config.json beside its weights "
            "(save_pretrained writes both). Point model_name_or_path at the folder that has them."
        )
    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        broken = _broken_json(folder) if folder.is_dir() else None
        reason = broken or _first_line(error)
        raise ConfigError(f"Cannot read the config of the model {name!r}: {reason}.") from None


def load_processing_class(name: str, **kwargs: Any) -> Any:
    """``AutoProcessor.from_pretrained(name, **kwargs)`` (as TRL loads it); a ConfigError naming the broken file."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        folder = Path(name).expanduser()
        reason = _broken_json(folder) if folder.is_dir() else None
        if reason is None:
            try:  # AutoProcessor hides the tokenizer's own error behind "Unrecognized processing class"
                AutoTokenizer.from_pretrained(name, **kwargs)
                reason = _first_line(error)
            except Exception as inner:  # noqa: BLE001 -- a tokenizer's parser raises its own types
                reason = _first_line(inner)
        raise ConfigError(
            f"Cannot load the tokenizer of the model {name!r}: {reason}. Restore the tokenizer files (save_pretrained "
            "of the tokenizer writes them) or give a model whose tokenizer loads."
        ) from None
