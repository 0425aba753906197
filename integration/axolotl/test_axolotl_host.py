"""The Axolotl host, end to end: real ``python -m axolotl.cli.train`` runs of a tiny Llama on CPU (axolotl 0.21.0,
TRL 1.14.1), the plugin on and off, every reference strategy, packing, a plugin loss, the checks, the guard,
and the one-line errors for what Axolotl alone would let through. About 20 s a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dpo_plugin.testing import save_tiny

HERE = Path(__file__).resolve().parent
PLUGIN = "dpo_plugin.hosts.axolotl.DPOPlugin"
LOG_HISTORY = "log_history_plugin.LogHistoryPlugin"
TOLERANCE = 1e-4


def pairs(n: int = 16) -> list[dict[str, str]]:
    """Plain prompt/chosen/rejected pairs of varied lengths."""
    rows = []
    for i in range(n):
        a, b = 3 + 2 * i, 7 + i
        rows.append(
            {
                "prompt": f"Question {i}: what is {a} + {b}?" + " Think." * (i % 3),
                "chosen": f" {a + b}." + " Sure." * (i % 2),
                "rejected": f" It is {a + b + 1}, I believe" + "!" * (i % 4),
            }
        )
    return rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A tiny model and the pairs as JSONL."""
    root = tmp_path_factory.mktemp("axolotl")
    save_tiny(root / "tiny-model")
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in pairs()))
    return root


def config(assets: Path, name: str, plugin: bool = True, **overrides) -> dict:
    """An Axolotl DPO config for the tiny model (2 epochs of 4 steps), the plugin named or not."""
    values = {
        "base_model": str(assets / "tiny-model"),
        "rl": "dpo",
        "rl_beta": 0.1,
        "plugins": ([PLUGIN] if plugin else []) + [LOG_HISTORY],
        "datasets": [{"path": str(assets / "pairs.jsonl"), "split": "train", "type": "passthrough"}],
        "dataset_prepared_path": str(assets / "prepared"),
        "val_set_size": 0,
        "output_dir": str(assets / "runs" / name),
        "sequence_len": 128,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_epochs": 2,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "learning_rate": 5e-3,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
    }
    values.update(overrides)
    return values


