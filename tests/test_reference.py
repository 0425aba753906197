"""Reference strategies: same reference log-probs across strategies, caching, TR-DPO syncs, bad input."""

from __future__ import annotations

import contextlib
import copy
import logging

import pytest
import torch
from peft import LoraConfig
from test_strategy_without_trainer import HalfReference
from trainer_fixtures import config_kwargs, preference_dataset

import dpo_plugin
from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.trl import DPOConfig, DPOTrainer

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _trainer(model, tokenizer, tmp_path, *, peft_config=None, ref_model=None, **overrides):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), **overrides))
    return DPOTrainer(
        model,
        ref_model=ref_model,
        args=args,
        train_dataset=preference_dataset(),
        eval_dataset=preference_dataset(4),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def _batch(trainer, rows=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(rows)])


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


def test_copy_adapter_and_precomputed_agree(make_model, tokenizer, tmp_path, cache_dir):
    copy_trainer = _trainer(make_model(), tokenizer, tmp_path, reference="copy")
    adapter_trainer = _trainer(make_model(), tokenizer, tmp_path, reference="adapter", peft_config=LoraConfig(**LORA))
    pre_trainer = _trainer(
        make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
    )
    expected = copy_trainer.session.reference_strategy.logps(_batch(copy_trainer))
    for trainer in (adapter_trainer, pre_trainer):
        got = trainer.session.reference_strategy.logps(_batch(trainer))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-5)
    # and they are the policy's own log-probs before training (policy == reference at step 0)
    policy = copy_trainer.session.scorer.logps(_batch(copy_trainer))
    for a, b in zip(policy, expected):
        torch.testing.assert_close(a, b)


def test_precomputed_reuses_its_cache(make_model, tokenizer, tmp_path, cache_dir, caplog):
    first = _trainer(
        make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
    )
    assert first.session.reference_strategy.computed_pairs > 0
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)  # train and eval
    second = _trainer(
        make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
    )
    assert second.session.reference_strategy.computed_pairs == 0  # the reference model was never called
    assert first.train_dataset["ref_chosen_logps"] == second.train_dataset["ref_chosen_logps"]
    second.train()  # trains from the cached columns


@pytest.mark.parametrize("fault", ["a file", "a full disk"])
def test_a_cache_that_cannot_be_written_is_a_warning_and_training_goes_on(
    fault, make_model, tokenizer, tmp_path, caplog
):
    """The cache is an optimisation: a pass whose result cannot be written is kept in memory, never thrown away."""
    from fault_injection import can_mount, small_filesystem

    written = _trainer(
        make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": str(tmp_path / "ok")}
    )
    if fault == "a file":
        blocked, context = tmp_path / "cache-file", contextlib.nullcontext()
        blocked.write_text("not a folder")
        reason = "it is a file, not a folder"
    elif can_mount():
        context = small_filesystem(tmp_path / "disk", 4096)
        blocked, reason = tmp_path / "disk" / "cache", "the disk is full (about "
    else:
        pytest.skip("needs to mount a small tmpfs (root)")
    with context, caplog.at_level(logging.WARNING):
        if fault == "a full disk":
            (tmp_path / "disk" / "filler").write_bytes(b"\0" * 4096)  # the disk holds one page: now full
        trainer = _trainer(
            make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": str(blocked)}
        )
        trainer.train()
    assert f"The reference log-probs for train could not be cached in {blocked} ({reason}" in caplog.text
    assert "training goes on with them in memory" in caplog.text and trainer.state.global_step == 8 // 4 * 3
    assert trainer.session.reference_strategy.computed_pairs == written.session.reference_strategy.computed_pairs


def test_precomputed_rejects_a_tampered_cache(make_model, tokenizer, tmp_path, cache_dir, caplog):
    first = _trainer(
        make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
    )
    path = first.session.reference_strategy.cache_files[0]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="dpo_plugin"):
        second = _trainer(
            make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
        )
    assert "stale or corrupted" in caplog.text and "checksum" in caplog.text
    assert second.session.reference_strategy.computed_pairs > 0
    assert first.train_dataset["ref_chosen_logps"] == second.train_dataset["ref_chosen_logps"]
    path.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="dpo_plugin"):
        _trainer(make_model(), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir})
    assert "unreadable" in caplog.text


def test_precomputed_fingerprint_follows_the_weights(make_model, tokenizer, tmp_path, cache_dir):
    _trainer(
        make_model(seed=0), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
    )
    other = _trainer(
        make_model(seed=1), tokenizer, tmp_path, reference="precomputed", reference_params={"cache_dir": cache_dir}
    )
    assert other.session.reference_strategy.computed_pairs > 0
    assert len(list((tmp_path / "cache").iterdir())) == 4


