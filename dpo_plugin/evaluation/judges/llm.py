"""The ``llm`` judge: a local causal LM asked which answer is better, read from its next-token probabilities."""

from __future__ import annotations

from typing import Any

from .base import Judge, prompt_text
from .models import load_judge_model

TEMPLATE = (
    "Which response answers the question better? Reply with A or B.\n\n"
    "Question:\n{prompt}\n\nResponse A:\n{first}\n\nResponse B:\n{second}\n\nThe better response is"
)


def _label_ids(tokenizer: Any, label: str) -> list[int]:
    """Single-token encodings of a label, with and without a leading space."""
    ids = []
    for text in (label, " " + label):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) == 1:
            ids.append(encoded[0])
    if not ids:
        raise ValueError(f"the tokenizer has no single token for {label!r}")
    return ids


class LLMJudge(Judge):
    """Deterministic: compares log p("A") and log p("B") as the next token (best of "A"/" A"); within tie_margin, a tie."""

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        template: str = TEMPLATE,
        tie_margin: float = 0.0,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__()
        self.model, self.tokenizer = load_judge_model(model, tokenizer, "AutoModelForCausalLM", device=device, dtype=dtype)
        self.template, self.tie_margin, self.batch_size = template, tie_margin, batch_size
        self.a_ids, self.b_ids = _label_ids(self.tokenizer, "A"), _label_ids(self.tokenizer, "B")

    def _question(self, prompt: Any, first: str, second: str) -> str:
        text = self.template.format(prompt=prompt_text(prompt), first=first, second=second)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        import torch

        questions = [self._question(p, a, b) for p, a, b in zip(prompts, first, second)]
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        verdicts: list[float | None] = []
        try:
            with torch.no_grad():
                for start in range(0, len(questions), self.batch_size):
                    batch = self.tokenizer(questions[start : start + self.batch_size], return_tensors="pt", padding=True).to(self.model.device)
                    logps = torch.log_softmax(self.model(**batch).logits[:, -1].float(), dim=-1)
                    a = logps[:, self.a_ids].max(dim=-1).values
                    b = logps[:, self.b_ids].max(dim=-1).values
                    verdicts.extend(0.5 if abs(x - y) <= self.tie_margin else (0.0 if x > y else 1.0) for x, y in zip(a.tolist(), b.tolist()))
        except Exception as error:
            self.fail(f"judge LM failed: {type(error).__name__}: {error}")
            verdicts.extend([None] * (len(questions) - len(verdicts)))
        finally:
            self.tokenizer.padding_side = side
        return verdicts
