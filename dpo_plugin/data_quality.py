"""Data-quality checks for preference data, run by ``dpo-plugin check-data`` and before every training run.

"Watch your dataset quality like a hawk": each finding has a code, a severity (errors stop
training unless ``allow_data_errors: true``; warnings are logged), a count and a few example
rows. Rows are read as TRL 1.16's DPOTrainer reads them, so the counts match what training sees:
the caller hands in TRL's ``extract_prompt`` (implicit prompts) and a token counter that tokenises
as the host does; :func:`dpo_plugin.data_checks.check_data` binds both (a host's ``ForwardBackend``).
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from .errors import ConfigError
from .preference_data import MESSAGES, validate_preference_columns, value_format
from .template_round_trip import mismatch, shape

logger = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant", "tool")
PARTS = ("prompt", "chosen", "rejected")
TEMPLATE_COLUMNS = ("tools", "chat_template_kwargs")  # per-row chat-template arguments TRL passes on
TRUNCATION_MODES = ("keep_start", "keep_end")
MAX_EXAMPLES = 3
EXCERPT_WIDTH = 60

MISSING = "Missing or empty prompt, chosen or rejected: TRL cannot train on these rows."
WRONG_TYPE = "Wrong value type: every row needs text, or lists of {role, content} messages, like the first row."
MALFORMED = (
    "Malformed message: each message must be a mapping with 'role' and 'content' (or, calling tools, 'tool_calls')."
)
UNKNOWN_ROLE = f"Unknown message role (known roles: {', '.join(ROLES)})."
EMPTY_CONTENT = "Empty message content."
NOT_ASSISTANT = "Chosen or rejected does not end with an assistant message (the turn DPO trains on)."
NEAR_IDENTICAL = "Chosen and rejected differ only in case, spacing or punctuation: a weak or accidental preference."
DUPLICATE = "Exact duplicate pairs: each repeat weighs the pair more in training."
NEAR_DUPLICATE = "Near-duplicate pairs: the same texts up to case, spacing and punctuation."
CONTRADICTORY = "Contradictory pairs: the same prompt and answers, chosen and rejected swapped; their gradients cancel."
TEMPLATE_ROUND_TRIP = (
    "The chat template renders the prompt alone (with the generation prompt, as the model sees it when answering) "
    "differently from the start of the whole conversation: TRL cuts the prompt where they differ, so the model is "
    "trained on a context it never sees at inference. Fix the chat template (e.g. a system prompt it repeats or "
    "drops)."
)
#: Before training, the round trip is checked on this many pairs of each conversation shape (roles, tools, options).
TEMPLATE_SAMPLE_PER_SHAPE = 4


@dataclass
class Finding:
    """One kind of problem: how many rows have it, and up to ``MAX_EXAMPLES`` of them (``{"row", "excerpt"}``)."""

    code: str
    severity: str  # "error" or "warning"
    message: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DataReport:
    """All findings for a dataset of ``rows`` pairs."""

    rows: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: A few conversational pairs of each shape, for the chat-template round trip before training (not reported).
    template_sample: list[Pair] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
            "notes": list(self.notes),
        }

    def format_table(self) -> str:
        """A plain-text table (severity, code, count, message, examples), errors first."""
        if not self.findings:
            return "\n".join([f"{self.rows} pairs: no problems found.", *self.notes])
        summary = f"{self.rows} pairs: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        header = [["severity"], ["code"], ["count"], ["message"], ["examples"]]
        body = [
            [
                [f.severity],
                [f.code],
                [str(f.count)],
                textwrap.wrap(f.message, 60),
                [f"row {e['row']}: {e['excerpt']}" for e in f.examples] or ["-"],
            ]
            for f in sorted(self.findings, key=lambda f: f.severity != "error")
        ]
        widths = [max(len(line) for row in [header, *body] for line in row[i]) for i in range(5)]

        def render(row: list[list[str]]) -> list[str]:
            height = max(len(cell) for cell in row)
            return [
                "  ".join((cell[k] if k < len(cell) else "").ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                for k in range(height)
            ]

        lines = render(header) + ["  ".join("-" * w for w in widths)]
        for row in body:
            lines += render(row)
        return summary + "\n" + "\n".join(lines + self.notes)


def _row_list(finding: Finding) -> str:
    """`` Rows 3, 4, 5, ….`` for a finding with examples (the ellipsis when it has more rows)."""
    if not finding.examples:
        return ""
    more = ", …" if finding.count > len(finding.examples) else ""
    return f" Rows {', '.join(str(e['row']) for e in finding.examples)}{more}."


def ensure_clean(report: DataReport, *, allow_errors: bool = False) -> None:
    """Raise a ConfigError summarising the report's errors; with ``allow_errors`` log them instead."""
    if report.ok:
        return
    summary = " ".join(f"[{f.code}, {f.count} row(s)] {f.message}{_row_list(f)}" for f in report.errors)
    if allow_errors:
        logger.warning("Training despite data errors (allow_data_errors: true): %s", summary)
        return
    raise ConfigError(
        f"The training data has errors. {summary} Run `dpo-plugin check-data` to see them, fix the data, or set "
        "allow_data_errors: true to train anyway."
    )


