"""Reference strategies through the forward seam alone: a tiny model, a scorer, no trainer.

The log-probabilities are checked against an independent computation from the model's own logits.
"""

from __future__ import annotations

import torch
from trainer_fixtures import preference_rows

from dpo_plugin.forward import pair_scorer
from dpo_plugin.reference.base import ReferenceStrategy, RunFacts
from dpo_plugin.reference.model import CopyReference

EOS = "<|end|>"


class HalfReference(ReferenceStrategy):
    """A third-party toy: the reference log-probs are the policy's, scaled by ``factor``."""

    name = "half"

    def __init__(self, *, factor: float = 0.5):
        super().__init__()
        self.factor = factor

    def logps(self, batch):
        chosen, rejected = self.scorer.logps(batch)
        return chosen * self.factor, rejected * self.factor


def _completion_logp(model, tokenizer, prompt: str, completion: str) -> float:
    """Σ log p(completion token | everything before it), from the model's plain logits (no TRL)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion + EOS)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # byte-level: the prompt is a prefix
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    return logprobs[len(prompt_ids) - 1 :].sum().item()


def _expected(model, tokenizer, rows):
    chosen = [_completion_logp(model, tokenizer, r["prompt"], r["chosen"]) for r in rows]
    rejected = [_completion_logp(model, tokenizer, r["prompt"], r["rejected"]) for r in rows]
    return torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)


def test_a_third_party_strategy_with_a_tiny_model_and_no_trainer(make_model, tokenizer):
    policy, rows = make_model(), preference_rows(4)
    scorer = pair_scorer(policy, tokenizer, {"train": rows}, max_length=256, device="cpu")
    strategy = HalfReference(factor=0.25)
    strategy.setup(scorer, strategy.prepare(policy, RunFacts()))
    batch = next(scorer.batches(scorer.splits()["train"], batch_size=4))
    chosen, rejected = strategy.logps(batch)
    expected_chosen, expected_rejected = _expected(policy, tokenizer, rows)
    torch.testing.assert_close(chosen.double(), 0.25 * expected_chosen.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rejected.double(), 0.25 * expected_rejected.double(), rtol=1e-4, atol=1e-4)


def test_copy_reference_stays_fixed_while_the_policy_changes(make_model, tokenizer):
    policy, rows = make_model(), preference_rows(3)
    scorer = pair_scorer(policy, tokenizer, {"train": rows}, max_length=256, device="cpu")
    strategy = CopyReference()
    strategy.setup(scorer, scorer.place(strategy.prepare(policy, RunFacts())))
    split = scorer.splits()["train"]
    before = strategy.score(split)
    expected_chosen, expected_rejected = _expected(policy, tokenizer, rows)
    torch.testing.assert_close(torch.tensor(before.chosen).double(), expected_chosen, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(before.rejected).double(), expected_rejected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(0.05 * torch.randn_like(param))
    after = strategy.score(split)
    policy_now = scorer.score(split)
    assert (before.chosen == after.chosen).all() and (before.rejected == after.rejected).all()
    assert abs(policy_now.chosen - before.chosen).max() > 1e-2  # the policy itself moved
    # token counts: completion bytes + EOS, as TRL counts them
    assert before.chosen_tokens.tolist() == [len(r["chosen"].encode()) + 1 for r in rows]
