"""Data-quality checks for preference data, run by ``dpo-plugin check-data`` and before every training run.

"Watch your dataset quality like a hawk": each finding has a code, a severity (errors stop
training unless ``allow_data_errors``; warnings are logged), a count and a few example rows.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant", "tool"}
MAX_EXAMPLES = 3


@dataclass
class Finding:
    """One problem found in the data: how many rows have it, and a few of them."""

    code: str
    severity: str
    message: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DataReport:
    """All findings for a dataset of ``rows`` pairs."""

    rows: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "ok": self.ok, "findings": [asdict(f) for f in self.findings]}

    def format_table(self) -> str:
        """A plain-text table: severity, code, count, message, example rows."""
        if not self.findings:
            return f"{self.rows} pairs: no problems found."
        rows = [("severity", "code", "count", "message", "examples")]
        for f in self.findings:
            examples = "; ".join(f"row {e['row']}: {e['excerpt']}" if "row" in e else str(e) for e in f.examples)
            rows.append((f.severity, f.code, str(f.count), f.message, examples))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
        lines.insert(1, "-" * (sum(widths) + 8 + len("examples")))
        return f"{self.rows} pairs, {len(self.errors)} error(s), {len(self.warnings)} warning(s)\n" + "\n".join(lines)


def _text(value: Any) -> str:
    """The text of a plain string or of a list of chat messages."""
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    return "" if value is None else str(value)


def _excerpt(value: Any, width: int = 60) -> str:
    text = " ".join(_text(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _finding(code: str, severity: str, message: str, rows: Sequence[int], excerpts: dict[int, Any]) -> Finding:
    examples = [{"row": r, "excerpt": _excerpt(excerpts.get(r, ""))} for r in rows[:MAX_EXAMPLES]]
    return Finding(code, severity, message, len(rows), examples)


def _format_problem(value: Any, part: str, conversational: bool) -> str | None:
    """Why a conversational field is malformed (None when it is fine)."""
    if not conversational:
        return None if isinstance(value, str) else f"{part} is {type(value).__name__}, not text"
    if not isinstance(value, list):
        return f"{part} is {type(value).__name__}, not a list of messages"
    for message in value:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return f"{part} has a message that is not a {{role, content}} mapping"
        if message["role"] not in ROLES:
            return f"{part} has an unknown role {message['role']!r}"
    if part in ("chosen", "rejected") and value and value[-1].get("role") != "assistant":
        return f"{part} does not end with an assistant message"
    return None


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, list):
        return not value or all(not str(m.get("content", "")).strip() for m in value if isinstance(m, dict))
    return not str(value).strip()


def _normalised(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _rows(dataset: Any) -> Iterable[dict[str, Any]]:
    """Rows with an explicit prompt (TRL's extract_prompt for implicit-prompt data)."""
    from trl.data_utils import extract_prompt

    implicit = "prompt" not in dataset.column_names
    for row in dataset:
        if implicit and isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list):
            row = {**row, **extract_prompt(row)}
        yield row


def check_data(
    dataset: Any,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    min_pairs: int = 100,
    min_prompt_diversity: float = 0.2,
) -> DataReport:
    """Check a preference dataset (standard or conversational, explicit or implicit prompt).

    With a tokenizer and ``max_length``, also counts the pairs TRL would drop (prompt alone fills
    max_length) and the completions it would truncate, tokenising as TRL does.
    """
    from scipy.stats import binomtest

    findings: list[Finding] = []
    rows = list(_rows(dataset))
    report = DataReport(len(rows))
    if not rows:
        report.findings.append(Finding("too_few_pairs", "error", "The dataset has no pairs.", 0))
        return report
    conversational = isinstance(rows[0].get("chosen"), list)
    missing, identical, malformed, mixed = [], [], defaultdict(list), []
    exact: dict[str, list[int]] = defaultdict(list)
    near: dict[str, list[int]] = defaultdict(list)
    prompts: set[str] = set()
    chosen_longer = comparable = 0
    for index, row in enumerate(rows):
        parts = {part: row.get(part) for part in ("prompt", "chosen", "rejected")}
        if any(isinstance(v, list) != conversational for v in (parts["chosen"], parts["rejected"]) if v is not None):
            mixed.append(index)
            continue
        if any(_empty(v) for v in parts.values()):
            missing.append(index)
            continue
        problem = next((p for part, v in parts.items() if (p := _format_problem(v, part, conversational))), None)
        if problem:
            malformed[problem].append(index)
            continue
        prompt, chosen, rejected = (_text(parts[p]) for p in ("prompt", "chosen", "rejected"))
        if chosen == rejected:
            identical.append(index)
        exact[repr((prompt, chosen, rejected))].append(index)
        near[repr((_normalised(prompt), _normalised(chosen), _normalised(rejected)))].append(index)
        prompts.add(prompt)
        if len(chosen) != len(rejected):
            comparable += 1
            chosen_longer += len(chosen) > len(rejected)

    excerpts = {i: rows[i].get("chosen") for i in range(len(rows))}
    if mixed:
        findings.append(_finding("mixed_format", "error", "Some rows are conversational (message lists), others plain text; use one format.", mixed, excerpts))
    if missing:
        findings.append(_finding("missing_field", "error", "Missing or empty prompt, chosen or rejected.", missing, excerpts))
    for problem, indices in malformed.items():
        findings.append(_finding("format_error", "error", f"Conversational format error: {problem}.", indices, excerpts))
    if identical:
        findings.append(_finding("identical_pair", "error", "Chosen is identical to rejected: the pair carries no preference.", identical, excerpts))
    duplicates = [i for group in exact.values() for i in group[1:]]
    if duplicates:
        findings.append(_finding("duplicate_pair", "warning", "Exact duplicate pairs (each repeat weighs the pair more).", duplicates, excerpts))
    exact_rows = {i for group in exact.values() if len(group) > 1 for i in group}
    near_duplicates = [i for group in near.values() if len(group) > 1 for i in group[1:] if i not in exact_rows]
    if near_duplicates:
        findings.append(_finding("near_duplicate", "warning", "Near-duplicate pairs (same text up to case, spacing and punctuation).", near_duplicates, excerpts))
    valid = len(rows) - len(missing) - len(mixed) - sum(len(v) for v in malformed.values())
    if valid < min_pairs:
        findings.append(Finding("too_few_pairs", "warning", f"Only {valid} usable pairs (fewer than {min_pairs}): expect noisy training.", valid))
    if valid and len(prompts) / valid < min_prompt_diversity:
        findings.append(
            Finding("low_prompt_diversity", "warning", f"Only {len(prompts)} distinct prompts for {valid} pairs ({len(prompts) / valid:.0%}).", len(prompts))
        )
    if comparable >= 10:
        share = chosen_longer / comparable
        p_value = binomtest(chosen_longer, comparable, 0.5).pvalue
        if (share >= 0.8 or share <= 0.2) and p_value < 0.05:
            findings.append(
                Finding(
                    "length_bias",
                    "warning",
                    f"Chosen is longer than rejected in {share:.0%} of pairs (binomial p={p_value:.2g}): the model may "
                    "learn length rather than quality (consider rdpo, sigmoid_norm, ld_alpha or rebalancing the data).",
                    chosen_longer,
                )
            )
    if tokenizer is not None and max_length is not None:
        lengths = token_lengths(rows, tokenizer)
        findings.extend(token_findings(*lengths, max_length=max_length, truncation_mode=truncation_mode))
    report.findings = findings
    for finding in report.warnings:
        logger.warning("Data quality: %s (%d).", finding.message, finding.count)
    return report