@dataclass(frozen=True)
class Pair:
    """A usable row, with the prompt made explicit as TRL does (``extra``: its per-row chat-template arguments)."""

    row: int
    prompt: Any
    chosen: Any
    rejected: Any
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """Why a row is unusable: a finding code, its generic message and this row's detail."""

    code: str
    message: str
    detail: str


def text_of(value: Any) -> str:
    """The text of a string or of a list of messages (their contents, one per line)."""
    if isinstance(value, list):
        return "\n".join(_content_text(m.get("content")) if isinstance(m, dict) else str(m) for m in value)
    return "" if value is None else str(value)


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a multimodal content list."""
    if isinstance(content, list):
        return " ".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _excerpt(value: Any) -> str:
    if isinstance(value, list):
        value = " / ".join(
            f"{m.get('role')}: {_content_text(m.get('content'))}" if isinstance(m, dict) else str(m) for m in value
        )
    text = " ".join(text_of(value).split())
    return text if len(text) <= EXCERPT_WIDTH else text[: EXCERPT_WIDTH - 1] + "…"


NON_WORD = re.compile(r"[\W_]+")


def _normalised(text: str) -> str:
    """Lower case, punctuation and runs of whitespace collapsed to one space."""
    return NON_WORD.sub(" ", text.casefold()).strip()


def _hashable(value: Any) -> str:
    """A string standing for a text or a list of messages, equal exactly when the values are equal."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _read_rows(dataset: Any) -> list[dict[str, Any]]:
    """Rows as dicts of the columns that matter (a ``Dataset`` is read column-wise, which is much faster)."""
    from datasets import Dataset

    if isinstance(dataset, Dataset):
        present = [c for c in (*PARTS, *TEMPLATE_COLUMNS) if c in dataset.column_names]
        columns = dataset.select_columns(present).with_format(None).to_dict()
        return [dict(zip(columns, values)) for values in zip(*columns.values())]
    return [dict(row) for row in dataset]


def _message_problem(messages: list[Any], part: str) -> Problem | None:
    """The first structural problem of a list of chat messages, if any."""
    for position, message in enumerate(messages):
        where = f"{part}[{position}]"
        # an assistant message that calls tools may have no content key at all (TRL's tool-call data)
        has_content = isinstance(message, dict) and ("content" in message or bool(message.get("tool_calls")))
        if not has_content or "role" not in message:
            shown = f"has keys {sorted(message)}" if isinstance(message, dict) else f"is {type(message).__name__}"
            return Problem("format_error", MALFORMED, f"{where} {shown}")
        if message["role"] not in ROLES:
            return Problem("format_error", UNKNOWN_ROLE, f"{where} has role {message['role']!r}")
        if not _content_text(message.get("content")).strip() and not message.get("tool_calls"):
            return Problem("format_error", EMPTY_CONTENT, f"{where} ({message['role']}) is empty")
    if part != "prompt" and messages[-1]["role"] != "assistant":
        return Problem("format_error", NOT_ASSISTANT, f"{part} ends with a {messages[-1]['role']} message")
    return None


