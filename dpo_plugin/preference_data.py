"""Preference-data loading and validation: local files and folders or hub datasets, with clear errors."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .text_files import check_text_file

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk
TEXT, MESSAGES = "text", "messages"
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
PAIR_EXAMPLE = '{"prompt": "…", "chosen": "…", "rejected": "…"}'
EMPTY_HINTS = {
    "json": f"A preference data file holds one pair per line, such as {PAIR_EXAMPLE}.",
    "csv": "A preference CSV file holds a header line (prompt,chosen,rejected), then one pair per line.",
    "parquet": "Write the pairs again (Dataset.to_parquet).",
}
MESSAGE_EXAMPLE = '{"role": …, "content": …}'


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
    return _load_checked(
        [(path, builder)],
        lambda: datasets.load_dataset(builder, data_files=str(path), streaming=streaming),
        lambda error: f"Cannot read {str(path)!r} as {builder}: {_error_summary(error)}",
        streaming=streaming,
    )


def _load_checked(
    files: list[tuple[Path, str]], load: Callable[[], Any], failure: Callable[[Exception], str], *, streaming: bool
) -> Any:
    """``load()`` the local data ``files`` (path, builder) after checking each,
    with one-line errors naming file and line.

    JSON files are read record by record first (not when streaming: then only when datasets fails): datasets
    types the column of one odd row as JSON, and casts such rows to JSON strings where it inferred the column's
    type from other rows (a later chunk, another file of the folder). ``failure`` describes datasets' own error.
    """
    for file, builder in files:
        _check_data_file(file, builder)
        if builder == "json" and not streaming:
            _check_json_file(file)
    try:
        return load()
    except Exception as error:  # datasets raises many types (DatasetGenerationError, ArrowInvalid, …)
        problems = (_json_problem(file) for file, builder in files if builder == "json")
        raise ConfigError(next(filter(None, problems), None) or failure(error)) from None


def _folder_files(folder: Path) -> list[Path]:
    """The data files ``load_dataset(folder)`` may read: by extension, outside hidden folders."""
    return [
        file
        for file in sorted(folder.rglob("*"))
        if file.suffix.lower() in FILE_BUILDERS
        and file.is_file()
        and not any(part.startswith((".", "__")) for part in file.relative_to(folder).parts)
    ]


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
    _check_one_format_per_split(path)
    return _load_checked(
        [(file, FILE_BUILDERS[file.suffix.lower()]) for file in _folder_files(path)],
        lambda: datasets.load_dataset(str(path), config, streaming=streaming),
        lambda error: (
            f"Cannot load the folder {str(path)!r} as a dataset: {_error_summary(error)}. A preference-data "
            "folder holds data files (e.g. train.jsonl and test.jsonl) or was written by Dataset.save_to_disk."
        ),
        streaming=streaming,
    )


def _check_one_format_per_split(folder: Path) -> None:
    """A ConfigError when one split of a data folder has files of two formats (``train.jsonl`` and
    ``train.parquet``): datasets would read one format and silently ignore the other's rows."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        splits = DataFilesDict.from_patterns(get_data_patterns(str(folder)), base_path=str(folder))
    except Exception:  # noqa: BLE001 -- no data files, or a layout datasets reports itself when loading
        return
    for split, files in splits.items():
        by_format: dict[str, list[str]] = {}
        for file in files:
            builder = FILE_BUILDERS.get(Path(file).suffix.lower())
            if builder is not None:
                by_format.setdefault(builder, []).append(Path(file).name)
        if len(by_format) > 1:
            named = " and ".join(", ".join(names) for names in by_format.values())
            raise ConfigError(
                f"The data folder {str(folder)!r} holds the {split} split in {len(by_format)} formats ({named}): "
                "datasets would read only one of them and ignore the others' rows. Keep one format per split "
                "(move or delete the other files), or name the file to train on in dataset_name."
            )


