"""The chat-template round trip: a prompt rendered alone, as the model sees it when answering,
must start the whole conversation.

TRL 1.16 tokenises a conversational pair twice: the prompt alone with the generation prompt (what
the model is given at inference) and the whole conversation, prompt + completion; the completion
starts where the two diverge. A template that renders the prompt differently alone than inside the
conversation (a system prompt repeated or dropped: TRL issues 1541 and 1930, Mistral's system prompt
kept only before the last user turn; tokens merging across the boundary) makes TRL cut the end of the
prompt: the model is trained on a context it never sees at inference. :func:`mismatch` renders a pair
both ways, as TRL does (the row's ``tools`` and ``chat_template_kwargs`` passed on), and describes the
first differing tokens. Plain-text data is rendered by no template: the round trip does not apply.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Tokens shown on each side of a mismatch.
SHOWN_TOKENS = 6


def render(tokenizer: Any, messages: list[Any], extra: Mapping[str, Any], *, generation_prompt: bool) -> list[int]:
    """The token ids of ``messages`` through the tokenizer's chat template,
    as TRL 1.16's ``DPOTrainer`` renders them."""
    tools = extra.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    options = extra.get("chat_template_kwargs") or {}
    options = json.loads(options) if isinstance(options, str) else options
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt, tools=tools, **options
    )
    return list(rendered["input_ids"])


def common_prefix(ids: Sequence[int], other: Sequence[int]) -> int:
    """How many leading tokens ``ids`` and ``other`` share."""
    for position, (a, b) in enumerate(zip(ids, other)):
        if a != b:
            return position
    return min(len(ids), len(other))


def _shown(tokenizer: Any, ids: Sequence[int], start: int) -> str:
    """The tokens ``ids[start : start + SHOWN_TOKENS]``, each decoded (… when more follow; ∅ for none)."""
    window = list(ids[start : start + SHOWN_TOKENS])
    if not window:
        return "∅ (nothing)"
    more = " …" if len(ids) > start + SHOWN_TOKENS else ""
    return " ".join(repr(tokenizer.decode([token])) for token in window) + more


def mismatch(
    tokenizer: Any, prompt: list[Any], completions: Iterable[list[Any]], extra: Mapping[str, Any]
) -> str | None:
    """Where the prompt alone stops being the start of prompt + completion (for each completion), or None when it is."""
    alone = render(tokenizer, prompt, extra, generation_prompt=True)
    for completion in completions:
        whole = render(tokenizer, prompt + completion, extra, generation_prompt=False)
        split = common_prefix(alone, whole)
        if split < len(alone):
            return (
                f"token {split} of {len(alone)}: the prompt alone has {_shown(tokenizer, alone, split)}, the whole "
                f"conversation has {_shown(tokenizer, whole, split)}"
            )
    return None


def shape(prompt: Any, chosen: Any, rejected: Any, extra: Mapping[str, Any]) -> str:
    """What a chat template branches on: the roles of each part, whether tools are given, the template options."""
    roles = [[m.get("role") if isinstance(m, Mapping) else None for m in part] for part in (prompt, chosen, rejected)]
    return json.dumps(
        [roles, extra.get("tools") is not None, extra.get("chat_template_kwargs")], sort_keys=True, default=str
    )