def _part_problem(value: Any, part: str, data_format: str) -> Problem | None:
    if value is None or (isinstance(value, (str, list)) and not value):
        return Problem("missing_field", MISSING, f"{part} is {'missing' if value is None else 'empty'}")
    if isinstance(value, str) and not value.strip():
        return Problem("missing_field", MISSING, f"{part} is blank")
    if isinstance(value, list) and data_format == MESSAGES:
        return _message_problem(value, part)
    found = value_format(value)
    if found != data_format:
        return Problem(
            "format_error", WRONG_TYPE, f"{part} is {found or type(value).__name__} but the data holds {data_format}"
        )
    return None


ExtractPrompt = Callable[[dict[str, Any]], dict[str, Any]]
#: Token ids of ``(prompt, chosen, rejected)`` per pair, as TRL tokenises them.
Tokenize = Callable[[Sequence["Pair"]], tuple[list[list[int]], list[list[int]], list[list[int]]]]


def _pair_or_problem(
    index: int, row: dict[str, Any], data_format: str, extract_prompt: ExtractPrompt
) -> Pair | Problem:
    """A usable pair (an implicit prompt extracted with ``extract_prompt``), or why the row is unusable."""
    implicit = "prompt" not in row
    for part in PARTS[1:] if implicit else PARTS:
        problem = _part_problem(row.get(part), part, data_format)
        if problem:
            return problem
    parts = row
    if implicit:
        parts = extract_prompt(row)
        if not parts["prompt"]:
            return Problem(
                "missing_field", MISSING, "prompt is empty: chosen and rejected share no beginning (implicit prompt)"
            )
    extra = {name: row[name] for name in TEMPLATE_COLUMNS if row.get(name) is not None}
    return Pair(index, parts["prompt"], parts["chosen"], parts["rejected"], extra)


def read_pairs(dataset: Any, extract_prompt: ExtractPrompt) -> tuple[list[Pair], dict[int, Problem]]:
    """The usable pairs of a dataset, as TRL reads them, and the problem of each other row (by row number)."""
    data_format = validate_preference_columns(dataset)
    pairs, problems = [], {}
    for index, row in enumerate(tqdm(_read_rows(dataset), desc="Reading pairs", leave=False, mininterval=1)):
        outcome = _pair_or_problem(index, row, data_format, extract_prompt)
        if isinstance(outcome, Problem):
            problems[index] = outcome
        else:
            pairs.append(outcome)
    return pairs, problems


def _finding(code: str, severity: str, message: str, rows: Sequence[int], excerpt: Callable[[int], str]) -> Finding:
    return Finding(code, severity, message, len(rows), [{"row": r, "excerpt": excerpt(r)} for r in rows[:MAX_EXAMPLES]])


def check_data(
    dataset: Any,
    *,
    extract_prompt: ExtractPrompt,
    tokenize: Tokenize | None = None,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    min_pairs: int = 100,
    min_prompt_diversity: float = 0.2,
    length_bias_threshold: float = 0.8,
    significance: float = 0.05,
    chat_template: Any = None,
) -> DataReport:
    """Check a preference dataset (``Dataset``, ``IterableDataset`` or list of row dicts) and report findings.

    Errors: missing/empty fields, malformed conversations, chosen identical to rejected, no pairs.
    Warnings: exact and near duplicates, contradictory pairs, near-identical chosen/rejected, fewer
    than ``min_pairs`` pairs, distinct prompts below ``min_prompt_diversity`` of the pairs, and a
    length bias (chosen longer than rejected in more than ``length_bias_threshold`` or less than
    ``1 - length_bias_threshold`` of the pairs, two-sided binomial test at ``significance``). With
    ``tokenize`` lengths are in tokens, and with ``max_length`` also the pairs TRL drops (prompt
    alone fills ``max_length`` under ``keep_start``), the pairs it truncates and those it truncates to
    identical sides (:func:`identical_after_truncation`). With ``chat_template`` (a
    tokenizer): the chat-template round trip of every conversational pair (:func:`template_round_trip`).
    """
    if truncation_mode not in TRUNCATION_MODES:
        raise ConfigError(f"truncation_mode must be one of {', '.join(TRUNCATION_MODES)}, got {truncation_mode!r}.")
    if max_length is not None and (tokenize is None or max_length < 1):
        raise ConfigError("max_length needs a tokenizer (to count tokens as TRL does) and must be a positive integer.")
    pairs, problems = read_pairs(dataset, extract_prompt)
    findings = _problem_findings(problems)
    findings += _pair_findings(pairs, min_pairs=min_pairs, min_prompt_diversity=min_prompt_diversity)
    lengths, unit = [(len(text_of(p.chosen)), len(text_of(p.rejected))) for p in pairs], "characters"
    if tokenize is not None and pairs:
        lengths, unit = _in_tokens(pairs, tokenize, findings, max_length=max_length, truncation_mode=truncation_mode)
    bias = _length_bias(pairs, lengths, unit, threshold=length_bias_threshold, significance=significance)
    findings += [bias] if bias else []
    report = DataReport(len(pairs) + len(problems), findings, template_sample=_template_sample(pairs))
    if chat_template is not None:
        _add_round_trip(report, pairs, chat_template)
    for finding in report.warnings:
        logger.warning("Data quality, %s (%d): %s", finding.code, finding.count, finding.message)
    return report