def _check_data_file(path: Path, builder: str) -> None:
    """An empty file, bytes that are not UTF-8, a CSV header naming a pair column twice: ConfigErrors."""
    if builder == "parquet":
        if path.stat().st_size == 0:
            raise ConfigError(f"{path} is empty. {EMPTY_HINTS[builder]}")
        return
    check_text_file(path, empty_hint=EMPTY_HINTS[builder])
    if builder == "csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        repeated = [name for name in PAIR_COLUMNS if header.count(name) > 1]
        if repeated:
            name = repeated[0]
            raise ConfigError(
                f"{path}, line 1: the header names the column {name!r} {header.count(name)} times, so which one "
                f"holds the {name} text is ambiguous (pandas would rename the others {name}.1, …). Keep one "
                "column of that name."
            )


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` per record of a JSON array (``object N``) or JSON Lines file (``line N``;
    blank lines skipped).

    Invalid JSON is a ConfigError naming the line and column. A file that is one JSON object over several
    lines (columns of values, which datasets reads with pandas) has no records here.
    """
    with path.open(encoding="utf-8-sig") as handle:
        if handle.read(4096).lstrip().startswith("["):  # one array, which datasets also reads whole
            handle.seek(0)
            try:
                items = json.load(handle)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"{path}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})."
                ) from None
            for number, item in enumerate(items, 1):
                _check_unicode(path, f"object {number} of the array", item)
                yield f"object {number} of the array", item
            return
        handle.seek(0)
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if number == 1 and _is_one_object(path):
                    return
                raise ConfigError(
                    f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}). Fix or remove the "
                    f"line: each line of a JSON Lines file is one object, such as {PAIR_EXAMPLE}."
                ) from None
            if "\\u" in line:  # only a \uXXXX escape can write a lone surrogate
                _check_unicode(path, f"line {number}", record)
            yield f"line {number}", record


def _check_unicode(path: Path, where: str, record: Any) -> None:
    """A ConfigError for a string holding half of a UTF-16 surrogate pair (``"\\ud800"``): valid JSON, but no text,
    which Arrow refuses later with a 0-based row number."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(error.object[error.start])
        raise ConfigError(
            f"{path}, {where}: the escape \\u{code:04x} is half of a UTF-16 surrogate pair without its other half, "
            "which is not text. Write the character itself, or both halves of its \\uXXXX pair."
        ) from None


def _is_one_object(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8-sig")), dict)
    except json.JSONDecodeError:
        return False


def _check_json_file(path: Path) -> None:
    """Every record of a JSON (Lines) file is an object whose pair columns hold the first row's format
    (TRL's reading)."""
    first: dict[str, tuple[str, str | None]] = {}  # column → (where, format) of its first value
    for where, record in _json_records(path):
        if not isinstance(record, dict):
            raise ConfigError(f"{path}, {where}: a JSON {type(record).__name__}, not an object such as {PAIR_EXAMPLE}.")
        for name in PAIR_COLUMNS:
            value = record.get(name)
            if value is None or value == []:
                continue  # a missing field: the data-quality checks name these rows
            found = value_format(value)
            first_where, expected = first.setdefault(name, (where, found))
            if found is None or found != expected:
                but = f", but {first_where} holds {expected}" if expected else ""
                raise ConfigError(
                    f"{path}, {where}: {name!r} holds {shown_value(value)}{but}. Write every row's {name} in one "
                    f"format: text (a JSON string), or a list of {MESSAGE_EXAMPLE} messages."
                )


def _json_problem(path: Path) -> str | None:
    """Why datasets could not read a JSON (Lines) file, naming the line; None when no reason is found."""
    try:
        _check_json_file(path)
    except ConfigError as error:
        return str(error)
    with path.open(encoding="utf-8") as handle:
        blank = next((number for number, line in enumerate(handle, 1) if not line.strip()), None)
    if blank is None:
        return None
    return (
        f"{path}, line {blank}: a blank line, which datasets cannot read in a file whose rows differ in type or "
        "keys. Remove the blank lines."
    )


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


def shown_value(value: Any) -> str:
    """A value as an error shows it: its format, or its type and the start of its repr."""
    return value_format(value) or f"{type(value).__name__} {value!r:.60}"


def is_json_feature(feature: Any) -> bool:
    """A column datasets 5 types as JSON (``Json``, or a list of ``Json``): its rows' values differ in type or keys."""
    from datasets import Json, LargeList, List

    return isinstance(feature, Json) or (isinstance(feature, (List, LargeList)) and isinstance(feature.feature, Json))


def feature_format(feature: Any) -> str | None:
    """The same for an Arrow column type: a string, or a list of structs with a ``role`` field
    (None for JSON columns)."""
    from datasets import LargeList, List, Value

    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return TEXT
    if isinstance(feature, (List, LargeList)) and isinstance(feature.feature, dict) and "role" in feature.feature:
        return MESSAGES
    return None


def _column_formats(dataset: Any) -> tuple[list[str], dict[str, str | None], dict[str, str]]:
    """The columns, the format of each (text, messages or None) and how to show its type in an error.

    Where the column types do not tell (a streaming dataset with unknown features, a JSON-typed column such as
    tool-call messages), the first row does, as in TRL's ``is_conversational``.
    """
    features = getattr(dataset, "features", None)
    first = None
    if not features or any(is_json_feature(feature) for feature in features.values()):
        first = next(iter(dataset), None)
        if first is None:
            raise ConfigError("The preference dataset is empty.")
    if not features:
        return (
            list(first),
            {name: value_format(v) for name, v in first.items()},
            {n: shown_value(v) for n, v in first.items()},
        )
    formats, shown = {}, {}
    for name, feature in features.items():
        if is_json_feature(feature):
            formats[name], shown[name] = value_format(first[name]), f"{shown_value(first[name])} in its first row"
        else:
            formats[name] = feature_format(feature)
            shown[name] = "no values (null in every row)" if str(feature) == "Value('null')" else str(feature)
    return list(features), formats, shown


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
