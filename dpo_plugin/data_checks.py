"""The data-quality checks bound to a host's reading of the data, and the checks a training run makes first.

:mod:`dpo_plugin.data_quality` finds the problems; here they get the host's ``extract_prompt`` for
implicit prompts and its own tokenisation (a :class:`~dpo_plugin.forward.backend.ForwardBackend`) for
token counts, so that every count matches what training sees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .data_quality import DataReport, Finding, Pair, ensure_clean, identical_after_truncation, token_findings
from .data_quality import check_data as find_problems
from .errors import ConfigError
from .forward.backend import ForwardBackend, default_backend
from .forward.logps import TOKEN_COLUMNS
from .preference_data import validate_preference_columns

logger = logging.getLogger(__name__)


def token_ids(
    pairs: Sequence[Pair], tokenizer: Any, backend: ForwardBackend | None = None
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Token ids of prompt, chosen and rejected per pair, tokenised by the host's trainer (default:
    the default host's), with datasets' progress bar ("Tokenizing check dataset").

    Conversational pairs go through the chat template (the prompt with the generation prompt);
    plain-text completions get the EOS token appended; the completion starts where the tokenised
    prompt and prompt+completion diverge. Nothing is truncated or dropped here.
    """
    prepared = (backend or default_backend()).prepare_pairs(_pairs_dataset(pairs), tokenizer, name="check")
    prompt, chosen, rejected = (prepared[column] for column in TOKEN_COLUMNS)
    return prompt, chosen, rejected


def token_lengths(
    pairs: Sequence[Pair], tokenizer: Any, backend: ForwardBackend | None = None
) -> tuple[list[int], list[int], list[int]]:
    """Token counts of prompt, chosen and rejected per pair (:func:`token_ids`)."""
    prompt, chosen, rejected = ([len(ids) for ids in part] for part in token_ids(pairs, tokenizer, backend))
    return prompt, chosen, rejected


def _pairs_dataset(pairs: Sequence[Pair]) -> Any:
    """The pairs as a ``Dataset`` holding exactly their values: text columns as strings, any other column as JSON.

    Arrow's type inference would give every message the keys of all (``tool_calls: None`` …) and cannot mix a
    string and a mapping in one field (tool-call arguments); datasets' ``Json`` keeps each value as it is.
    """
    from datasets import Dataset, Features, Json, Value

    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, **p.extra} for p in pairs]
    columns = dict.fromkeys(name for row in rows for name in row)
    features = Features(
        {name: Value("string") if all(isinstance(row.get(name), str) for row in rows) else Json() for name in columns}
    )
    return Dataset.from_list(rows, features=features)


def check_data(
    dataset: Any,
    backend: ForwardBackend | None = None,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    **options: Any,
) -> DataReport:
    """:func:`dpo_plugin.data_quality.check_data` reading the data as the host does; with ``tokenizer``, lengths
    in tokens and the chat-template round trip. ``backend``: the host's reading (default: the default host's)."""
    backend = backend or default_backend()
    tokenize = (lambda pairs: token_ids(pairs, tokenizer, backend)) if tokenizer is not None else None
    extract = backend.extract_prompt
    return find_problems(
        dataset, extract_prompt=extract, tokenize=tokenize, max_length=max_length, chat_template=tokenizer, **options
    )


def check_datasets(
    train_dataset: Any, eval_dataset: Any, backend: ForwardBackend, *, allow_errors: bool
) -> tuple[DataReport | None, str | None]:
    """Column checks for every split and the data-quality checks on the training split, before anything loads;
    the report (None for a streaming split) and the training data's format (``"text"`` or ``"messages"``)."""
    from datasets import Dataset

    splits = [train_dataset] + (list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset])
    formats = [validate_preference_columns(split) for split in splits if split is not None]
    data_format = formats[0] if train_dataset is not None else None
    if not isinstance(train_dataset, Dataset):
        return None, data_format
    report = check_data(train_dataset, backend)
    ensure_clean(report, allow_errors=allow_errors)
    return report, data_format


def check_truncation(
    report: DataReport | None, prepared: Any, *, max_length: int | None, truncation_mode: str, allow_errors: bool
) -> None:
    """Token-level findings from the host's tokenised training split: pairs it dropped, completions it truncates,
    sides it truncates to the same tokens.

    Logged as warnings; no pair left, or most pairs identical after truncation, is a ConfigError (before any
    reference pass or training step; the latter, with ``allow_errors``, only logged).
    """
    from datasets import Dataset

    if report is None or max_length is None or not isinstance(prepared, Dataset):
        return
    if len(prepared) == 0:
        raise ConfigError(
            f"TRL dropped all {report.rows} training pairs: each prompt alone fills max_length={max_length} "
            "tokens, leaving nothing to train on. Raise max_length or shorten the prompts (`dpo-plugin check-data "
            "--model M --max_length N` counts them)."
        )
    ids = [prepared[column] for column in TOKEN_COLUMNS]
    lengths = [[len(x) for x in part] for part in ids]
    findings: list[Finding] = token_findings(*lengths, max_length=max_length, truncation_mode=truncation_mode)
    findings += identical_after_truncation(*ids, max_length=max_length, truncation_mode=truncation_mode)
    dropped = report.rows - len(prepared)
    if dropped:
        logger.warning(
            "TRL dropped %d of %d training pairs whose prompt alone fills max_length=%d.",
            dropped,
            report.rows,
            max_length,
        )
    for finding in findings:
        if finding.severity == "warning":
            logger.warning("Data quality: %s", finding.message)
    report.findings.extend(findings)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        ensure_clean(DataReport(report.rows, errors), allow_errors=allow_errors)