def _in_tokens(
    pairs: Sequence[Pair], tokenize: Tokenize, findings: list[Finding], *, max_length: int | None, truncation_mode: str
) -> tuple[list[tuple[int, int]], str]:
    """The pairs' (chosen, rejected) lengths in tokens; with ``max_length``, the truncation findings added."""
    ids = tokenize(pairs)
    prompt_lens, chosen_lens, rejected_lens = ([len(x) for x in part] for part in ids)
    if max_length is not None:
        rows = [p.row for p in pairs]
        counts = (prompt_lens, chosen_lens, rejected_lens)
        findings += token_findings(*counts, max_length=max_length, truncation_mode=truncation_mode, rows=rows)
        findings += identical_after_truncation(*ids, max_length=max_length, truncation_mode=truncation_mode, rows=rows)
    return list(zip(chosen_lens, rejected_lens)), "tokens"


def _problem_findings(problems: Mapping[int, Problem]) -> list[Finding]:
    """One error finding per kind of unusable row."""
    by_kind: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row, problem in problems.items():
        by_kind[(problem.code, problem.message)].append(row)
    return [
        _finding(code, "error", message, rows, lambda row: problems[row].detail)
        for (code, message), rows in by_kind.items()
    ]


@dataclass
class _Relations:
    """Rows related by their texts: identical sides, and (row, earlier row) for repeats and swaps."""

    identical: list[int] = field(default_factory=list)
    near_identical: list[int] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    near_duplicates: list[tuple[int, int]] = field(default_factory=list)
    contradictions: list[tuple[int, int]] = field(default_factory=list)
    prompts: Counter[str] = field(default_factory=Counter)
    prompt_rows: dict[str, int] = field(default_factory=dict)


def _relations(pairs: Sequence[Pair]) -> _Relations:
    found = _Relations()
    first_of: dict[tuple[str, str, str], int] = {}  # (prompt, chosen, rejected) → first row
    near_groups: defaultdict[tuple[str, ...], dict] = defaultdict(dict)  # normalised texts → {exact: first row}
    for pair in tqdm(pairs, desc="Comparing pairs", leave=False, mininterval=1):
        prompt, chosen, rejected = (_hashable(part) for part in (pair.prompt, pair.chosen, pair.rejected))
        normalised = tuple(_normalised(text_of(part)) for part in (pair.prompt, pair.chosen, pair.rejected))
        if chosen == rejected:
            found.identical.append(pair.row)
        elif normalised[1] == normalised[2]:
            found.near_identical.append(pair.row)
        exact, swapped = (prompt, chosen, rejected), (prompt, rejected, chosen)
        if exact in first_of:
            found.duplicates.append((pair.row, first_of[exact]))
        else:
            first_of[exact] = pair.row
            if swapped in first_of and swapped != exact:
                found.contradictions.append((pair.row, first_of[swapped]))
            group = near_groups[normalised]
            if group:
                found.near_duplicates.append((pair.row, next(iter(group.values()))))
            group[exact] = pair.row
        found.prompts[prompt] += 1
        found.prompt_rows.setdefault(prompt, pair.row)
    return found


