"""Faults injected into real tiny training runs: a diverging learning rate, a loss that returns NaN, a folder
holding the user's files, a real SIGTERM to a training process, a checkpoint cut short while saving."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from trainer_fixtures import config_kwargs, preference_dataset

import dpo_plugin
from dpo_plugin import LossOutput
from dpo_plugin.checkpoints import resume_checkpoint
from dpo_plugin.errors import ConfigError
from dpo_plugin.faults import (
    DIVERGED_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    DivergenceError,
)
from dpo_plugin.output_folder import MANIFEST
from dpo_plugin.trl import DPOConfig, DPOTrainer

REPO = Path(__file__).resolve().parent.parent
TINY_YAML = str(REPO / "dpo_plugin" / "testing" / "tiny.yaml")


def _cli(tmp_path: Path, *flags: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "dpo_plugin",
        "train",
        "--config",
        TINY_YAML,
        "--loss_type",
        "sigmoid",
        "--loss_weights",
        "1.0",
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if not wait:
        return subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _weights_finite(folder: Path) -> bool:
    tensors = load_file(str(folder / "model.safetensors"))
    return all(torch.isfinite(t).all() for t in tensors.values())


def test_a_diverging_run_stops_before_applying_it_and_names_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "out"
    done = _cli(
        tmp_path,
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--learning_rate",
        "1e4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
    )
    assert done.returncode == DIVERGED_EXIT_CODE, done.stderr[-2000:]
    message = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert "Training stopped at step 2: the gradients became non-finite" in message
    assert "the learning rate (10000) is too high" in message
    assert f"The last good checkpoint is {out / 'checkpoint-1'}" in message
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-1"]
    assert _weights_finite(out / "checkpoint-1") and not (out / "model.safetensors").exists()


def _nan_on(calls):
    """A plugin loss: sigmoid DPO, NaN on the calls whose index is in ``calls`` (call 0 is the config's dry run)."""
    count = {"n": 0}

    def flaky(logps, *, beta: float = 0.1):
        """Sigmoid DPO that returns NaN on chosen calls."""
        chosen, rejected = logps.logratios()
        losses = -F.logsigmoid(beta * (chosen - rejected))
        if count["n"] in calls:
            losses = losses * math.nan
        count["n"] += 1
        return LossOutput(losses, beta * chosen, beta * rejected)

    return flaky


def _with_loss(register_plugin, fn, name="flaky"):
    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register):
            register(name, fn)

    register_plugin(Plugin, f"{name}-plugin")


def _trainer(tmp_path, **overrides):
    from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path / "out"), **overrides))
    return DPOTrainer(
        tiny_model(len(tokenizer)), args=args, train_dataset=preference_dataset(), processing_class=tokenizer
    )


def test_a_plugin_loss_returning_nan_stops_the_run_naming_the_plugin(tmp_path, register_plugin):
    _with_loss(register_plugin, _nan_on({2}))
    trainer = _trainer(tmp_path, loss_type=["flaky"], max_steps=3)
    with pytest.raises(
        DivergenceError,
        match=r"at step 2: loss 'flaky' \(plugin 'flaky-plugin'\) on finite log-probabilities became non-finite",
    ) as info:
        trainer.train()
    assert "most likely first: (1) a plugin loss misbehaves: flaky (flaky-plugin)" in str(info.value)


def test_skip_drops_the_update_and_the_run_goes_on(tmp_path, register_plugin):
    from transformers import TrainerCallback

    _with_loss(register_plugin, _nan_on({2}))
    snapshots = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})

    trainer = _trainer(
        tmp_path, loss_type=["flaky"], max_steps=3, nonfinite="skip", learning_rate=5e-2, reference="copy"
    )
    trainer.add_callback(Record())
    trainer.train()
    assert trainer.session.guard.skipped == 1
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert len(logged) == 2 and all(
        math.isfinite(v) for entry in logged for v in entry.values() if isinstance(v, float)
    )
    step1, step2, step3 = snapshots
    assert all(torch.equal(step2[n], step1[n]) for n in step1), "the skipped step changed a weight"
    assert any(not torch.equal(step3[n], step2[n]) for n in step1), "training did not go on after the skip"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_skip_stops_after_max_skipped_steps_in_a_row(tmp_path, register_plugin):
    _with_loss(register_plugin, _nan_on(set(range(1, 100))))
    trainer = _trainer(tmp_path, loss_type=["flaky"], max_steps=5, nonfinite="skip", max_skipped_steps=2)
    with pytest.raises(DivergenceError, match=r"at step 3: .* for the 3th step in a row \(max_skipped_steps=2\)"):
        trainer.train()
    assert trainer.session.guard.skipped == 2


