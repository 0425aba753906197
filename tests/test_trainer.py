"""The plugin DPOTrainer end to end on a tiny model: in-memory models, metrics, bad input."""

from __future__ import annotations

import logging

import pytest
import torch
import trl
from datasets import Dataset
from trainer_fixtures import config_kwargs, preference_dataset

from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.trl import DPOConfig, DPOTrainer


def _train(model, tokenizer, tmp_path, steps=2, **overrides):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=steps, **overrides))
    trainer = DPOTrainer(model, args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    trainer.train()
    return trainer


def test_in_memory_model_trains_where_trl_crashes(make_model, tokenizer, tmp_path):
    """A model never saved, without ref_model: TRL 1.16 tries to reload it from config._name_or_path."""
    with pytest.raises((OSError, ValueError)):
        trl.DPOTrainer(
            make_model(),
            args=trl.DPOConfig(**config_kwargs(output_dir=str(tmp_path))),
            train_dataset=preference_dataset(),
            processing_class=tokenizer,
        )
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _train(model, tokenizer, tmp_path, steps=1)  # 4 of the 8 pairs: auto keeps a copy in memory
    assert trainer.session.reference_strategy.describe().startswith("auto → copy")
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "the policy did not train"
    reference = trainer.ref_model
    for name, param in reference.named_parameters():
        assert torch.equal(param, before[name]), f"reference weight {name} changed"


def test_reference_copy_stays_fixed_while_policy_trains(make_model, tokenizer, tmp_path):
    """The copy trap: TRL's fused head patches forward in a closure; the copy must not run the live policy."""
    model = make_model()
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=3, learning_rate=5e-2, reference="copy"))
    trainer = DPOTrainer(model, args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    ids = torch.tensor([tokenizer("What is 2 + 2?")["input_ids"]])
    reference = trainer.ref_model
    with torch.no_grad():
        ref_logits = reference(input_ids=ids).logits.clone()
        ref_generated = reference.generate(ids, max_new_tokens=5, do_sample=False)
        policy_logits = trainer.model(input_ids=ids).logits.clone()
    trainer.train()
    with torch.no_grad():
        assert torch.equal(reference(input_ids=ids).logits, ref_logits)
        assert torch.equal(reference.generate(ids, max_new_tokens=5, do_sample=False), ref_generated)
        assert not torch.allclose(trainer.model(input_ids=ids).logits, policy_logits)


def test_metrics_are_logged_per_component(make_model, tokenizer, tmp_path):
    trainer = _train(make_model(), tokenizer, tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    logged = trainer.state.log_history[0]
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "loss/sigmoid",
        "loss/sft",
        "logratio/chosen",
        "logratio/rejected",
        "entropy",
        "mean_token_accuracy",
        "logits/chosen",
    ):
        assert key in logged, key
    # the total is the weighted sum of the components (one step, logged as it happened)
    assert logged["loss"] == pytest.approx(logged["loss/sigmoid"] + 0.5 * logged["loss/sft"], rel=1e-4)
    # at step 1 the policy is the reference: DPO's loss is log 2 and the rewards are 0
    assert logged["loss/sigmoid"] == pytest.approx(0.693147, abs=1e-5)
    assert logged["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_loss_metrics_are_namespaced(make_model, tokenizer, tmp_path):
    trainer = _train(make_model(), tokenizer, tmp_path, loss_type=["orpo"])
    logged = trainer.state.log_history[0]
    assert {"orpo/nll", "orpo/log_odds_ratio", "loss/orpo"} <= logged.keys()
    assert "logratio/chosen" not in logged  # reference-free: no reference forward


def test_reference_free_losses_skip_the_reference(make_model, tokenizer, tmp_path):
    trainer = _train(make_model(), tokenizer, tmp_path, loss_type=["simpo"])
    assert trainer.ref_model is None
    assert trainer.session.reference_strategy.describe() == "auto → none (reference-free)"
    logged = trainer.state.log_history[0]
    # rewards come from SimPO itself: β·(mean log-prob per token), β = 2
    assert logged["rewards/chosen"] < 0 and "logratio/chosen" not in logged


def test_mixing_reference_free_and_reference_losses_is_allowed(make_model, tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        trainer = _train(make_model(), tokenizer, tmp_path, steps=1, loss_type=["simpo", "sigmoid"])
    assert trainer.ref_model is not None
    assert any("the reference forward runs for the latter" in r.getMessage() for r in caplog.records)
    assert "auto → copy" in caplog.text


def test_kl_warn_warns_once(make_model, tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dpo_plugin"):
        _train(make_model(), tokenizer, tmp_path, steps=4, learning_rate=0.5, kl_warn=1e-4)
    assert sum("drifted from the reference" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, "loss_weights"),
        ({"loss_type": ["sigmoid"], "label_smoothing": 0.1}, "cdpo"),
        ({"loss_type": ["simpo"], "loss_params": {"simpo": {"gama": 0.3}}}, "gamma"),
        ({"loss_type": ["sigmoid"], "loss_params": {"simpo": {"gamma": 0.3}}}, "not in loss_type"),
        ({"loss_type": ["sigmoid"], "beta": 0.0}, "beta"),
        ({"loss_type": ["robust"], "label_smoothing": 0.5}, "[0, 0.5)"),
        ({"loss_type": ["nca_pair"], "f_divergence_type": "forward_kl"}, "nca_pair"),
        ({"loss_type": ["aot"], "use_weighting": True}, "use_weighting"),
        ({"loss_type": ["sigmoid"], "reference": "none"}, "reference-free"),
        ({"loss_type": ["exo_pair"], "label_smoothing": 0.0}, "label_smoothing > 0"),
    ],
)
def test_bad_config_fails_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=".*") as info:
        DPOConfig(**config_kwargs(**overrides))
    assert message in str(info.value)


def test_unknown_loss_name_lists_the_closest():
    with pytest.raises(UnknownNameError) as info:
        DPOConfig(**config_kwargs(loss_type=["sigmod"]))
    assert "Did you mean 'sigmoid'" in str(info.value) and "simpo" in str(info.value)


def test_bf16_on_a_machine_without_support_says_what_to_set():
    if torch.cuda.is_available():
        pytest.skip("this machine supports bf16")
    with pytest.raises(ConfigError, match="bf16: false"):
        DPOConfig(output_dir="unused")


def test_loss_param_precedence(make_model, tokenizer, tmp_path):
    """loss_params > a DPOConfig field set explicitly > the loss's own default."""
    assert DPOConfig(**config_kwargs(loss_type=["simpo"])).loss_mix().components[0].params == {
        "beta": 2.0,
        "gamma": 0.5,
    }
    assert DPOConfig(**config_kwargs(loss_type=["simpo"], beta=0.5)).loss_mix().components[0].params["beta"] == 0.5
    mix = DPOConfig(**config_kwargs(loss_type=["simpo"], beta=0.5, loss_params={"simpo": {"beta": 3}})).loss_mix()
    assert mix.components[0].params["beta"] == 3.0


def test_dataset_without_preference_columns_names_the_columns(make_model, tokenizer, tmp_path):
    bad = Dataset.from_list([{"question": "q", "answer": "a"}] * 4)
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path)))
    with pytest.raises(ConfigError) as info:
        DPOTrainer(make_model(), args=args, train_dataset=bad, processing_class=tokenizer)
    assert "question" in str(info.value) and "answer" in str(info.value) and "chosen" in str(info.value)


