"""Preference-data loading and validation: local files and folders or hub datasets, with clear errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk
TEXT, MESSAGES = "text", "messages"


def load_preference_data(
    name_or_path: str, *, config: str | None = None, split: str | None = None, streaming: bool = False
) -> Any:
    """A ``DatasetDict`` (or its split ``split``) from a local file, a local folder or a Hugging Face Hub dataset.

    Local files by extension (.json, .jsonl, .parquet, .csv) become a single ``train`` split; a folder
    written by ``save_to_disk`` is loaded with ``load_from_disk`` (a saved single ``Dataset`` becomes
    ``train``); any other folder with ``load_dataset(folder)`` (``train.jsonl``, ``test.jsonl``, …);
    anything else is a hub name, loaded with ``load_dataset(name, config)``. ``streaming`` gives
    iterable datasets.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        loaded = _load_file(path, config=config, streaming=streaming)
    elif path.is_dir():
        loaded = _load_folder(path, config=config, streaming=streaming)
    elif _looks_local(name_or_path):
        raise ConfigError(
            f"No such file or directory {name_or_path!r} (resolved to {path.absolute()}). "
            "Check the path, or give a Hugging Face Hub dataset name such as 'owner/dataset'."
        )
    else:
        loaded = _load_from_hub(name_or_path, config=config, streaming=streaming)
    return loaded if split is None else select_split(loaded, split)


def _looks_local(name: str) -> bool:
    """A path rather than a hub name ('name' or 'owner/name'): explicit prefix, data-file suffix or deeper nesting."""
    return name.startswith((".", "/", "~")) or Path(name).suffix.lower() in FILE_BUILDERS or name.count("/") > 1


def _error_summary(error: BaseException) -> str:
    """``Type: first line`` of an error, then of its explicit cause (datasets wraps the parser's error)."""

    def line(e: BaseException) -> str:
        text = next((part for part in str(e).splitlines() if part.strip()), "")
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    return line(error) + (f" ({line(error.__cause__)})" if error.__cause__ is not None else "")


def _no_config(config: str | None, what: str) -> None:
    if config is not None:
        raise ConfigError(f"A dataset config ({config!r}) applies to hub datasets and dataset folders, not to {what}.")


def _load_file(path: Path, *, config: str | None, streaming: bool) -> Any:
    import datasets

    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ConfigError(
            f"{str(path)!r}: unsupported file type {path.suffix!r}; preference data files must end in "
            f"{', '.join(FILE_BUILDERS)}."
        )
    _no_config(config, "a single data file")
    try:
        return datasets.load_dataset(builder, data_files=str(path), streaming=streaming)
    except Exception as error:  # datasets raises many types (DatasetGenerationError, ArrowInvalid, …)
        raise ConfigError(f"Cannot read {str(path)!r} as {builder}: {_error_summary(error)}") from None


def _load_folder(path: Path, *, config: str | None, streaming: bool) -> Any:
    import datasets

    if any((path / marker).exists() for marker in SAVED_DATASET_MARKERS):
        _no_config(config, "a folder written by save_to_disk")
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:
            raise ConfigError(f"Cannot load the saved dataset {str(path)!r}: {_error_summary(error)}") from None
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        if streaming:
            loaded = datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in loaded.items()})
        return loaded
    try:
        return datasets.load_dataset(str(path), config, streaming=streaming)
    except Exception as error:
        raise ConfigError(
            f"Cannot load the folder {str(path)!r} as a dataset: {_error_summary(error)}. A preference-data folder "
            "holds data files (e.g. train.jsonl and test.jsonl) or was written by Dataset.save_to_disk."
        ) from None


def _load_from_hub(name: str, *, config: str | None, streaming: bool) -> Any:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        return datasets.load_dataset(name, config, streaming=streaming)
    except DatasetNotFoundError:
        reason = f"{name!r} is not a dataset on the Hugging Face Hub (if it is private or gated, log in: hf auth login)"
    except ConnectionError as error:
        offline = datasets.config.HF_HUB_OFFLINE or "OfflineModeIsEnabled" in str(error)
        reason = (
            f"{name!r} is not in the local cache and the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)"
            if offline
            else f"the Hugging Face Hub could not be reached to load {name!r} ({_error_summary(error)})"
        )
    except Exception as error:
        reason = f"loading {name!r} from the Hugging Face Hub failed: {_error_summary(error)}"
    raise ConfigError(f"No such file or directory {name!r}, and {reason}.")


def select_split(dataset: Any, split: str) -> Any:
    """One split of a ``DatasetDict``; a single dataset is returned as it is."""
    if not hasattr(dataset, "keys"):
        return dataset
    if split not in dataset:
        raise ConfigError(
            f"The dataset has no split {split!r}; its splits are: {', '.join(dataset.keys()) or '(none)'}. "
            "Choose one of them."
        )
    return dataset[split]


