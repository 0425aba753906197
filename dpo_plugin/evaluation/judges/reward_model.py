"""The ``reward_model`` judge: a sequence-classification model scores each answer; the higher score wins."""

from __future__ import annotations

from typing import Any

from .base import Judge, conversation
from .models import load_judge_model


class RewardModelJudge(Judge):
    """Scores ``prompt + answer`` with a reward model (its first logit); |score difference| ≤ tie_margin is a tie."""

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
        self.model, self.tokenizer = load_judge_model(
            model, tokenizer, "AutoModelForSequenceClassification", device=device, dtype=dtype
        )
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length, self.tie_margin = batch_size, max_length, tie_margin

    def scores(self, prompts: list[Any], answers: list[str]) -> list[float]:
        """The reward of each (prompt, answer)."""
        import torch

        texts = [conversation(self.tokenizer, p, a) for p, a in zip(prompts, answers)]
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                ).to(self.model.device)
                out.extend(self.model(**batch).logits[:, 0].float().tolist())
        return out

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        try:
            a, b = self.scores(prompts, first), self.scores(prompts, second)
        except Exception as error:  # reported as failures of the whole batch
            self.fail(f"reward model failed: {type(error).__name__}: {error}")
            return [None] * len(prompts)
        return [0.5 if abs(x - y) <= self.tie_margin else (0.0 if x > y else 1.0) for x, y in zip(a, b)]