def token_lengths(rows: Sequence[dict[str, Any]], tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """Token counts of prompt, chosen and rejected per row, tokenised as TRL 1.16 does (EOS added to plain text)."""
    from trl.data_utils import _tokenize, common_prefix_length

    prompt_lens, chosen_lens, rejected_lens = [], [], []
    eos = tokenizer.eos_token or ""
    for row in rows:
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        if isinstance(chosen, list):
            prompt_ids = _tokenize(tokenizer, prompt, add_generation_prompt=True)["input_ids"]
            with_chosen = _tokenize(tokenizer, prompt + chosen)["input_ids"]
            with_rejected = _tokenize(tokenizer, prompt + rejected)["input_ids"]
        else:
            prompt_ids = _tokenize(tokenizer, prompt)["input_ids"]
            with_chosen = _tokenize(tokenizer, prompt + chosen + ("" if chosen.endswith(eos) else eos))["input_ids"]
            with_rejected = _tokenize(tokenizer, prompt + rejected + ("" if rejected.endswith(eos) else eos))["input_ids"]
        start = min(common_prefix_length(prompt_ids, with_chosen), common_prefix_length(prompt_ids, with_rejected))
        prompt_lens.append(start)
        chosen_lens.append(len(with_chosen) - start)
        rejected_lens.append(len(with_rejected) - start)
    return prompt_lens, chosen_lens, rejected_lens


def token_findings(
    prompt_lens: Sequence[int],
    chosen_lens: Sequence[int],
    rejected_lens: Sequence[int],
    *,
    max_length: int,
    truncation_mode: str = "keep_start",
) -> list[Finding]:
    """Pairs TRL drops (prompt alone fills max_length, keep_start) and completions it truncates."""
    findings = []
    dropped = [i for i, p in enumerate(prompt_lens) if truncation_mode == "keep_start" and p >= max_length]
    if dropped:
        findings.append(
            Finding(
                "prompt_too_long",
                "warning",
                f"{len(dropped)} pairs have a prompt of max_length={max_length} tokens or more: TRL drops them.",
                len(dropped),
                [{"row": i, "excerpt": f"{prompt_lens[i]} prompt tokens"} for i in dropped[:MAX_EXAMPLES]],
            )
        )
    kept = set(range(len(prompt_lens))) - set(dropped)
    truncated = [
        i for i in sorted(kept) if prompt_lens[i] + max(chosen_lens[i], rejected_lens[i]) > max_length
    ]
    if truncated:
        findings.append(
            Finding(
                "truncated_completion",
                "warning",
                f"{len(truncated)} pairs exceed max_length={max_length} tokens: their completions are truncated "
                "(the model never sees how they end).",
                len(truncated),
                [
                    {"row": i, "excerpt": f"{prompt_lens[i]}+{max(chosen_lens[i], rejected_lens[i])} tokens"}
                    for i in truncated[:MAX_EXAMPLES]
                ],
            )
        )
    return findings


def ensure_clean(report: DataReport, *, allow_errors: bool = False) -> None:
    """Raise a ConfigError summarising the errors, unless ``allow_errors`` (then they are logged)."""
    if report.ok:
        return
    summary = "; ".join(f"{f.code}: {f.count} ({f.message})" for f in report.errors)
    if allow_errors:
        logger.warning("Training despite data errors (allow_data_errors: true): %s", summary)
        return
    raise ConfigError(
        f"The training data has errors: {summary}. Run `dpo-plugin check-data` for the rows, fix the data, or set "
        "allow_data_errors: true to train anyway."
    )
