"""Preference-data loading and validation: local files and folders or hub datasets, with clear errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix in FILE_BUILDERS or name.count("/") > 1


def load_preference_data(
    name_or_path: str, *, config: str | None = None, split: str | None = None, streaming: bool = False
) -> Any:
    """A ``DatasetDict`` (or one split, with ``split``) from a local file, a local folder or a hub dataset.

    Local files by extension (.json/.jsonl/.parquet/.csv); a folder saved with ``save_to_disk`` or
    holding data files (``train.jsonl``, ``test.jsonl``, …); otherwise a Hugging Face Hub name.
    """
    import datasets

    path = Path(os.path.expanduser(name_or_path))
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise ConfigError(f"{name_or_path!r}: unsupported file type {path.suffix!r}; use {', '.join(FILE_BUILDERS)}.")
            loaded = datasets.load_dataset(builder, data_files=str(path), streaming=streaming)
        elif path.is_dir():
            saved = (path / "dataset_dict.json").exists() or (path / "state.json").exists()
            loaded = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(str(path), streaming=streaming)
        elif _looks_local(name_or_path):
            raise ConfigError(f"No such file or directory: {name_or_path!r}.")
        else:
            loaded = datasets.load_dataset(name_or_path, config, streaming=streaming)
    except ConfigError:
        raise
    except Exception as error:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError …)
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        where = " (the hub is offline here: HF_HUB_OFFLINE=1)" if offline else ""
        raise ConfigError(
            f"Cannot load the dataset {name_or_path!r}: not a local file or folder, and loading it from the Hugging "
            f"Face Hub failed{where}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    if split is None:
        return loaded
    return select_split(loaded, split)


def select_split(dataset: Any, split: str) -> Any:
    """One split of a DatasetDict, with an error listing the available splits."""
    if not hasattr(dataset, "keys"):
        return dataset
    if split not in dataset:
        raise ConfigError(f"The dataset has no split {split!r}; its splits are: {', '.join(dataset.keys())}.")
    return dataset[split]


def train_eval_splits(
    dataset: Any,
    train_split: str = "train",
    eval_split: str | None = "test",
    *,
    eval_fraction: float | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(train, eval or None)``; with ``eval_fraction`` and no eval split, a seeded held-out fraction of train."""
    train = select_split(dataset, train_split)
    evaluation = dataset[eval_split] if hasattr(dataset, "keys") and eval_split in dataset else None
    if evaluation is None and eval_fraction:
        if not 0 < eval_fraction < 1:
            raise ConfigError(f"eval_fraction must lie in (0, 1), got {eval_fraction}.")
        parts = train.train_test_split(test_size=eval_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def validate_preference_columns(dataset: Any) -> None:
    """Chosen and rejected columns are required (the prompt may be implicit, as TRL accepts)."""
    columns = list(dataset.column_names or [])
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise ConfigError(
            f"The preference dataset has columns {columns}; it needs 'chosen' and 'rejected' (and usually 'prompt'), "
            f"missing: {missing}. Rename the columns (dataset.rename_column) or choose another dataset."
        )
