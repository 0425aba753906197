"""The ``llm`` judge: a local causal LM asked which answer is better, read from its next-token log-probabilities."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .base import (
    COMPARISON_TEMPLATE,
    Judge,
    check_template,
    non_negative,
    positive_int,
    prompt_text,
)
from .models import load_judge_model, right_padded


def label_token_ids(tokenizer: Any, label: str) -> list[int]:
    """The ids of the single-token encodings of ``label`` and ``" " + label`` (one or both;
    they differ by tokenizer)."""
    ids = []
    for text in (label, " " + label):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    if not ids:
        raise ConfigError(f"judge: llm: the tokenizer encodes neither {label!r} nor {' ' + label!r} as one token.")
    return ids


class LLMJudge(Judge):
    """Asks a causal LM ``template`` (response A = first, B = second) and reads the next token; no sampling.

    Score of a label = the larger next-token log-probability of its encodings ("A" / " A"); the
    verdict is the label with the higher score, a tie when they are within ``tie_margin`` nats. The
    question goes through the tokenizer's chat template (as a user turn) when it has one. Batched,
    right-padded, without gradients; the log-probabilities are read at each question's last token.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        template: str = COMPARISON_TEMPLATE,
        tie_margin: float = 0.0,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__()
        self.template = check_template(template)
        self.tie_margin = non_negative("tie_margin", tie_margin)
        self.batch_size = positive_int("batch_size", batch_size)
        self.model, self.tokenizer = load_judge_model(
            model, tokenizer, "AutoModelForCausalLM", device=device, dtype=dtype
        )
        self.a_ids, self.b_ids = label_token_ids(self.tokenizer, "A"), label_token_ids(self.tokenizer, "B")

    def question(self, prompt: Any, first: str, second: str) -> tuple[str, bool]:
        """``(text, templated)``: the filled-in template, as a chat user turn when the tokenizer has a chat template."""
        text = self.template.format(prompt=prompt_text(prompt), first=first, second=second)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
        return text, False

    def label_logps(self, prompts: list[Any], first: list[str], second: list[str]) -> tuple[list[float], list[float]]:
        """The next-token log-probabilities of "A" and of "B" after each question."""
        import torch

        questions = [self.question(p, a, b) for p, a, b in zip(prompts, first, second)]
        device = next(self.model.parameters()).device
        a_scores: list[float] = []
        b_scores: list[float] = []
        with torch.no_grad(), right_padded(self.tokenizer) as tokenizer:
            for start in range(0, len(questions), self.batch_size):
                chunk = questions[start : start + self.batch_size]
                batch = tokenizer(
                    [text for text, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=not chunk[0][1]
                ).to(device)
                last = batch["attention_mask"].sum(dim=1) - 1
                logits = self.model(**batch).logits[torch.arange(len(chunk), device=device), last]
                logps = torch.log_softmax(logits.float(), dim=-1)
                a_scores.extend(logps[:, self.a_ids].max(dim=-1).values.tolist())
                b_scores.extend(logps[:, self.b_ids].max(dim=-1).values.tolist())
        return a_scores, b_scores

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        try:
            a_scores, b_scores = self.label_logps(prompts, first, second)
        except Exception as error:  # the whole batch fails, with the reason
            self.fail(f"judge LM failed: {type(error).__name__}: {error}")
            return [None] * len(prompts)
        return self.compare(a_scores, b_scores, self.tie_margin)
