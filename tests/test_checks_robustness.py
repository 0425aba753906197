"""The post-training checks on bad input: no usable pairs, crashing checks, empty completions, failing or
third-party judges, a reference that cannot be loaded, and bfloat16 models on CPU.

Every model is a tiny Llama built from a config; the ``openai`` judge talks to a real HTTP server on
127.0.0.1. Where a verdict must be known in advance, the models are built to always emit one token
(``constant_output_model``), so the expected texts and outcomes follow from the construction.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from scipy import stats
from test_judges import OpenAIEndpoint
from trainer_fixtures import config_kwargs, policy_and_reference

import dpo_plugin
from dpo_plugin.preference_data import load_preference_data
from dpo_plugin.testing.tiny import tiny_model
from dpo_plugin.trl import DPOConfig, DPOTrainer

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")
DEMO = load_preference_data(str(REPO / "dpo_plugin" / "demo" / "data"))
TRAIN = DEMO["train"].select(range(8))
EVAL = DEMO["test"].select(range(6))
FAST_WIN_RATE = {"max_new_tokens": 3, "batch_size": 6}


def constant_output_model(vocab_size: int, token_id: int):
    """A tiny Llama whose next token is always ``token_id``, whatever the input.

    Every block's output projections are zero, so the last hidden state is the embedding of the last
    token; every embedding is the all-ones vector, so after the final RMSNorm (weight 1) the hidden
    state is h ≈ 1 for every position. With lm_head row ``token_id`` = h and every other row 0, that
    token's logit is |h|² ≈ 32 and every other logit is 0.
    """
    model = tiny_model(vocab_size)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[token_id] = 1.0
    return model


def _trainer(tmp_path, policy=TINY, eval_dataset=EVAL, ref_model=None, processing_class=None, **overrides):
    settings = {
        "checks": ["reward_margin", "win_rate"],
        "judge": "function",
        "judge_params": {"function": "test_checks_robustness:first_is_better"},
        "check_params": {"win_rate": FAST_WIN_RATE},
        "max_length": 128,
    }
    if ref_model is not None:
        settings["reference"] = "path"
    settings.update(overrides)
    if "win_rate" not in settings["checks"]:
        settings.pop("check_params")
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), **settings))
    return DPOTrainer(
        policy,
        ref_model=ref_model,
        args=args,
        train_dataset=TRAIN,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
    )


def first_is_better(prompt, a, b):
    return 0


def _saved_report(tmp_path):
    return json.loads((Path(tmp_path) / "eval" / "report.json").read_text())


# --- 1. no usable pairs; a crashing check -------------------------------------------------------------


def test_an_eval_split_emptied_by_truncation_fails_both_checks_with_a_reason(tmp_path):
    # byte-level tokenizer: a prompt of > 64 characters alone fills max_length=64, so TRL drops every pair
    long_prompts = Dataset.from_list(
        [
            {"prompt": "Please answer this long question " * 3 + str(i), "chosen": " yes", "rejected": " no"}
            for i in range(3)
        ]
    )
    trainer = _trainer(tmp_path, eval_dataset=long_prompts, max_length=64)
    assert len(trainer.eval_dataset) == 0  # the premise: nothing usable is left
    report = trainer.run_checks()
    for name in ("reward_margin", "win_rate"):
        check = report["checks"][name]
        assert check["passed"] is False
        assert check["skipped"].startswith("no usable held-out pairs: ") and "max_length=64" in check["skipped"]
    assert report["passed"] is False and _saved_report(tmp_path)["checks"].keys() == {"reward_margin", "win_rate"}


def _explodes(ctx):
    raise RuntimeError("third-party check exploded")


def _returns_junk(ctx):
    return {"passed": True}


class CrashingChecks:
    @staticmethod
    @dpo_plugin.hookimpl
    def register_checks(register):
        register("explodes", _explodes)
        register("returns_junk", _returns_junk)


def test_a_raising_check_fails_alone_and_training_survives(tmp_path, register_plugin, caplog):
    register_plugin(CrashingChecks, "crashing-checks")
    trainer = _trainer(tmp_path, checks=["explodes", "reward_margin", "returns_junk"], max_steps=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with caplog.at_level(logging.ERROR, logger="dpo_plugin.trl.checks"):
        trainer.train()  # does not raise
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # the step was kept
    checks = trainer.check_report["checks"]
    assert list(checks) == ["explodes", "reward_margin", "returns_junk"]
    assert checks["explodes"]["passed"] is False
    assert checks["explodes"]["skipped"] == "the check raised RuntimeError: third-party check exploded"
    assert checks["returns_junk"]["passed"] is False and "dict, not a CheckResult" in checks["returns_junk"]["skipped"]
    assert checks["reward_margin"]["metrics"]["n"] == 6 and "skipped" not in checks["reward_margin"]  # unaffected
    crash = [r for r in caplog.records if "explodes" in r.getMessage()]
    assert crash and crash[0].exc_info is not None and "third-party check exploded" in caplog.text  # with traceback
    assert _saved_report(tmp_path)["checks"]["explodes"]["skipped"].startswith("the check raised RuntimeError")


# --- 2. a third-party judge chosen by name ------------------------------------------------------------


class LetterJudge:
    """A batched third-party judge: prefers the answer made only of ``letter`` (no ``errors`` list)."""

    def __init__(self, letter: str):
        self.letter = letter

    def __call__(self, prompts, first, second):
        def good(text):
            return bool(text) and set(text) == {self.letter}

        return [0.5 if good(a) == good(b) else (0 if good(a) else 1) for a, b in zip(first, second)]


class LetterJudgePlugin:
    @staticmethod
    @dpo_plugin.hookimpl
    def register_judges(register):
        register("prefers_letter", LetterJudge, description="prefers answers made of one letter")


@pytest.fixture
def letter_models(tokenizer):
    """A policy that always says "A" and a reference that always says "B"."""
    a_id, b_id = tokenizer.convert_tokens_to_ids(["A", "B"])
    return constant_output_model(len(tokenizer), a_id), constant_output_model(len(tokenizer), b_id)


@pytest.mark.parametrize("letter, wins, win_rate, passed", [("A", 6, 1.0, True), ("B", 0, 0.0, False)])
def test_a_plugin_judge_decides_the_win_rate(
    tmp_path, register_plugin, letter_models, tokenizer, letter, wins, win_rate, passed
):
    register_plugin(LetterJudgePlugin, "letter-judge")
    policy, reference = letter_models
    trainer = _trainer(
        tmp_path,
        policy,
        ref_model=reference,
        processing_class=tokenizer,
        checks=["win_rate"],
        judge="prefers_letter",
        judge_params={"letter": letter},
    )
    check = trainer.run_checks()["checks"]["win_rate"]
    sample = check["details"]["samples"][0]
    assert (sample["policy"], sample["reference"]) == ("AAA", "BBB")  # max_new_tokens=3
    metrics = check["metrics"]
    assert (metrics["wins"], metrics["losses"], metrics["ties"], metrics["n"]) == (wins, 6 - wins, 0, 6)
    assert metrics["win_rate"] == win_rate and check["passed"] is passed
    # the tie-aware Agresti–Coull interval for 6 of 6 (or 0 of 6), far end: ñ = 6 + z², μ̃ = (6 + z²/2)/ñ,
    # μ̃ − t(ñ − 1)·√(μ̃(1 − μ̃)/ñ)
    z2 = 1.959963984540054**2
    n_tilde = 6 + z2
    centre = (6 + z2 / 2) / n_tilde
    bound = centre - stats.t.ppf(0.975, n_tilde - 1) * math.sqrt(centre * (1 - centre) / n_tilde)
    low, high = check["interval"]
    assert (low if passed else 1 - high) == pytest.approx(bound, abs=1e-9)


# --- 3. completions that are empty at run time ----------------------------------------------------------


def test_a_policy_that_emits_eos_at_once_fails_on_empty_completions(tmp_path, tokenizer, letter_models):
    _, reference = letter_models
    policy = constant_output_model(len(tokenizer), tokenizer.eos_token_id)
    trainer = _trainer(tmp_path, policy, ref_model=reference, processing_class=tokenizer, checks=["win_rate"])
    check = trainer.run_checks()["checks"]["win_rate"]
    assert check["metrics"]["empty_policy"] == 6 and check["metrics"]["empty_reference"] == 0
    assert all(s["policy"] == "" and s["reference"] == "BBB" for s in check["details"]["samples"])
    assert check["passed"] is False
    assert "6 of 6 policy completions are empty (check max_new_tokens and EOS settings)" in check["details"]["reasons"]


# --- 4. the openai judge against a failing server --------------------------------------------------------


def test_win_rate_with_an_openai_judge_answering_500_fails_with_the_reasons(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = OpenAIEndpoint()  # the tests' 127.0.0.1 server, answering every request with HTTP 500
    server.respond = lambda body: (500, "model overloaded")
    try:
        params = {"base_url": server.url, "model": "judge", "max_retries": 1, "backoff": 0, "timeout": 5}
        report = _trainer(tmp_path, checks=["win_rate"], judge="openai", judge_params=params).run_checks()
    finally:
        server.close()
    check = report["checks"]["win_rate"]
    assert len(server.requests) == 6 * 2 * 2  # 6 prompts × both orders × (1 try + 1 retry)
    assert (check["metrics"]["failures"], check["metrics"]["n"]) == (6, 0) and check["passed"] is False
    expected = f"HTTP 500 from {server.url}/chat/completions: model overloaded (after 2 attempts)"
    assert check["details"]["judge_errors"] == [expected] * 12
    assert any(r.startswith("the judge failed on 100% of prompts") for r in check["details"]["reasons"])
    assert _saved_report(tmp_path)["checks"]["win_rate"]["details"]["judge_errors"][0] == expected


# --- 6. the reference for the checks under `none` / `precomputed` ------------------------------------------


def test_reference_free_run_reloads_its_initial_folder_for_the_checks(tmp_path):
    trainer = _trainer(tmp_path, TINY, loss_type=["simpo"], reference="none")
    report = trainer.run_checks()
    margin, win = report["checks"]["reward_margin"], report["checks"]["win_rate"]
    # the policy is untrained, so the reloaded initial model scores every pair exactly as it does
    assert margin["metrics"]["n"] == 6 and margin["metrics"]["margin_mean"] == pytest.approx(0.0, abs=1e-6)
    assert win["metrics"]["n"] == 6 and win["metrics"]["disagreements"] == 6  # the judge always prefers the first shown


def test_an_initial_hub_id_that_cannot_be_loaded_skips_with_the_id_and_the_error(tmp_path, make_model, tokenizer):
    policy = make_model()
    policy.config._name_or_path = "no-such-org/no-such-tiny-model"  # as from_pretrained("no-such-org/…") sets it
    trainer = _trainer(tmp_path, policy, processing_class=tokenizer, loss_type=["simpo"], reference="none")
    report = trainer.run_checks()
    for name in ("reward_margin", "win_rate"):
        reason = report["checks"][name]["skipped"]
        assert reason.startswith("no reference model") and "'no-such-org/no-such-tiny-model'" in reason
        assert "could not be loaded: ConfigError: Cannot load the reference model" in reason
    assert report["passed"] is False


# --- 7. bfloat16 end to end on CPU ---------------------------------------------------------------------------


def _direct_logps(model, prompt_ids, completion_ids, max_length):
    """Σ log p(completion | prompt) in float64 from a plain forward, keep-start truncation as TRL's collator."""
    ids = (prompt_ids + completion_ids)[:max_length]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logps = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
    return float(logps[len(prompt_ids) - 1 :].sum())