def train(assets: Path, values: dict, *, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m axolotl.cli.train`` on ``values`` (written next to the runs), offline, on the CPU."""
    path = assets / f"{Path(values['output_dir']).name}.yml"
    path.write_text(yaml.safe_dump(values))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "axolotl.cli.train", str(path)], capture_output=True, text=True, env=env, cwd=assets
    )
    if check and result.returncode != 0:
        raise AssertionError(f"axolotl exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def losses(values: dict) -> list[float]:
    history = json.loads((Path(values["output_dir"]) / "log_history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def logged(values: dict, key: str) -> list[float]:
    history = json.loads((Path(values["output_dir"]) / "log_history.json").read_text())
    return [entry[key] for entry in history if key in entry]


def assert_same(ours: list[float], theirs: list[float]) -> None:
    assert len(ours) == len(theirs) == 8, (ours, theirs)
    for step, (a, b) in enumerate(zip(ours, theirs), 1):
        assert abs(a - b) <= TOLERANCE * abs(b) + 1e-6, f"step {step}: {a} vs {b}"


@pytest.fixture(scope="module")
def plugin_off(assets) -> list[float]:
    values = config(assets, "off", plugin=False)
    train(assets, values)
    return losses(values)


@pytest.fixture(scope="module")
def plugin_on(assets) -> tuple[dict, subprocess.CompletedProcess]:
    values = config(assets, "on", dpo_loss_type=["sigmoid"], packing="none")
    return values, train(assets, values)


def test_plugin_on_gives_axolotls_own_losses(plugin_on, plugin_off):
    """Same YAML, plugin off and on (dpo_loss_type: [sigmoid], packing: none): the same loss at every step."""
    values, result = plugin_on
    assert_same(losses(values), plugin_off)
    assert "reference: auto → precomputed" in result.stdout + result.stderr
    assert logged(values, "logratio/chosen"), "the session's own metrics are logged"
    assert plugin_off[-1] < plugin_off[0]  # it trains at all


@pytest.mark.parametrize(
    "settings",
    [
        {"reference": "copy"},
        {"reference": "precomputed"},
        {"reference": "sync", "reference_params": {"sync_steps": 1000}},
        {"reference": "copy", "packing": "prefix_sharing"},
        {"reference": "copy", "packing": "padding_free"},
    ],
    ids=["copy", "precomputed", "sync", "prefix_sharing", "padding_free"],
)
def test_each_reference_strategy_and_layout_gives_the_same_losses(assets, plugin_off, settings):
    """Without an adapter Axolotl loads the reference a second time; every strategy uses that copy (no third)."""
    name = "-".join(str(v) for v in settings.values() if isinstance(v, str))
    values = config(assets, f"strategy-{name}", **settings)
    train(assets, values)
    assert_same(losses(values), plugin_off)


def test_an_adapter_run_uses_the_adapters_off_as_reference(assets):
    lora = {"adapter": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target_linear": True}
    off = config(assets, "lora-off", plugin=False, **lora)
    on = config(assets, "lora-on", reference="adapter", packing="none", **lora)
    train(assets, off)
    result = train(assets, on)
    assert_same(losses(on), losses(off))
    assert "reference: adapter" in result.stdout + result.stderr


POST_TRAIN_COUNTER = """
import os

import dpo_plugin

@dpo_plugin.hookimpl
def post_train(report):
    with open(os.environ["POST_TRAIN_LOG"], "a") as log:
        log.write(str(report["passed"]) + "\\n")
"""


def install_plugin(root: Path, name: str, source: str) -> None:
    """A dpo_plugin entry-point plugin (module + dist-info) in ``root``, found once ``root`` is on PYTHONPATH."""
    (root / f"{name}.py").write_text(source)
    info = root / f"{name}_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[dpo_plugin]\n{name} = {name}\n")


def test_a_plugin_loss_and_the_checks_from_one_yaml(assets, tmp_path, monkeypatch):
    """A loss TRL does not have (simpo, reference-free), packing auto, the reward-margin check with its report;
    the post_train hook runs once (Axolotl calls its own post_train twice)."""
    install_plugin(tmp_path, "post_train_counter", POST_TRAIN_COUNTER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("POST_TRAIN_LOG", str(tmp_path / "post_train.log"))
    values = config(
        assets,
        "simpo",
        dpo_loss_type=["simpo", "sft"],
        dpo_loss_weights=[1.0, 0.5],
        reference="none",
        loss_params={"simpo": {"gamma": 0.3}},
        val_set_size=0.25,
        checks=["reward_margin"],
        check_params={"reward_margin": {"threshold": 0.0}},
    )
    result = train(assets, values)
    assert logged(values, "loss/simpo") and logged(values, "loss/sft")
    report = json.loads((Path(values["output_dir"]) / "eval" / "report.json").read_text())
    assert set(report["checks"]) == {"reward_margin"} and isinstance(report["passed"], bool)
    assert "packing: auto" in result.stdout + result.stderr
    assert (tmp_path / "post_train.log").read_text().splitlines() == [str(report["passed"])]


NAN_LOSS = '''
import dpo_plugin
import torch.nn.functional as F

CALLS = {"n": 0}

def nan_at_three(logps, *, beta: float = 0.1):
    """Sigmoid DPO that goes NaN on its second training call (the config's dry runs have no gradient)."""
    chosen, rejected = logps.logratios()
    losses = -F.logsigmoid(beta * (chosen - rejected))
    CALLS["n"] += chosen.requires_grad
    return dpo_plugin.LossOutput(losses * float("nan") if CALLS["n"] == 2 else losses, chosen, rejected)

@dpo_plugin.hookimpl
def register_losses(register):
    register("nan_at_three", nan_at_three)
'''


def test_a_diverging_plugin_loss_stops_the_run_with_its_code_and_message(assets, tmp_path, monkeypatch):
    """The divergence guard under Axolotl: exit 3, naming the step, the plugin and what went non-finite."""
    install_plugin(tmp_path, "nan_loss", NAN_LOSS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    values = config(assets, "nan", dpo_loss_type=["nan_at_three"], reference="copy")
    result = train(assets, values, check=False)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Training stopped at step 2: loss 'nan_at_three' (plugin 'nan_loss')" in result.stdout + result.stderr


def test_sigterm_saves_a_checkpoint_and_exits_75(assets):
    """SIGTERM while Axolotl trains: the step finishes, a resumable checkpoint is saved, the exit code is 75."""
    values = config(assets, "sigterm", micro_batch_size=1, num_epochs=50, save_strategy="steps", save_steps=10000)
    path = assets / "sigterm.yml"
    path.write_text(yaml.safe_dump(values))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "axolotl.cli.train", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=assets,
    )
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if "'loss'" in line:  # training has begun
                process.send_signal(signal.SIGTERM)
                break
        output += process.stdout.readlines()
        assert process.wait(timeout=300) == 75, "".join(output)[-4000:]
    finally:
        process.kill()  # never left behind, whatever failed
    checkpoints = sorted(Path(values["output_dir"]).glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file()
    assert f"Resume it with --resume_from_checkpoint {checkpoints[0]}" in "".join(output)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rl": "orpo"}, f"{PLUGIN} serves rl: dpo (or ipo), but this config has rl: orpo"),
        ({"refrence": "copy"}, "Unknown key 'refrence' in the Axolotl config. Did you mean 'reference'?"),
        ({"reference": "copyy"}, "Unknown reference strategy 'copyy'. Did you mean 'copy'?"),
        ({"dpo_loss_type": ["sigmoidd"]}, "Unknown loss 'sigmoidd'. Did you mean 'sigmoid'?"),
        ({"dpo_label_smoothing": 0.3}, "label_smoothing=0.3 is set, but none of the chosen losses ['sigmoid'] uses it"),
        ({"trainer_cls": "my.Trainer"}, "trainer_cls: my.Trainer is set, but dpo_plugin.hosts.axolotl.DPOPlugin"),
    ],
    ids=["rl", "misspelled-key", "unknown-strategy", "unknown-loss", "unused-loss-field", "trainer_cls"],
)
def test_bad_configs_are_one_line_errors_before_any_model_loads(assets, overrides, message):
    values = config(assets, "bad", **overrides)
    result = train(assets, values, check=False)
    assert result.returncode != 0
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert message in error
    assert "Loading weights" not in result.stdout + result.stderr


def test_a_plugin_key_without_the_plugin_is_named(assets):
    """Installed beside Axolotl the plugin loads in every run (an axolotl.plugins entry point) and says so."""
    values = config(assets, "unnamed", plugin=False, reference="copy", num_epochs=1)
    result = train(assets, values)
    assert (
        f"reference: dpo-plugin keys, but plugins: does not name {PLUGIN}, so they do nothing; add it under plugins:."
        in result.stdout + result.stderr
    )


def test_a_file_of_the_users_is_refused_before_axolotl_writes_anything(assets):
    """Axolotl saves the tokenizer into output_dir before training: the plugin refuses the folder before that."""
    values = config(assets, "users-folder")
    folder = Path(values["output_dir"])
    folder.mkdir(parents=True)
    (folder / "tokenizer.json").write_text("mine")
    result = train(assets, values, check=False)
    assert result.returncode != 0
    assert "holds tokenizer.json, which this run did not write" in result.stderr
    assert (folder / "tokenizer.json").read_text() == "mine" and sorted(p.name for p in folder.iterdir()) == [
        "tokenizer.json"
    ]


def test_axolotls_own_files_are_the_runs(plugin_on):
    """The debug log and the tokenizer and config Axolotl writes before training are in the run's manifest."""
    manifest = json.loads((Path(plugin_on[0]["output_dir"]) / "dpo_plugin_run.json").read_text())
    assert {"debug.log", "config.json", "tokenizer.json", "model.safetensors"} <= set(manifest["written"])


def test_the_loss_fields_set_in_axolotl_count_as_set():
    """rl_beta: 0.1 with simpo is β = 0.1, as beta: 0.1 is under the TRL host (SimPO's own default is 2.0)."""
    from dpo_plugin.hosts.axolotl.keys import loss_request
    from dpo_plugin.settings import PluginSettings

    mix = PluginSettings(reference="none").resolve_loss_mix(
        loss_request({"rl": "dpo", "rl_beta": 0.1, "dpo_loss_type": ["simpo"]})
    )
    assert mix.components[0].params["beta"] == 0.1
    unset = PluginSettings(reference="none").resolve_loss_mix(loss_request({"rl": "dpo", "dpo_loss_type": ["simpo"]}))
    assert unset.components[0].params["beta"] == 2.0


def test_the_trl_host_and_the_axolotl_host_give_the_same_run(assets):
    """DESIGN's parity between hosts: the same run (one batch of all pairs, 2 steps) under Axolotl and under TRL."""
    one_batch = {"micro_batch_size": 16, "num_epochs": 2}
    axolotl = config(assets, "host-axolotl", reference="copy", packing="none", dpo_loss_type=["ipo"], **one_batch)
    train(assets, axolotl)
    trl_run = assets / "runs" / "host-trl"
    trl_yaml = textwrap.dedent(
        f"""
        model_name_or_path: {assets / "tiny-model"}
        dataset_name: {assets / "pairs.jsonl"}
        output_dir: {trl_run}
        loss_type: [ipo]
        beta: 0.1
        reference: copy
        packing: none
        max_length: 128
        per_device_train_batch_size: 16
        num_train_epochs: 2
        learning_rate: 5.0e-3
        lr_scheduler_type: constant
        optim: adamw_torch
        logging_steps: 1
        save_strategy: "no"
        bf16: false
        report_to: none
        seed: 0
        gradient_checkpointing: false
        """
    )
    (assets / "host-trl.yaml").write_text(trl_yaml)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "dpo_plugin", "train", "--config", str(assets / "host-trl.yaml")],
        check=True,
        capture_output=True,
        env=env,
    )
    trl_history = json.loads((trl_run / "trainer_state.json").read_text())["log_history"]
    trl_losses = [entry["loss"] for entry in trl_history if "loss" in entry]
    ours = losses(axolotl)
    assert len(ours) == len(trl_losses) == 2
    for a, b in zip(ours, trl_losses):
        assert abs(a - b) <= TOLERANCE * abs(b) + 1e-6, (ours, trl_losses)