def test_training_refuses_data_with_errors(make_model, tokenizer, tmp_path):
    rows = preference_dataset().to_list()
    rows[2]["rejected"] = rows[2]["chosen"]
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="identical_pair"):
        DPOTrainer(make_model(), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), allow_data_errors=True))
    trainer = DPOTrainer(make_model(), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert [f.code for f in trainer.session.data_report.errors] == ["identical_pair"]


def test_logged_rewards_use_the_beta_the_loss_trains_with(tokenizer, tmp_path):
    """rewards/* = β·log-ratio with the loss's β, whether β comes from `beta` or from loss_params."""
    import copy

    from trainer_fixtures import policy_and_reference

    policy, reference = policy_and_reference(len(tokenizer))
    first_logs = []
    for overrides in ({"beta": 0.5}, {"loss_params": {"sigmoid": {"beta": 0.5}}}, {"beta": 0.1}):
        args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=1, **overrides))
        trainer = DPOTrainer(
            copy.deepcopy(policy),
            ref_model=copy.deepcopy(reference),
            args=args,
            train_dataset=preference_dataset(),
            processing_class=tokenizer,
        )
        trainer.train()
        first_logs.append(trainer.state.log_history[0])
    field_beta, param_beta, small_beta = first_logs
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert abs(small_beta[key]) > 1e-4
        assert param_beta[key] == pytest.approx(field_beta[key], rel=1e-5)
        assert field_beta[key] == pytest.approx(5 * small_beta[key], rel=1e-4)


