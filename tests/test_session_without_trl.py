"""The session is host-free: it trains inside a plain transformers ``Trainer`` with no TRL in the loop.

The host here is what a second host has to write: a backend (tokenisation, a padded collator, the
per-token head: :class:`~dpo_plugin.forward.heads.LogitsHead`) and a ``Trainer`` subclass that hands
its steps to a :class:`~dpo_plugin.session.DPOSession`. Its loss is checked against the DPO formula
computed from the model's own logits, and the logits head against TRL's fused head.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trainer_fixtures import policy_and_reference, preference_rows
from transformers import Trainer, TrainingArguments

from dpo_plugin.forward.heads import METRIC_FIELDS, WPO_FIELD, LogitsHead
from dpo_plugin.forward.logps import ForwardSettings, forward_pairs
from dpo_plugin.session import Connection, DPOSession
from dpo_plugin.settings import LossRequest, PluginSettings


class PlainBackend:
    """Tokenisation by the tokenizer (the EOS after each completion), right-padded ``[chosen; rejected]`` rows."""

    head = LogitsHead()

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def padded_collator(
        self, pad_token_id: int, *, max_length=None, truncation_mode="keep_start", pad_to_multiple_of=None
    ):
        def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
            sequences = [r["prompt_ids"] + r[side] for side in ("chosen_ids", "rejected_ids") for r in rows]
            masks = [
                [0] * len(r["prompt_ids"]) + [1] * len(r[side]) for side in ("chosen_ids", "rejected_ids") for r in rows
            ]
            width = max(map(len, sequences))
            pad = [width - len(s) for s in sequences]
            return {
                "input_ids": torch.tensor([s + [pad_token_id] * n for s, n in zip(sequences, pad)]),
                "attention_mask": torch.tensor([[1] * len(s) + [0] * n for s, n in zip(sequences, pad)]),
                "completion_mask": torch.tensor([m + [0] * n for m, n in zip(masks, pad)]),
            }

        return collate

    def prepare_pairs(self, dataset, tokenizer, *, max_length=None, truncation_mode="keep_start", name="eval"):
        def tokenise(row):
            ids = {"prompt_ids": tokenizer(row["prompt"])["input_ids"]}
            for side in ("chosen", "rejected"):
                ids[f"{side}_ids"] = tokenizer(row[side])["input_ids"] + [tokenizer.eos_token_id]
            return ids

        return dataset.map(tokenise, remove_columns=dataset.column_names)

    def extract_prompt(self, example):
        return example


class PlainDPOTrainer(Trainer):
    """A transformers ``Trainer`` running a DPO session: the whole of a host's trainer glue."""

    def __init__(
        self, model, ref_model, args, train_dataset, tokenizer, settings: PluginSettings, request: LossRequest
    ):
        backend = PlainBackend(tokenizer)
        self.session = DPOSession(settings, request, backend, output_dir=args.output_dir)
        self.session.check_data(train_dataset, None)
        held = self.session.prepare_reference(
            model,
            ref_model,
            self.session.run_facts(peft=False, base_weights_change=False, args=args, train_dataset=train_dataset),
        )
        self.session.connect(self, Connection(ForwardSettings(max_length=128), lambda: held))
        super().__init__(
            model=model,
            args=args,
            train_dataset=backend.prepare_pairs(train_dataset, tokenizer),
            data_collator=backend.padded_collator(tokenizer.pad_token_id),
            processing_class=tokenizer,
        )
        self.session.attach(base_weights_change=False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return self.session.compute_loss(model, inputs, training=self.model.training, router_coef=None)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self.session.after_backward(loss, self.model)
        return loss

    def log(self, logs, start_time=None):
        self.session.extend_logs(logs, "train" if self.model.training else "eval")
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint=None, **kwargs):
        output = super().train(self.session.before_train(resume_from_checkpoint), **kwargs)
        self.session.after_train()
        return output