def _pair_findings(pairs: Sequence[Pair], *, min_pairs: int, min_prompt_diversity: float) -> list[Finding]:
    """Findings on the usable pairs' texts: identical, duplicate and contradictory pairs, size, prompt diversity."""
    by_row = {p.row: p for p in pairs}
    found = _relations(pairs)

    def of(row: int) -> str:
        return _excerpt(by_row[row].chosen)

    def like(related: list[tuple[int, int]], relation: str) -> tuple[list[int], Callable[[int], str]]:
        earlier = dict(related)
        return [row for row, _ in related], lambda row: f"{relation} row {earlier[row]}: {of(row)}"

    kinds = [
        (
            "identical_pair",
            "error",
            "Chosen is identical to rejected: the pair carries no preference.",
            found.identical,
            of,
        ),
        ("near_identical_pair", "warning", NEAR_IDENTICAL, found.near_identical, of),
        ("duplicate_pair", "warning", DUPLICATE, *like(found.duplicates, "same as")),
        ("near_duplicate", "warning", NEAR_DUPLICATE, *like(found.near_duplicates, "like")),
        ("contradictory_pair", "warning", CONTRADICTORY, *like(found.contradictions, "swaps")),
    ]
    findings = [_finding(*kind) for kind in kinds if kind[3]]
    return findings + _size_findings(
        pairs, found, by_row, min_pairs=min_pairs, min_prompt_diversity=min_prompt_diversity
    )


def _size_findings(
    pairs: Sequence[Pair], found: _Relations, by_row: Mapping[int, Pair], *, min_pairs: int, min_prompt_diversity: float
) -> list[Finding]:
    """Too few pairs, and too few distinct prompts for the pairs."""
    findings = []
    if not pairs:
        findings.append(Finding("too_few_pairs", "error", "The dataset has no usable pairs.", 0))
    elif len(pairs) < min_pairs:
        message = f"Only {len(pairs)} usable pairs (fewer than {min_pairs}): expect noisy training and checks."
        findings.append(Finding("too_few_pairs", "warning", message, len(pairs)))
    prompts = found.prompts
    if pairs and len(prompts) / len(pairs) < min_prompt_diversity:
        message = (
            f"Low prompt diversity: {len(prompts)} distinct prompts for {len(pairs)} pairs "
            f"({len(prompts) / len(pairs):.0%}, below {min_prompt_diversity:.0%}); the model sees few situations."
        )
        examples = [
            {"row": found.prompt_rows[key], "excerpt": f"{n} pairs: {_excerpt(by_row[found.prompt_rows[key]].prompt)}"}
            for key, n in prompts.most_common(MAX_EXAMPLES)
        ]
        findings.append(Finding("low_prompt_diversity", "warning", message, len(prompts), examples))
    return findings


def _length_bias(
    pairs: Sequence[Pair], lengths: Sequence[tuple[int, int]], unit: str, *, threshold: float, significance: float
) -> Finding | None:
    """Chosen longer than rejected in a share of the pairs (ties left out) beyond ``threshold`` or below its
    complement, and significantly different from ½ by a two-sided exact binomial (sign) test."""
    from scipy.stats import binomtest

    longer = [p.row for p, (c, r) in zip(pairs, lengths) if c > r]
    shorter = [p.row for p, (c, r) in zip(pairs, lengths) if c < r]
    untied = len(longer) + len(shorter)
    if not untied:
        return None
    share = len(longer) / untied
    p_value = binomtest(len(longer), untied, 0.5).pvalue
    if not (share > threshold or share < 1 - threshold) or p_value >= significance:
        return None
    rows, word, lesson = (
        (longer, "longer", "longer is better") if share > 0.5 else (shorter, "shorter", "shorter is better")
    )
    length = {p.row: n for p, n in zip(pairs, lengths)}
    return _finding(
        "length_bias",
        "warning",
        f"Chosen is {word} than rejected in {len(rows)} of {untied} pairs of different length "
        f"({len(rows) / untied:.0%}, in {unit}; binomial test p={p_value:.2g}): the model may learn that {lesson} "
        "rather than what makes an answer good. Consider a length-normalised loss (sigmoid_norm, simpo), rdpo, "
        "TRL's ld_alpha, or rebalancing the data.",
        rows,
        lambda row: f"chosen {length[row][0]} vs rejected {length[row][1]} {unit}",
    )