def test_pairs_trl_drops_or_truncates_are_logged_and_none_left_is_an_error(make_model, tokenizer, tmp_path, caplog):
    rows = preference_dataset().to_list()
    prompt_lengths = [len(tokenizer(row["prompt"])["input_ids"]) for row in rows]
    limit = sorted(prompt_lengths)[4]  # prompts of this many tokens or more fill max_length: TRL drops those pairs
    dropped = sum(n >= limit for n in prompt_lengths)
    assert 0 < dropped < len(rows)
    with caplog.at_level(logging.WARNING, logger="dpo_plugin"):
        trainer = DPOTrainer(
            make_model(),
            args=DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_length=limit)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    assert len(trainer.train_dataset) == len(rows) - dropped
    messages = [r.getMessage() for r in caplog.records]
    assert (
        f"TRL dropped {dropped} of {len(rows)} training pairs whose prompt alone fills max_length={limit}." in messages
    )
    # kept pairs whose prompt + completion exceed the limit lose the end of their completion
    assert any(m.startswith("Data quality: Pairs longer than max_length") for m in messages)

    shortest = min(prompt_lengths)
    with pytest.raises(
        ConfigError, match=rf"TRL dropped all 8 training pairs: each prompt alone fills max_length={shortest}"
    ):
        DPOTrainer(
            make_model(),
            args=DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_length=shortest)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )


def test_completions_truncated_to_the_same_tokens_are_refused_before_the_reference_pass(
    make_model, tokenizer, tmp_path
):
    """Prompts so long that each completion keeps one token, the same on both sides: the loss would sit at log 2
    (the newcomer's 0.6931 with a gradient norm of 1e-8). Refused before a reference log-prob is computed."""
    rows = [
        {"prompt": f"Question {i}: " + "x" * 40, "chosen": " yes, right", "rejected": " yo, wrong"} for i in range(8)
    ]
    prompt_tokens = len(tokenizer(rows[0]["prompt"])["input_ids"])
    cache = tmp_path / "cache"
    args = DPOConfig(
        **config_kwargs(
            output_dir=str(tmp_path / "out"),
            max_length=prompt_tokens + 2,  # " y" is the only completion token left on both sides
            reference="precomputed",
            reference_params={"cache_dir": str(cache)},
        )
    )
    with pytest.raises(ConfigError, match=r"\[identical_after_truncation, 8 row\(s\)\] 8 of 8 pairs have chosen and"):
        DPOTrainer(make_model(), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert not cache.exists()  # no reference pass ran


def test_a_model_reused_by_a_second_trainer_gets_a_copy_that_stays_fixed(make_model, tokenizer, tmp_path):
    """A model an earlier trainer patched with TRL's fused head:
    the second trainer's copy must not run the live policy."""
    model = make_model()
    _train(model, tokenizer, tmp_path / "first", steps=1, reference="copy")
    args = DPOConfig(
        **config_kwargs(output_dir=str(tmp_path / "second"), max_steps=3, learning_rate=5e-2, reference="copy")
    )
    trainer = DPOTrainer(model, args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    ids = torch.tensor([tokenizer("What is 2 + 2?")["input_ids"]])
    with torch.no_grad():
        before = trainer.ref_model(input_ids=ids).logits.clone()
    trainer.train()
    with torch.no_grad():
        assert torch.equal(trainer.ref_model(input_ids=ids).logits, before)


def test_fields_changed_after_construction_reach_the_loss_mix(make_model, tokenizer, tmp_path):
    """TRL reads its fields when the trainer is built; so do we: args.beta and args.loss_type set afterwards count."""
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=1))
    args.beta, args.loss_type = 0.5, ["ipo"]
    trainer = DPOTrainer(make_model(), args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    assert trainer.session.loss_mix.names == ["ipo"] and trainer.session.loss_mix.components[0].params["beta"] == 0.5
    args.loss_type = ["simpo"]  # a loss with its own β: 0.5 differs from TRL's default, so it was set
    assert args.loss_mix().components[0].params["beta"] == 0.5