def test_nonfinite_settings_are_checked():
    with pytest.raises(ConfigError, match="nonfinite must be stop or skip"):
        DPOConfig(**config_kwargs(nonfinite="ignore"))
    with pytest.raises(ConfigError, match="max_skipped_steps must be an integer >= 1"):
        DPOConfig(**config_kwargs(max_skipped_steps=0))


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = _trainer(tmp_path, max_steps=1)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(math.nan)
    with pytest.raises(DivergenceError, match=r"1 weight tensors are not finite \(model.embed_tokens.weight\)"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved").exists()


def test_checks_do_not_run_on_non_finite_weights(tmp_path):
    from dpo_plugin.evaluation.saved_model import evaluate_saved_model
    from dpo_plugin.testing.tiny import save_tiny

    folder = save_tiny(tmp_path / "nan-model")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * math.nan
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    report = evaluate_saved_model(
        str(folder),
        str(REPO / "dpo_plugin" / "demo" / "data"),
        reference=str(folder),
        checks=["reward_margin"],
        output_dir=str(tmp_path / "eval"),
        max_length=128,
    )
    check = report["checks"]["reward_margin"]
    assert check["passed"] is False and check["skipped"].startswith("the policy's weights are not finite (1 tensors")


# -- the output folder --------------------------------------------------------------------------


def _users_files(folder: Path) -> dict[str, bytes]:
    files = {
        "README.md": b"# my notes",
        "config.json": b"{}",
        "training_args.bin": b"mine",
        "notes.txt": b"keep",
        "checkpoint-1/mine.txt": b"my checkpoint",
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


@pytest.mark.parametrize("reuse", [False, True])
def test_the_users_files_in_output_dir_are_never_overwritten_or_deleted(tmp_path, reuse):
    out = tmp_path / "out"
    files = _users_files(out)
    flags = [
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--save_total_limit",
        "1",
    ]
    done = _cli(tmp_path, *flags, *(["--reuse_output_dir", "true"] if reuse else []))
    assert done.returncode == 2
    assert "holds README.md, checkpoint-1, config.json, training_args.bin, which this run did not write" in done.stderr
    assert {name: (out / name).read_bytes() for name in files} == files


def test_a_reused_folder_keeps_the_users_files_and_a_second_run_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    flags = [
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--save_total_limit",
        "1",
    ]
    refused = _cli(tmp_path, *flags)
    assert refused.returncode == 2 and "is not empty (notes.txt) and is not a run of dpo-plugin" in refused.stderr
    done = _cli(tmp_path, *flags, "--reuse_output_dir", "true")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "keep"
    written = set(json.loads((out / MANIFEST).read_text())["written"])
    assert "notes.txt" not in written and {"model.safetensors", "checkpoint-2"} <= written
    again = _cli(tmp_path, *flags)
    assert again.returncode == 2 and "already holds an earlier run" in again.stderr


def test_the_python_api_refuses_to_overwrite_the_users_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    for act in (lambda t: t.train(), lambda t: t.save_model()):  # before the first file is written
        with pytest.raises(ConfigError, match="holds config.json, which this run did not write"):
            act(_trainer(tmp_path, max_steps=1))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json"]
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


# -- preemption and resume --------------------------------------------------------------------


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resuming_ends_bit_identical(tmp_path):
    steps = ["--max_steps", "30", "--logging_steps", "1", "--save_strategy", "no", "--seed", "3"]
    whole = _cli(tmp_path, "--output_dir", str(tmp_path / "whole"), *steps)
    assert whole.returncode == 0, whole.stderr[-2000:]

    process = _cli(tmp_path, "--output_dir", str(tmp_path / "cut"), *steps, wait=False)
    output = ""
    for line in process.stdout:  # the first logged step: training is under way
        output += line
        if "'loss'" in line:
            process.send_signal(signal.SIGTERM)
            break
    output += process.stdout.read()
    assert process.wait(timeout=300) == PREEMPTED_EXIT_CODE, output[-2000:]
    checkpoints = [p for p in (tmp_path / "cut").iterdir() if p.name.startswith("checkpoint-")]
    assert len(checkpoints) == 1 and "Stopped by SIGTERM after step" in output and "--resume_from_checkpoint" in output
    step = int(checkpoints[0].name.split("-")[1])
    assert 1 <= step < 30

    resumed = _cli(tmp_path, "--output_dir", str(tmp_path / "cut"), *steps, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_resume_true_skips_a_checkpoint_cut_short_while_saving(tmp_path, caplog):
    trainer = _trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    trainer.train()
    out = tmp_path / "out"
    broken = out / "checkpoint-2" / "model.safetensors"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # as a kill during saving leaves it
    assert resume_checkpoint("true", out) == str(out / "checkpoint-1")
    assert "checkpoint-2 is incomplete (model.safetensors is cut short or corrupted" in caplog.text
    with pytest.raises(
        ConfigError,
        match=(
            r"Cannot resume from .*checkpoint-2: model.safetensors is cut short .* "
            r"The newest intact one is .*checkpoint-1"
        ),
    ):
        resume_checkpoint(str(out / "checkpoint-2"), out)
    assert resume_checkpoint(None, out) is None and resume_checkpoint("false", out) is None
    with pytest.raises(ConfigError, match="holds no intact checkpoint"):
        resume_checkpoint(True, tmp_path / "empty")


def test_resume_from_checkpoint_true_on_the_command_line(tmp_path):
    out = tmp_path / "out"
    first = _cli(
        tmp_path, "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    again = _cli(
        tmp_path,
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--resume_from_checkpoint",
    )
    assert again.returncode == 0, again.stderr[-2000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_a_negative_loss_weight_is_refused_unless_allowed():
    with pytest.raises(
        ConfigError, match="loss_weights gives sft the weight -5.0: a negative weight maximises that loss"
    ):
        DPOConfig(**config_kwargs(loss_type=["sigmoid", "sft"], loss_weights=[1.0, -5.0]))
    config = DPOConfig(
        **config_kwargs(loss_type=["sigmoid", "sft"], loss_weights=[1.0, -5.0], allow_negative_loss_weights=True)
    )
    assert config.loss_mix().weights == [1.0, -5.0]


def test_a_kill_while_saving_leaves_a_folder_resume_can_still_use(tmp_path):
    """A checkpoint is in the manifest before its files are written: killed while saving, it is skipped, not refused."""
    from dpo_plugin.output_folder import written

    trainer = _trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    trainer.train()
    out = tmp_path / "out"
    assert {"checkpoint-1", "checkpoint-2"} <= written(out)
    (out / "checkpoint-3").mkdir()  # as a kill right after the manifest named it leaves it
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"\0" * 10)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({"written": manifest["written"] + ["checkpoint-3"]}))
    resumed = _trainer(tmp_path, max_steps=3, save_strategy="steps", save_steps=1)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3


def test_resuming_a_vanilla_trl_run_takes_over_its_checkpoints(tmp_path, tokenizer):
    """A folder TRL wrote (no manifest): resuming it is allowed, as TRL allows it."""
    import trl

    from dpo_plugin.testing.tiny import save_tiny

    model = str(save_tiny(tmp_path / "init"))
    settings = config_kwargs(output_dir=str(tmp_path / "out"), max_steps=2, save_strategy="steps", save_steps=1)
    theirs = trl.DPOTrainer(
        model, args=trl.DPOConfig(**settings), train_dataset=preference_dataset(), processing_class=tokenizer
    )
    theirs.train()
    ours = DPOTrainer(
        model,
        args=DPOConfig(**{**settings, "max_steps": 3}),
        train_dataset=preference_dataset(),
        processing_class=tokenizer,
    )
    ours.train(resume_from_checkpoint=True)
    assert ours.state.global_step == 3