def _completion_logp(model, tokenizer, prompt: str, completion: str) -> torch.Tensor:
    """Σ log p(completion + EOS | prompt), straight from the model's logits."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = prompt_ids + tokenizer(completion)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logprobs = logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    return logprobs[len(prompt_ids) - 1 :].sum()


@pytest.mark.parametrize("packing", ["none", "prefix_sharing"])
def test_a_session_trains_in_a_plain_transformers_trainer(tokenizer, tmp_path, packing):
    policy, reference = policy_and_reference(len(tokenizer))
    rows = preference_rows(4)
    beta = 0.1
    margins = [
        (
            _completion_logp(policy, tokenizer, r["prompt"], r["chosen"])
            - _completion_logp(reference, tokenizer, r["prompt"], r["chosen"])
        )
        - (
            _completion_logp(policy, tokenizer, r["prompt"], r["rejected"])
            - _completion_logp(reference, tokenizer, r["prompt"], r["rejected"])
        )
        for r in rows
    ]
    expected = -F.logsigmoid(beta * torch.stack(margins)).mean().item()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    settings = PluginSettings(reference="path", packing=packing)
    request = LossRequest(("sigmoid",), beta=beta)
    trainer = PlainDPOTrainer(policy, reference, args, Dataset.from_list(rows), tokenizer, settings, request)
    assert trainer.session.layout == packing and trainer.session.reference_strategy.name == "path"
    trainer.train()
    first, second = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert first["loss"] == pytest.approx(expected, rel=1e-4)
    assert first["rewards/margins"] == pytest.approx(beta * torch.stack(margins).mean().item(), rel=1e-3, abs=1e-5)
    assert second["loss"] != first["loss"]  # the policy trained: its second step sees new weights


def test_the_logits_head_matches_trls_fused_head(tokenizer):
    """Every per-sequence sum the training forward uses: TRL 1.16's fused head against the logits of TRL 1.14."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from dpo_plugin.hosts.trl.internals import FusedHead, fused_head_available, prepare_pairs, strip_fused_head

    if not fused_head_available():
        pytest.skip("this TRL has no fused LM head (it came in TRL 1.16)")
    from trl.trainer.utils import add_fused_lm_head

    policy, _ = policy_and_reference(len(tokenizer))
    pairs = prepare_pairs(Dataset.from_list(preference_rows(6)), tokenizer, max_length=128)
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)([pairs[i] for i in range(6)])
    fields = (*METRIC_FIELDS, WPO_FIELD)
    settings = ForwardSettings(ld_alpha=0.5, max_length=128)
    with torch.no_grad():
        by_logits = forward_pairs(policy, batch, settings, LogitsHead(), fields=fields)
        add_fused_lm_head(policy, outputs=("log_probs", *fields))
        fused = forward_pairs(policy, batch, settings, FusedHead(), fields=fields)
    strip_fused_head(policy)
    for name in ("logps", "plain", "entropy", "mean_logits", "top1", "wpo_mean"):
        torch.testing.assert_close(getattr(by_logits, name), getattr(fused, name), rtol=1e-5, atol=1e-5, msg=name)


def test_the_logits_head_sums_a_half_precision_model_in_float32(tokenizer):
    """A bf16 model's log-probs summed from its logits in float32 (as TRL 1.14's CUDA kernel does), not in bf16."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from dpo_plugin.hosts.trl.internals import prepare_pairs

    policy, _ = policy_and_reference(len(tokenizer))
    policy = policy.to(torch.bfloat16)
    pairs = prepare_pairs(Dataset.from_list(preference_rows(4)), tokenizer, max_length=128)
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)([pairs[i] for i in range(4)])
    with torch.no_grad():
        got = forward_pairs(policy, batch, ForwardSettings(max_length=128), LogitsHead()).logps
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    mask = batch["completion_mask"][:, 1:].bool()
    per_token = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    expected = (per_token * mask).sum(1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