def token_findings(
    prompt_lens: Sequence[int],
    chosen_lens: Sequence[int],
    rejected_lens: Sequence[int],
    *,
    max_length: int,
    truncation_mode: str = "keep_start",
    rows: Sequence[int] | None = None,
) -> list[Finding]:
    """What TRL 1.16 does to over-long pairs (``rows``: their row numbers, by default 0, 1, …).

    ``keep_start``: a pair whose prompt alone has ``max_length`` tokens or more is dropped; one with
    prompt + longer completion above ``max_length`` loses the end of its completion. ``keep_end``
    keeps the last ``max_length`` tokens, so such a pair loses the beginning of its prompt.
    """
    rows = list(range(len(prompt_lens))) if rows is None else list(rows)
    longest = [max(c, r) for c, r in zip(chosen_lens, rejected_lens)]
    position = {row: i for i, row in enumerate(rows)}

    def sizes(row: int) -> str:
        i = position[row]
        return f"prompt {prompt_lens[i]} + chosen {chosen_lens[i]} / rejected {rejected_lens[i]} tokens"

    over = [row for row, p, n in zip(rows, prompt_lens, longest) if p + n > max_length]
    if truncation_mode == "keep_end":
        message = (
            f"Pairs longer than max_length={max_length} tokens: truncation_mode=keep_end cuts their beginning, so "
            "the model sees the answers without the start of the prompt (or without any prompt)."
        )
        return [_finding("truncated_prompt", "warning", message, over, sizes)] if over else []
    dropped = [row for row, p in zip(rows, prompt_lens) if p >= max_length]
    truncated = [row for row in over if prompt_lens[position[row]] < max_length]
    findings = []
    if dropped:
        every = len(dropped) == len(rows)
        message = (
            f"{len(dropped)} of {len(rows)} pairs have a prompt of max_length={max_length} tokens or more: TRL "
            "drops them (truncation_mode=keep_start)"
            + (", leaving nothing to train on." if every else ".")
            + " Raise max_length or shorten the prompts."
        )
        findings.append(_finding("prompt_too_long", "error" if every else "warning", message, dropped, sizes))
    if truncated:
        message = (
            f"Pairs longer than max_length={max_length} tokens: TRL cuts the end of their chosen or rejected "
            "completion, so the model never sees how it ends (which may be where the preference lies)."
        )
        findings.append(_finding("truncated_completion", "warning", message, truncated, sizes))
    return findings


def identical_after_truncation(
    prompt_ids: Sequence[Sequence[int]],
    chosen_ids: Sequence[Sequence[int]],
    rejected_ids: Sequence[Sequence[int]],
    *,
    max_length: int,
    truncation_mode: str = "keep_start",
    rows: Sequence[int] | None = None,
) -> list[Finding]:
    """Pairs whose two sides TRL 1.16's collator truncates to the same tokens (``prompt + completion`` cut to
    ``max_length`` from the end or the start): they carry no preference, as identical pairs do.

    An error when more than half of the pairs are such (the loss would sit near log 2 with no gradient), else a
    warning.
    """
    rows = list(range(len(prompt_ids))) if rows is None else list(rows)
    keep_start = truncation_mode == "keep_start"
    cut = slice(None, max_length) if keep_start else slice(-max_length, None)

    def kept(prompt: Sequence[int], completion: Sequence[int]) -> tuple[list[int], list[int]]:
        return (list(prompt) + list(completion))[cut], ([0] * len(prompt) + [1] * len(completion))[cut]

    pairs = [  # keep_start: TRL drops a pair whose prompt alone fills max_length (token_findings names those)
        pair
        for pair in zip(rows, prompt_ids, chosen_ids, rejected_ids)
        if not (keep_start and len(pair[1]) >= max_length)
    ]
    same = [
        row
        for row, prompt, chosen, rejected in pairs
        if list(chosen) != list(rejected) and kept(prompt, chosen) == kept(prompt, rejected)
    ]
    if not same:
        return []
    message = (
        f"{len(same)} of {len(pairs)} pairs have chosen and rejected identical after truncation to max_length="
        f"{max_length} tokens (truncation_mode={truncation_mode}): like identical pairs they carry no preference "
        "(their loss stays at log 2, with no gradient). Raise max_length or shorten the prompts."
    )
    severity = "error" if 2 * len(same) > len(pairs) else "warning"
    return [_finding("identical_after_truncation", severity, message, same, lambda row: f"row {row}")]