def test_precomputed_trl_flag_maps_onto_the_strategy(make_model, tokenizer, tmp_path, cache_dir):
    trainer = _trainer(
        make_model(), tokenizer, tmp_path, precompute_ref_log_probs=True, reference_params={"cache_dir": cache_dir}
    )
    assert trainer.session.reference_strategy.name == "precomputed" and trainer.ref_model is None
    assert "ref_chosen_logps" in trainer.train_dataset.column_names


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_sync_updates_the_reference_exactly_at_the_sync_steps(make_model, tokenizer, tmp_path, peft):
    from transformers import TrainerCallback

    alpha = 0.5
    snapshots = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            ref = trainer.ref_model
            snapshots.append((state.global_step, {n: p.detach().clone() for n, p in ref.named_parameters()}))

    trainer = _trainer(
        make_model(),
        tokenizer,
        tmp_path,
        peft_config=LoraConfig(**LORA) if peft else None,
        reference="sync",
        reference_params={"sync_steps": 2, "alpha": alpha},
        max_steps=4,
        learning_rate=5e-2,
    )
    initial = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    policy_at = {}

    class PolicyRecord(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            from dpo_plugin.reference.model import effective_weights

            with effective_weights(trainer.accelerator.unwrap_model(trainer.model)) as weights:
                policy_at[state.global_step] = {n: w.detach().clone() for n, w in weights.items()}

    # callbacks run in order: record the policy, then the strategy syncs, then the reference is recorded
    trainer.callback_handler.callbacks.insert(0, PolicyRecord())
    trainer.add_callback(Record())
    trainer.train()
    steps = [s for s, _ in snapshots]
    assert steps == [1, 2, 3, 4]
    name = "model.layers.0.self_attn.q_proj.weight"
    previous = initial
    for step, weights in snapshots:
        if step % 2 == 0:
            expected = alpha * policy_at[step][name] + (1 - alpha) * previous[name]
            torch.testing.assert_close(weights[name], expected, rtol=1e-5, atol=1e-6)
        else:
            assert all(torch.equal(weights[n], previous[n]) for n in weights), f"reference changed at step {step}"
        previous = weights
    assert trainer.session.reference_strategy.syncs == 2


def test_path_reference_loads_a_saved_model(make_model, tokenizer, tmp_path):
    saved = make_model(seed=3)
    saved.save_pretrained(tmp_path / "sft")
    trainer = _trainer(
        make_model(), tokenizer, tmp_path, reference="path", reference_params={"model": str(tmp_path / "sft")}
    )
    expected = _trainer(make_model(), tokenizer, tmp_path, ref_model=copy.deepcopy(saved)).session.reference_strategy
    batch = _batch(trainer)
    for a, b in zip(trainer.session.reference_strategy.logps(batch), expected.logps(batch)):
        torch.testing.assert_close(a, b)


def test_path_reference_bad_input(make_model, tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        _trainer(
            make_model(), tokenizer, tmp_path, reference="path", reference_params={"model": str(tmp_path / "missing")}
        )
    from dpo_plugin.testing.tiny import tiny_model

    tiny_model(100).save_pretrained(tmp_path / "other-vocab")
    with pytest.raises(ConfigError, match="vocabulary of 100 tokens"):
        _trainer(
            make_model(),
            tokenizer,
            tmp_path,
            reference="path",
            reference_params={"model": str(tmp_path / "other-vocab")},
        )
    with pytest.raises(ConfigError, match="needs the model"):
        _trainer(make_model(), tokenizer, tmp_path, reference="path")


def test_strategy_bad_input(make_model, tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="needs a PEFT adapter"):
        _trainer(make_model(), tokenizer, tmp_path, reference="adapter")
    with pytest.raises(ConfigError, match="does not take \\['cache_dir'\\].*sync_steps"):
        _trainer(make_model(), tokenizer, tmp_path, reference="sync", reference_params={"cache_dir": "x"})
    with pytest.raises(ConfigError, match="need a reference model"):
        DPOConfig(**config_kwargs(reference="none", loss_type=["sigmoid"]))
    with pytest.raises(UnknownNameError, match="Did you mean 'precomputed'"):
        DPOConfig(**config_kwargs(reference="precompute"))
    with pytest.raises(ConfigError, match="reference: copy builds its own"):
        _trainer(make_model(), tokenizer, tmp_path, reference="copy", ref_model=make_model())
    with pytest.raises(ConfigError, match="precompute_ref_log_probs"):
        DPOConfig(**config_kwargs(reference="copy", precompute_ref_log_probs=True))


def test_auto_picks_adapter_with_peft_and_copy_without(make_model, tokenizer, tmp_path):
    """A run that sees part of the data (1 step of 4 of the 8 pairs) keeps the reference in memory."""
    with_peft = _trainer(make_model(), tokenizer, tmp_path, peft_config=LoraConfig(**LORA), max_steps=1)
    assert (
        with_peft.session.reference_strategy.describe() == "auto → adapter (the policy with its PEFT adapters disabled)"
    )
    assert with_peft.ref_model is None and with_peft.session.reference_strategy.memory_bytes() == 0
    full = _trainer(make_model(), tokenizer, tmp_path, max_steps=1)
    assert full.session.reference_strategy.describe().startswith("auto → copy")
    params = sum(p.numel() for p in full.ref_model.parameters())
    buffers = sum(b.numel() for b in full.ref_model.buffers())  # the rotary-embedding frequencies
    assert full.session.reference_strategy.memory_bytes() == (params + buffers) * 4  # float32


@pytest.mark.parametrize(
    "overrides, chosen",
    [
        ({"max_steps": 2}, "precomputed"),  # 2 steps × 4 pairs: every one of the 8 pairs
        ({"num_train_epochs": 1.0}, "precomputed"),
        ({"max_steps": 1}, "copy"),
        ({"num_train_epochs": 0.5}, "copy"),
        ({"max_steps": 2, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 1}, "copy"),
        (
            {"max_steps": 2, "checks": ["reward_margin"]},
            "copy",
        ),  # built in memory: no reference to reload for the checks
    ],
)
def test_auto_precomputes_when_the_run_visits_every_pair(
    overrides, chosen, make_model, tokenizer, tmp_path, caplog, cache_dir
):
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        trainer = _trainer(
            make_model(),
            tokenizer,
            tmp_path,
            reference_params={"cache_dir": cache_dir} if chosen == "precomputed" else None,
            **overrides,
        )
    assert trainer.session.reference_strategy.delegate.name == chosen
    if chosen == "precomputed":
        assert "the run visits every training pair at least once and the reference is frozen" in caplog.text
        assert trainer.ref_model is None and "ref_chosen_logps" in trainer.train_dataset.column_names


def test_auto_precomputes_with_peft_even_with_checks(make_model, tokenizer, tmp_path, cache_dir):
    """With PEFT the checks reach the reference by disabling the adapters, so precomputing is safe."""
    trainer = _trainer(
        make_model(),
        tokenizer,
        tmp_path,
        peft_config=LoraConfig(**LORA),
        max_steps=2,
        checks=["reward_margin"],
        reference_params={"cache_dir": cache_dir},
    )
    assert (
        trainer.session.reference_strategy.delegate.name == "precomputed"
        and trainer.session.reference_strategy.delegate.adapters_off
    )
    trainer.train()
    assert trainer.check_report["checks"]["reward_margin"]["metrics"]["n"] == 4


def test_a_third_party_strategy_is_chosen_the_same_way(make_model, tokenizer, tmp_path, register_plugin):
    calls = []

    class CountingHalf(HalfReference):
        def logps(self, batch):
            calls.append(len(batch["input_ids"]))
            return super().logps(batch)

    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_reference_strategies(register):
            register("half", CountingHalf)

    register_plugin(Plugin, "half-plugin")
    assert dpo_plugin.reference_strategies()["half"].plugin == "half-plugin"
    trainer = _trainer(
        make_model(), tokenizer, tmp_path, reference="half", reference_params={"factor": 0.25}, max_steps=1
    )
    trainer.train()
    assert calls and trainer.session.reference_strategy.factor == 0.25


def _existing_adapter(make_model, seed):
    """A PEFT model with a trained-looking adapter (its B matrices not zero), as one loads an SFT adapter."""
    from peft import get_peft_model

    model = get_peft_model(make_model(), LoraConfig(**LORA))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return model


def test_the_cache_key_holds_the_frozen_adapter_of_an_existing_one(make_model, tokenizer, tmp_path, cache_dir):
    """Training an existing adapter: the reference is the base plus a frozen copy of it, so another adapter on
    the same base must not reuse the first one's cached log-probs."""
    expected = {}
    for seed in (1, 2):
        adapter_ref = _trainer(
            _existing_adapter(make_model, seed), tokenizer, tmp_path / f"a{seed}", reference="adapter"
        )
        expected[seed] = torch.cat(adapter_ref.session.reference_strategy.logps(_batch(adapter_ref)))
    assert (expected[1] - expected[2]).abs().max() > 1e-3  # the two adapters give different references
    for seed in (1, 2):
        trainer = _trainer(
            _existing_adapter(make_model, seed),
            tokenizer,
            tmp_path / f"p{seed}",
            reference="precomputed",
            reference_params={"cache_dir": cache_dir},
        )
        assert trainer.session.reference_strategy.computed_pairs > 0  # computed, not the other adapter's cache
        torch.testing.assert_close(
            torch.cat(trainer.session.reference_strategy.logps(_batch(trainer))).float(),
            expected[seed].float(),
            rtol=1e-5,
            atol=1e-4,
        )


def test_a_reloaded_reference_that_is_not_the_cached_one_is_refused(make_model, tokenizer, tmp_path, cache_dir):
    """The policy was changed in memory after loading: the folder it names is not the reference any more."""
    from datasets import Dataset
    from trainer_fixtures import preference_rows
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "init"
    make_model().save_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        next(policy.parameters()).add_(0.1)  # e.g. a LoRA merged in memory
    trainer = _trainer(
        policy,
        tokenizer,
        tmp_path / "run",
        reference="precomputed",
        reference_params={"cache_dir": cache_dir},
        max_steps=1,
    )
    trainer.train()
    with pytest.raises(
        ConfigError, match="the reloaded model's weights differ from the reference the log-probs were computed from"
    ):
        trainer.evaluate(eval_dataset=Dataset.from_list(preference_rows(12)[8:]))
