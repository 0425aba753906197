"""The chosen log-prob drift warning: the policy makes the chosen answers less likely while the margin grows.

The watch on hand-made logs, its replay over a log history in the report, and its wiring in the trainer's ``log``
(fed through the trainer's own step metrics, no training needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from trainer_fixtures import config_kwargs

from dpo_plugin.chosen_drift import DEFAULT_BOUND, ChosenDriftWatch, chosen_drift_in, remedies
from dpo_plugin.evaluation.report import write_report
from dpo_plugin.preference_data import load_preference_data
from dpo_plugin.trl import DPOConfig, DPOTrainer
from dpo_plugin.types import CheckResult

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")
HISTORY = [
    {"step": 1, "logratio/chosen": -0.02, "rewards/margins": 0.1},
    {"step": 2, "eval_logratio/chosen": -0.5, "eval_rewards/margins": 0.9},  # eval logs are not watched
    {"step": 3, "logratio/chosen": -0.08, "rewards/margins": 0.4},
    {"step": 4, "logratio/chosen": -0.15, "rewards/margins": 0.7},
    {"step": 5, "logratio/chosen": -0.30, "rewards/margins": 1.1},
]


def test_it_warns_once_when_chosen_falls_past_the_bound_while_the_margin_grows():
    watch = ChosenDriftWatch(["sigmoid"])
    said = [watch.observe(entry, entry["step"]) for entry in HISTORY]
    assert said[:3] == [None, None, None] and said[4] is None  # once
    assert said[3] == (
        "At step 4, the chosen answers' log-probability fell below the reference's by 0.150 nats per token while the "
        f"reward margin grew to 0.700: the margin widens by making the chosen answers less likely too (TRL issue 800). "
        f"Remedies: {remedies(['sigmoid'])}."
    )
    assert "loss_type: dpop" in said[3] and "sft term" in said[3] and DEFAULT_BOUND == 0.1


@pytest.mark.parametrize(
    "entries",
    [
        [
            {"logratio/chosen": -0.02, "rewards/margins": 0.8},
            {"logratio/chosen": -0.6, "rewards/margins": 0.5},
        ],  # shrinking
        [{"logratio/chosen": -0.05, "rewards/margins": 2.0}],  # within the bound
        [{"logratio/chosen": -0.5, "rewards/margins": -0.1}],  # no margin
        [{"loss": 0.6}],  # a reference-free loss logs no log-ratio
    ],
)
def test_no_warning_without_both_signs(entries):
    watch = ChosenDriftWatch()
    assert [watch.observe(e) for e in entries][-1] is None and watch.warning is None


def test_the_remedies_fit_the_losses_in_use():
    assert remedies(["sigmoid", "sft"]).startswith("raise the sft term's weight in loss_weights")
    assert remedies(["dpop"]).startswith("raise loss_params.dpop.dpop_lambda")
    with pytest.raises(ValueError, match="bound must be > 0"):
        ChosenDriftWatch(bound=0)


def test_the_report_states_it_from_the_log_history(tmp_path):
    result = CheckResult("custom", True, {"x": 1.0})
    report = write_report([result], tmp_path, HISTORY, extra={"losses": ["sigmoid", "sft"]})
    warning = chosen_drift_in(HISTORY, ["sigmoid", "sft"])
    assert report["training_warnings"] == [warning] and "raise the sft term's weight" in warning
    assert f"## During training\n\n- warning: {warning}" in (tmp_path / "eval" / "report.md").read_text()
    assert write_report([result], tmp_path, HISTORY[:3])["training_warnings"] == []
    with pytest.raises(ValueError, match="extra may not set"):
        write_report([result], tmp_path, [], extra={"training_warnings": []})


def test_the_trainer_warns_once_from_its_own_step_metrics(tmp_path, caplog):
    demo = load_preference_data(str(REPO / "dpo_plugin" / "demo" / "data"))
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=1))
    trainer = DPOTrainer(TINY, args=args, train_dataset=demo["train"].select(range(8)))
    trainer.model.train()
    with caplog.at_level(logging.WARNING, logger="dpo_plugin.session"):
        for logratio, margin in [(-0.01, 0.2), (-0.4, 0.9), (-0.5, 1.2)]:
            trainer.session.step_metrics.values["train"]["logratio/chosen"].append(logratio)
            trainer.session.step_metrics.values["train"]["rewards/margins"].append(margin)
            trainer.log({})
    said = [r.getMessage() for r in caplog.records if "chosen answers' log-probability" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "At step 0, the chosen answers' log-probability fell below the reference's by 0.400"
    )
    assert said[0].endswith("(Warned once.)") and "loss_type: dpop" in said[0]
    assert trainer.state.log_history[1]["logratio/chosen"] == -0.4


def test_the_reward_margin_check_warns_on_the_held_out_pairs(tmp_path):
    """Held-out chosen answers 0.2 nats per token less likely than under the reference (10 tokens each), rejected ones
    1.0 less: the margin β·(−2 + 10) = 0.8 > 0, the drift −0.2 < −0.1: the warning, naming the remedies."""
    import contextlib

    import numpy as np

    from dpo_plugin.evaluation.checks.reward_margin import reward_margin
    from dpo_plugin.evaluation.context import EvalContext
    from dpo_plugin.forward import PairScores

    tokens = np.full(30, 10)
    scores = {
        "policy": PairScores(np.full(30, -22.0), np.full(30, -40.0), tokens, tokens),
        "reference": PairScores(np.full(30, -20.0), np.full(30, -30.0), tokens, tokens),
    }
    ctx = EvalContext(
        policy=None,
        tokenizer=None,
        prompts=[],
        score_pairs=scores.get,
        reference_model=contextlib.nullcontext,
        reference_note="by hand",
        beta=0.1,
        output_dir=tmp_path,
    )
    result = reward_margin(ctx)
    assert result.metrics["drift_chosen"] == pytest.approx(-0.2) and result.metrics["margin_mean"] == pytest.approx(0.8)
    assert result.details["warnings"] == [
        "on the held-out pairs, the chosen answers' log-probability fell below the reference's by 0.200 nats per token "
        f"while the reward margin grew to 0.800: the margin widens by making the chosen answers less likely too (TRL "
        f"issue 800). Remedies: {remedies()}."
    ]