def _template_sample(pairs: Sequence[Pair]) -> list[Pair]:
    """The first :data:`TEMPLATE_SAMPLE_PER_SHAPE` conversational pairs of each shape
    (what a chat template branches on)."""
    taken: Counter[str] = Counter()
    sample = []
    for pair in pairs:
        if isinstance(pair.prompt, list):
            key = shape(pair.prompt, pair.chosen, pair.rejected, pair.extra)
            taken[key] += 1
            if taken[key] <= TEMPLATE_SAMPLE_PER_SHAPE:
                sample.append(pair)
    return sample


def template_round_trip(pairs: Sequence[Pair], tokenizer: Any) -> tuple[Finding | None, str]:
    """The chat-template round trip of conversational ``pairs`` (:mod:`dpo_plugin.template_round_trip`): an error
    finding naming the rows whose prompt alone is not the start of the whole conversation (with the first differing
    tokens), and a one-line note of what was checked."""
    conversations = [p for p in pairs if isinstance(p.prompt, list)]
    if not conversations:
        return None, "Chat-template round trip: does not apply (plain-text data is rendered by no chat template)."
    if getattr(tokenizer, "chat_template", None) is None:
        message = "The tokenizer has no chat template, so conversational pairs cannot be tokenised for training."
        return Finding(
            "chat_template_round_trip", "error", message, len(conversations)
        ), "Chat-template round trip: no template."
    details = {}
    for pair in tqdm(conversations, desc="Chat-template round trip", leave=False, mininterval=1):
        try:
            found = mismatch(tokenizer, pair.prompt, (pair.chosen, pair.rejected), pair.extra)
        except Exception as error:  # a template that raises (e.g. on a role it does not know)
            found = f"the chat template failed: {type(error).__name__}: {error}"
        if found:
            details[pair.row] = found
    note = (
        f"Chat-template round trip: {len(conversations) - len(details)} of {len(conversations)} conversational pairs "
        "render their prompt alone as the start of the whole conversation."
    )
    if not details:
        return None, note
    return _finding("chat_template_round_trip", "error", TEMPLATE_ROUND_TRIP, list(details), details.__getitem__), note


def _add_round_trip(report: DataReport, pairs: Sequence[Pair], tokenizer: Any) -> None:
    finding, note = template_round_trip(pairs, tokenizer)
    report.findings += [finding] if finding else []
    report.notes.append(note)


def ensure_template_round_trip(report: DataReport | None, processing_class: Any, *, allow_errors: bool = False) -> None:
    """Before training: the round trip on the report's :attr:`~DataReport.template_sample` with the run's tokenizer;
    a mismatch is an error (:func:`ensure_clean`), or a warning with ``allow_errors``. A vision-language processor
    (it holds a tokenizer) renders images its own way: not checked."""
    if (
        report is None
        or not report.template_sample
        or processing_class is None
        or hasattr(processing_class, "tokenizer")
    ):
        return
    finding, note = template_round_trip(report.template_sample, processing_class)
    logger.info(
        "%s (a few pairs of each conversation shape; `dpo-plugin check-data --model M` checks every pair)", note
    )
    if finding is not None:
        report.findings.append(finding)
        ensure_clean(DataReport(report.rows, [finding]), allow_errors=allow_errors)
