"""Reference strategies with their options: dtype for ``copy``/``path``, ``path`` training against a saved model,
``adapter`` with an existing PEFT adapter (the frozen "ref" copy), ``precomputed`` from another saved model.

Expected log-probs are computed here independently of the trainer: a plain forward of a separately built or
loaded model, ``log_softmax`` and a sum over the completion tokens of the collated batch.
"""

from __future__ import annotations

import copy
import gc
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from trainer_fixtures import config_kwargs, preference_dataset
from transformers import AutoModelForCausalLM, PreTrainedModel
from trl.trainer.dpo_trainer import DataCollatorForPreference

from dpo_plugin.trl import DPOConfig, DPOTrainer

BETA = 0.5
BF16_TOL = {"rtol": 1e-2, "atol": 0.1}  # summed log-probs of ~5–60 tokens, around −30 to −200


def _trainer(model, tokenizer, tmp_path, **overrides):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path / "out"), **overrides))
    return DPOTrainer(
        model,
        args=args,
        train_dataset=preference_dataset(),
        eval_dataset=preference_dataset(4),
        processing_class=tokenizer,
    )


def _full_batch(trainer, split=None):
    """All pairs of a split (default: the 8 training pairs) collated by TRL's collator in dataset order (padded).

    Strategies take a padded batch whatever layout the run trains with (here packed by default).
    """
    split = trainer.train_dataset if split is None else split
    collator = DataCollatorForPreference(
        pad_token_id=trainer.processing_class.pad_token_id, max_length=trainer.args.max_length
    )
    return collator([split[i] for i in range(len(split))])


def independent_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs under ``model``: a plain forward, float32 log-softmax, masked gather."""
    ids, mask = batch["input_ids"], batch["completion_mask"]
    with torch.no_grad():
        logits = model.eval()(input_ids=ids, attention_mask=batch["attention_mask"]).logits.float()
    per_token = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    sums = (per_token * mask[:, 1:]).sum(dim=1)
    return sums.chunk(2)


def _assert_pairs_close(got, expected, **tol):
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.float(), b.float(), **tol)


def _max_diff(got, expected) -> float:
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(got, expected, strict=True))


@pytest.fixture
def saved_reference(make_model, tmp_path):
    """A model different from the policy's initialisation (seed 3), saved in float32."""
    path = tmp_path / "sft"
    make_model(seed=3).save_pretrained(path)
    return path


# -- 1. dtype of the copy and path references ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("strategy", ["copy", "path"])
def test_reference_dtype(strategy, dtype, make_model, tokenizer, tmp_path, saved_reference):
    params = {"dtype": dtype} if strategy == "copy" else {"dtype": dtype, "model": str(saved_reference)}
    policy = make_model()
    # the float32 model the reference stands for, built separately
    source = (
        copy.deepcopy(policy)
        if strategy == "copy"
        else AutoModelForCausalLM.from_pretrained(saved_reference, dtype=torch.float32)
    )
    trainer = _trainer(policy, tokenizer, tmp_path, reference=strategy, reference_params=params, max_steps=2)

    ref = trainer.ref_model
    assert ref is not trainer.model
    assert {p.dtype for p in ref.parameters()} == {getattr(torch, dtype)}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}  # the policy keeps its own dtype
    assert not any(p.requires_grad for p in ref.parameters())
    numel = sum(p.numel() for p in ref.parameters())
    assert trainer.session.reference_strategy.memory_bytes() >= numel * (2 if dtype == "bfloat16" else 4)
    assert trainer.session.reference_strategy.memory_bytes() < numel * (2 if dtype == "bfloat16" else 4) * 1.01

    batch = _full_batch(trainer)
    expected = independent_logps(source, batch)
    got = trainer.session.reference_strategy.logps(batch)
    if dtype == "float32":
        _assert_pairs_close(got, expected, rtol=1e-5, atol=1e-4)
    else:
        _assert_pairs_close(got, expected, **BF16_TOL)
        assert _max_diff(got, expected) > 1e-4  # really computed in bfloat16, not a float32 model
    before = {n: p.detach().clone() for n, p in ref.named_parameters()}

    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.equal(p, before[n]) for n, p in ref.named_parameters())  # the reference never trains
    _assert_pairs_close(trainer.session.reference_strategy.logps(batch), got, rtol=0, atol=0)


