"""The drop-in rule, side by side with TRL 1.16: what TRL's DPOConfig/DPOTrainer accept, ours accept with the
same results; the documented refusals are the exceptions (data errors, a non-default value no chosen loss uses,
non-finite training)."""

from __future__ import annotations

import logging

import pytest
import torch
import trl
from datasets import Dataset, IterableDataset
from trainer_fixtures import config_kwargs, policy_and_reference, preference_dataset, preference_rows

from dpo_plugin.errors import ConfigError
from dpo_plugin.trl import DPOConfig, DPOTrainer


def _pair(tokenizer, tmp_path, **settings):
    """TRL's trainer and ours on the same model copies, reference and data."""
    trainers = {}
    for name, (trainer_class, config_class) in {
        "trl": (trl.DPOTrainer, trl.DPOConfig),
        "ours": (DPOTrainer, DPOConfig),
    }.items():
        policy, reference = policy_and_reference(len(tokenizer))
        args = config_class(**config_kwargs(output_dir=str(tmp_path / name), **settings))
        trainers[name] = trainer_class(
            policy, ref_model=reference, args=args, train_dataset=preference_dataset(), processing_class=tokenizer
        )
    return trainers


def _loss(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.train()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


@pytest.mark.parametrize(
    "settings",
    [
        {"loss_type": ["sigmoid"], "label_smoothing": 0.0},
        {"loss_type": ["hinge"], "label_smoothing": 0.0},
        {"loss_type": ["ipo"], "label_smoothing": 0.0, "f_divergence_type": "reverse_kl"},
        {"loss_type": ["sft"], "beta": 0.1},
        {"loss_type": ["sigmoid"], "discopop_tau": 0.05, "f_alpha_divergence_coef": 0.5},
    ],
    ids=["sigmoid", "hinge", "ipo", "sft", "discopop-fields"],
)
def test_trls_own_defaults_spelled_out_are_accepted(settings, tokenizer, tmp_path):
    trainers = _pair(tokenizer, tmp_path, **settings)
    assert _loss(trainers["ours"]) == pytest.approx(_loss(trainers["trl"]), rel=1e-5)


def test_a_non_default_value_no_chosen_loss_uses_is_still_refused():
    with pytest.raises(ConfigError, match="label_smoothing=0.1 is set, but none of the chosen losses .* cdpo"):
        DPOConfig(**config_kwargs(loss_type=["sigmoid"], label_smoothing=0.1))


def test_evaluate_with_a_dataset_not_given_at_construction_under_precompute(tokenizer, tmp_path):
    """TRL computes the reference log-probs of a dataset passed to evaluate(); so does ours, with the same loss."""
    held_out = Dataset.from_list(preference_rows(12)[8:])
    results = {}
    for name, trainer in _pair(tokenizer, tmp_path, precompute_ref_log_probs=True).items():
        results[name] = trainer.evaluate(eval_dataset=held_out)["eval_loss"]
    assert results["ours"] == pytest.approx(results["trl"], rel=1e-5)


def test_evaluate_after_full_fine_tuning_under_precompute_reloads_what_trl_cannot(make_model, tokenizer, tmp_path):
    """TRL refuses (its reference is gone after training); ours scores the new split against the initial model."""
    from dpo_plugin.testing.tiny import save_tiny

    folder = save_tiny(tmp_path / "init")
    held_out = Dataset.from_list(preference_rows(12)[8:])
    settings = config_kwargs(output_dir=str(tmp_path / "t"), precompute_ref_log_probs=True, max_steps=1)
    theirs = trl.DPOTrainer(
        str(folder), args=trl.DPOConfig(**settings), train_dataset=preference_dataset(), processing_class=tokenizer
    )
    theirs.train()
    with pytest.raises(ValueError, match="Cannot compute reference log-probs for a dataset passed to `evaluate\\(\\)`"):
        theirs.evaluate(eval_dataset=held_out)
    ours = DPOTrainer(
        str(folder),
        args=DPOConfig(**{**settings, "output_dir": str(tmp_path / "o")}),
        train_dataset=preference_dataset(),
        processing_class=tokenizer,
    )
    ours.train()
    loss = ours.evaluate(eval_dataset=held_out)["eval_loss"]
    assert torch.isfinite(torch.tensor(loss))


def _iterable(rows):
    def generate():
        yield from rows

    return IterableDataset.from_generator(generate)


def test_precompute_with_an_iterable_dataset_is_a_clear_error_as_in_trl(tokenizer, tmp_path):
    rows, messages = preference_rows(8), []
    for trainer_class, config_class in ((trl.DPOTrainer, trl.DPOConfig), (DPOTrainer, DPOConfig)):
        policy, _ = policy_and_reference(len(tokenizer))
        args = config_class(
            **config_kwargs(
                output_dir=str(tmp_path / trainer_class.__module__), precompute_ref_log_probs=True, max_steps=1
            )
        )
        with pytest.raises(ValueError, match="IterableDataset") as info:
            trainer_class(policy, args=args, train_dataset=_iterable(rows), processing_class=tokenizer)
        assert "AttributeError" not in type(info.value).__name__
        messages.append(str(info.value))
    theirs, ours = messages
    first_sentence = "`precompute_ref_log_probs=True` is not supported with IterableDataset."
    assert theirs.startswith(first_sentence) and ours.startswith(first_sentence)  # code matching TRL's still matches
    assert "streaming" in ours and "reference: copy" in ours  # ours says how to proceed


def test_precompute_ref_batch_size_reaches_the_precomputed_strategy():
    config = DPOConfig(**config_kwargs(precompute_ref_log_probs=True, precompute_ref_batch_size=3))
    assert config.reference == "precomputed" and config.reference_params == {"batch_size": 3}
    with pytest.raises(ConfigError, match="contradicts TRL's precompute_ref_batch_size=3"):
        DPOConfig(**config_kwargs(precompute_ref_batch_size=3, reference_params={"batch_size": 5}))
    with pytest.raises(ConfigError, match="reference is 'copy', which precomputes nothing"):
        DPOConfig(**config_kwargs(precompute_ref_batch_size=3, reference="copy"))


@pytest.mark.parametrize("shape", ["split", "dict"])
def test_reference_auto_with_a_streaming_eval_split_trains_and_evaluates_as_trl(shape, tokenizer, tmp_path, caplog):
    """Nothing said about the reference and an eval split that streams: TRL trains and evaluates, and so does ours
    (``auto`` does not precompute what cannot be scored once), with TRL's eval loss."""
    from dpo_plugin.testing.tiny import save_tiny

    folder = str(save_tiny(tmp_path / "init"))
    held_out = preference_rows(12)[8:]
    losses = {}
    for name, (trainer_class, config_class) in {
        "trl": (trl.DPOTrainer, trl.DPOConfig),
        "ours": (DPOTrainer, DPOConfig),
    }.items():
        streaming = _iterable(held_out) if shape == "split" else {"a": _iterable(held_out), "b": _iterable(held_out)}
        args = config_class(**config_kwargs(output_dir=str(tmp_path / name), max_steps=2))
        with caplog.at_level(logging.INFO, logger="dpo_plugin"):
            trainer = trainer_class(
                folder,
                args=args,
                train_dataset=preference_dataset(),
                eval_dataset=streaming,
                processing_class=tokenizer,
            )
        trainer.train()
        metrics = trainer.evaluate()
        losses[name] = metrics["eval_loss"] if shape == "split" else (metrics["eval_a_loss"], metrics["eval_b_loss"])
    assert losses["ours"] == pytest.approx(losses["trl"], rel=1e-5)
    assert "reference: auto → copy (full fine-tuning; not precomputed: an eval split streams" in caplog.text


def test_a_streaming_split_given_to_evaluate_later_is_scored_batch_by_batch_with_the_reference(tokenizer, tmp_path):
    """``auto`` precomputed the splits it was given; a streaming split met after training is scored against the
    reloaded initial model batch by batch: the same rewards as a run that keeps a copy of the reference."""
    from dpo_plugin.testing.tiny import save_tiny

    folder = str(save_tiny(tmp_path / "init"))
    held_out = preference_rows(12)[8:]
    metrics = {}
    for reference in ("auto", "copy"):
        settings = config_kwargs(output_dir=str(tmp_path / reference), max_steps=2)
        params = {"cache_dir": str(tmp_path / "cache")} if reference == "auto" else None
        args = DPOConfig(**settings, reference=reference, reference_params=params)
        trainer = DPOTrainer(folder, args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
        assert trainer.session.reference_strategy.describe().startswith(
            "auto → precomputed" if reference == "auto" else "copy"
        )
        trainer.train()
        metrics[reference] = trainer.evaluate(eval_dataset=_iterable(held_out))
    for key in ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_logratio/chosen"):
        assert metrics["auto"][key] == pytest.approx(metrics["copy"][key], rel=1e-5, abs=1e-7), key
    assert metrics["auto"]["eval_rewards/margins"] != 0  # the policy trained a step: the rewards are not all zero