def test_checks_on_a_bfloat16_model_give_finite_numbers(tmp_path, tokenizer):
    policy, reference = (m.to(torch.bfloat16) for m in policy_and_reference(len(tokenizer), scale=0.05))
    trainer = _trainer(
        tmp_path,
        policy,
        ref_model=reference,
        processing_class=tokenizer,
        bf16=True,
        use_cpu=True,
        judge_params={"function": "dpo_plugin.demo.arithmetic:judge_correct"},
    )
    assert next(trainer.model.parameters()).dtype == torch.bfloat16
    report = trainer.run_checks()
    margin, win = report["checks"]["reward_margin"], report["checks"]["win_rate"]
    assert margin["metrics"]["n"] == 6 and all(math.isfinite(v) for v in margin["metrics"].values())
    # the margins agree with a float64 read-out of the same bf16 models' logits
    expected = []
    for row in trainer.eval_dataset:
        logps = {
            (who, side): _direct_logps(model, row["prompt_ids"], row[f"{side}_ids"], 128)
            for who, model in (("policy", policy), ("reference", reference))
            for side in ("chosen", "rejected")
        }
        chosen = logps["policy", "chosen"] - logps["reference", "chosen"]
        rejected = logps["policy", "rejected"] - logps["reference", "rejected"]
        expected.append(0.1 * (chosen - rejected))
    assert np.abs(expected).max() > 0.01  # the models differ enough for the comparison to mean something
    np.testing.assert_allclose(margin["details"]["margins"], expected, atol=2e-3)
    assert win["metrics"]["n"] == 6 and win["metrics"]["empty_policy"] == 0
    assert math.isfinite(win["metrics"]["logratio_greedy"]) and win["metrics"]["logratio_greedy"] != 0
    assert all(s["policy"] and s["reference"] for s in win["details"]["samples"])