# -- 2. path: training against a saved model that is not the policy's initialisation ------------------------------


def test_path_reference_trains_against_the_saved_model(make_model, tokenizer, tmp_path, saved_reference):
    policy = make_model(seed=0)
    initial_policy = copy.deepcopy(policy)
    saved = AutoModelForCausalLM.from_pretrained(saved_reference)
    # one batch of all 8 pairs per step, so step 1's loss is the mean over the whole (shuffled) dataset
    trainer = _trainer(
        policy,
        tokenizer,
        tmp_path,
        reference="path",
        reference_params={"model": str(saved_reference)},
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=1e-2,
        beta=BETA,
    )
    batch = _full_batch(trainer)
    ref_chosen, ref_rejected = independent_logps(saved, batch)
    pol_chosen, pol_rejected = independent_logps(initial_policy, batch)
    assert (ref_chosen - pol_chosen).abs().max() > 0.1  # the saved reference is not the policy's initialisation
    _assert_pairs_close(
        trainer.session.reference_strategy.logps(batch), (ref_chosen, ref_rejected), rtol=1e-5, atol=1e-4
    )

    trainer.train()
    first = trainer.state.log_history[0]
    assert first["step"] == 1
    # the DPO sigmoid loss and rewards of step 1, against the saved model's log-probs
    chosen_ratio, rejected_ratio = pol_chosen - ref_chosen, pol_rejected - ref_rejected
    loss = -torch.nn.functional.logsigmoid(BETA * (chosen_ratio - rejected_ratio)).mean()
    assert abs(loss.item() - math.log(2)) > 1e-2  # not the loss against the policy's own initialisation (ln 2)
    assert first["loss"] == pytest.approx(loss.item(), abs=1e-4)
    assert first["rewards/chosen"] == pytest.approx(BETA * chosen_ratio.mean().item(), abs=1e-4)
    assert first["rewards/rejected"] == pytest.approx(BETA * rejected_ratio.mean().item(), abs=1e-4)
    assert len([e for e in trainer.state.log_history if "loss" in e]) == 3

    # the reference stays the saved model; the policy moved
    _assert_pairs_close(
        trainer.session.reference_strategy.logps(batch), (ref_chosen, ref_rejected), rtol=1e-5, atol=1e-4
    )
    trained = trainer.session.scorer.logps(batch)
    assert _max_diff(trained, (pol_chosen, pol_rejected)) > 1e-2


# -- 3. adapter: training an existing PEFT adapter --------------------------------------------------------------

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}


