"""The ``reward_model`` judge: a sequence-classification reward model scores each answer; the higher score wins."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .base import Judge, non_negative, positive_int, prompt_text
from .models import load_judge_model, right_padded


def conversation(tokenizer: Any, prompt: Any, completion: str) -> tuple[str, bool]:
    """``(text, templated)``: prompt + completion through the tokenizer's chat template when it has one.

    With a template, the prompt (a string, or chat messages) is the user turn and the completion the
    assistant turn; without one, the prompt's text followed by the completion.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
        return text, True
    return prompt_text(prompt) + completion, False


class RewardModelJudge(Judge):
    """Scores each (prompt, answer) with a reward model's single logit; ``|score difference| ≤ tie_margin`` is a tie.

    ``model``: hub id, local folder or a ``*ForSequenceClassification`` object with ``num_labels = 1``
    (then ``tokenizer`` too). Scoring is batched (``batch_size``), without gradients, right-padded,
    truncated from the left to ``max_length`` tokens so the answer's end is always scored.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int = 8,
        max_length: int = 1024,
        tie_margin: float = 0.0,
        device: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__()
        self.batch_size, self.max_length = (
            positive_int("batch_size", batch_size),
            positive_int("max_length", max_length),
        )
        self.tie_margin = non_negative("tie_margin", tie_margin)
        self.model, self.tokenizer = load_judge_model(
            model, tokenizer, "AutoModelForSequenceClassification", device=device, dtype=dtype
        )
        labels = getattr(self.model.config, "num_labels", 1)
        if labels != 1:
            raise ConfigError(
                f"judge: reward_model needs a reward model with one output score (num_labels=1); this one has {labels}."
            )
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def scores(self, prompts: list[Any], answers: list[str]) -> list[float]:
        """The reward of each (prompt, answer)."""
        import torch

        texts = [conversation(self.tokenizer, p, a) for p, a in zip(prompts, answers)]
        device = next(self.model.parameters()).device
        out: list[float] = []
        with torch.no_grad(), right_padded(self.tokenizer) as tokenizer:
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                batch = tokenizer(
                    [text for text, _ in chunk],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=not chunk[0][1],  # a chat template already wrote the special tokens
                ).to(device)
                out.extend(self.model(**batch).logits[:, 0].float().tolist())
        return out

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        try:
            scores = self.scores(prompts + prompts, first + second)
        except Exception as error:  # the whole batch fails, with the reason
            self.fail(f"reward model failed: {type(error).__name__}: {error}")
            return [None] * len(prompts)
        return self.compare(scores[: len(prompts)], scores[len(prompts) :], self.tie_margin)