def train_eval_splits(
    dataset: Any,
    train_split: str = "train",
    eval_split: str | None = "test",
    *,
    eval_fraction: float | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(train, eval or None)`` from a ``DatasetDict`` (or a single dataset, used as train).

    Without an ``eval_split`` in the data, ``eval_fraction`` holds out that (seeded, shuffled)
    fraction of the train split as the eval split.
    """
    if eval_fraction is not None and not 0 < eval_fraction < 1:
        raise ConfigError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}.")
    train = select_split(dataset, train_split)
    if eval_split is not None and hasattr(dataset, "keys") and eval_split in dataset:
        if eval_fraction is not None:
            logger.info("Using the dataset's %r split for evaluation; eval_fraction is not used.", eval_split)
        return train, dataset[eval_split]
    if eval_fraction is None:
        if eval_split is not None and hasattr(dataset, "keys"):
            logger.info(
                "The dataset has no %r split: no eval split (set eval_fraction to hold out part of train).", eval_split
            )
        return train, None
    if not hasattr(train, "train_test_split"):
        raise ConfigError(
            "eval_fraction needs a dataset that can be split (not a streaming one); give an eval split instead."
        )
    try:
        parts = train.train_test_split(test_size=eval_fraction, seed=seed)
    except ValueError as error:
        raise ConfigError(f"Cannot hold out eval_fraction={eval_fraction} of {len(train)} pairs: {error}") from None
    return parts["train"], parts["test"]


def value_format(value: Any) -> str | None:
    """``"text"``, ``"messages"`` (TRL's ``is_conversational``: a list whose first item has a role) or None."""
    if isinstance(value, str):
        return TEXT
    if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
        return MESSAGES
    return None


def feature_format(feature: Any) -> str | None:
    """The same for an Arrow column type: a string, or a list of structs with a ``role`` field."""
    from datasets import LargeList, List, Value

    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return TEXT
    if isinstance(feature, (List, LargeList)) and isinstance(feature.feature, dict) and "role" in feature.feature:
        return MESSAGES
    return None


def _column_formats(dataset: Any) -> tuple[list[str], dict[str, str | None], dict[str, str]]:
    """The columns, the format of each (text, messages or None) and how to show its type in an error."""
    features = getattr(dataset, "features", None)
    if features:
        formats = {name: feature_format(features[name]) for name in features}
        shown = {
            name: "no values (null in every row)" if str(feature) == "Value('null')" else str(feature)
            for name, feature in features.items()
        }
        return list(features), formats, shown
    first = next(iter(dataset), None)  # a streaming dataset with unknown features: look at the first row, as TRL does
    if first is None:
        raise ConfigError("The preference dataset is empty.")
    formats = {name: value_format(value) for name, value in first.items()}
    return list(first), formats, {name: f"{type(value).__name__} {value!r:.60}" for name, value in first.items()}


def validate_preference_columns(dataset: Any) -> str:
    """Check the columns TRL 1.16's DPOTrainer needs; return the data format, ``"text"`` or ``"messages"``.

    Accepted: ``chosen`` and ``rejected`` (both plain text or both lists of ``{role, content}``
    messages) with a ``prompt`` of the same format, or without ``prompt`` (implicit prompt: TRL
    takes the shared beginning of chosen and rejected).
    """
    columns, formats, shown = _column_formats(dataset)
    missing = [name for name in ("chosen", "rejected") if name not in columns]
    if missing:
        hint = (
            " This looks like unpaired preference data (prompt/completion/label, as for KTO); DPO needs pairs."
            if {"completion", "label"} <= set(columns)
            else " Rename the columns (dataset.rename_column) or choose another dataset."
        )
        raise ConfigError(
            f"The preference dataset has columns {columns}; it needs 'chosen' and 'rejected' (and usually 'prompt'), "
            f"missing: {missing}.{hint}"
        )
    for name in ("chosen", "rejected", "prompt"):
        if name in columns and formats[name] is None:
            sharegpt = "'from'" in shown[name] and "'value'" in shown[name]
            hint = " Convert ShareGPT-style messages with trl.data_utils.maybe_convert_to_chatml." if sharegpt else ""
            raise ConfigError(
                f"Column {name!r} holds {shown[name]}; expected text (strings) or conversations (lists of "
                f"{{'role': ..., 'content': ...}} messages).{hint}"
            )
    data_format = formats["chosen"]
    if formats["rejected"] != data_format:
        raise ConfigError(
            f"Column 'chosen' holds {data_format} but 'rejected' holds {formats['rejected']}; use one format."
        )
    if "prompt" in columns and formats["prompt"] != data_format:
        raise ConfigError(
            f"Column 'prompt' holds {formats['prompt']} but chosen/rejected hold {data_format}: TRL would join them "
            "and fail. Write the prompt in the same format, or remove the prompt column so that TRL takes the shared "
            "beginning of chosen and rejected as the prompt (implicit prompt)."
        )
    return data_format