def test_adapter_reference_with_an_existing_adapter_is_a_frozen_copy_of_it(make_model, tokenizer, tmp_path):
    # an "existing" adapter: a LoRA whose B is not zero, saved and loaded back trainable
    pretrained = get_peft_model(make_model(), LoraConfig(**LORA))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in pretrained.named_parameters():
            if "lora_B" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    pretrained.save_pretrained(tmp_path / "existing")
    policy = PeftModel.from_pretrained(make_model(), tmp_path / "existing", is_trainable=True)
    initial = copy.deepcopy(policy)
    base = make_model()  # the model with no adapter at all

    trainer = _trainer(policy, tokenizer, tmp_path, reference="adapter", max_steps=3, learning_rate=1e-2)
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert set(model.peft_config) == {"default", "ref"}
    assert "frozen copy of the initial adapter" in trainer.session.reference_strategy.describe()
    assert trainer.ref_model is None
    # the "ref" adapter: q_proj (32→32) and v_proj (32→16) in 2 blocks, r·(in + out) float32 values each
    ref_params = {n: p for n, p in model.named_parameters() if ".ref." in n}
    assert sum(p.numel() for p in ref_params.values()) == 4 * ((32 + 32) + (32 + 16)) * 2 == 896
    assert not any(p.requires_grad for p in ref_params.values())
    assert trainer.session.reference_strategy.memory_bytes() == 896 * 4
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n and "lora_" in n for n in trainable)

    batch = _full_batch(trainer)
    expected = independent_logps(initial, batch)
    without_adapter = independent_logps(base, batch)
    assert _max_diff(expected, without_adapter) > 1e-2  # the adapter matters: "adapters off" would be wrong
    reference_before = trainer.session.reference_strategy.logps(batch)
    _assert_pairs_close(reference_before, expected, rtol=1e-5, atol=1e-4)
    _assert_pairs_close(trainer.session.scorer.logps(batch), expected, rtol=1e-5, atol=1e-4)
    ref_before = {n: p.detach().clone() for n, p in ref_params.items()}
    default_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}

    trainer.train()
    assert all(torch.equal(p, ref_before[n]) for n, p in ref_params.items())
    assert any(not torch.equal(p, default_before[n]) for n, p in model.named_parameters() if n in trainable)
    _assert_pairs_close(trainer.session.reference_strategy.logps(batch), reference_before, rtol=0, atol=1e-6)
    assert _max_diff(trainer.session.scorer.logps(batch), expected) > 1e-2  # the policy moved
    # the active adapter is still the trained one after the reference forwards
    assert model.active_adapter == "default"


# -- 4. precomputed from another saved model ----------------------------------------------------------------------


def _alive_models_from(folder) -> list:
    """Models alive in this process that were loaded from ``folder`` (after a garbage collection)."""
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, PreTrainedModel) and o.config._name_or_path == str(folder)]


def test_precomputed_from_a_saved_model_then_frees_it(make_model, tokenizer, tmp_path, saved_reference):
    trainer = _trainer(
        make_model(),
        tokenizer,
        tmp_path,
        reference="precomputed",
        reference_params={"model": str(saved_reference), "cache_dir": str(tmp_path / "cache")},
        max_steps=2,
    )
    strategy = trainer.session.reference_strategy
    assert strategy.computed_pairs > 0 and trainer.ref_model is None
    # the loaded reference is gone: nothing holds it, and no model loaded from that folder is alive
    assert strategy.source is None and strategy.memory_bytes() == 0
    assert _alive_models_from(saved_reference) == []

    saved = AutoModelForCausalLM.from_pretrained(saved_reference)
    assert any(o is saved for o in _alive_models_from(saved_reference))  # the scan sees such a model while it lives
    batch = _full_batch(trainer)
    chosen, rejected = independent_logps(saved, batch)
    cached = (
        torch.tensor(trainer.train_dataset["ref_chosen_logps"]),
        torch.tensor(trainer.train_dataset["ref_rejected_logps"]),
    )
    _assert_pairs_close(cached, (chosen, rejected), rtol=1e-5, atol=1e-4)
    _assert_pairs_close(strategy.logps(batch), (chosen, rejected), rtol=1e-5, atol=1e-4)
    # not the policy's own log-probs
    assert _max_diff(cached, trainer.session.scorer.logps(batch)) > 0.1
    eval_batch = _full_batch(trainer, trainer.eval_dataset)
    _assert_pairs_close(
        (
            torch.tensor(trainer.eval_dataset["ref_chosen_logps"]),
            torch.tensor(trainer.eval_dataset["ref_rejected_logps"]),
        ),
        independent_logps(saved, eval_batch),
        rtol=1e-5,
        atol=1e-4,
    )
    trainer.train()
    assert len([e for e in trainer.state.log_history if "loss" in e]) == 2
