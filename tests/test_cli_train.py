"""`dpo-plugin train`: YAML + flags parsed into TRL's dataclasses, bad input refused before anything loads."""

from __future__ import annotations

import pytest
import yaml

from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.trl.train_args import parse_train_args

DATA = "dpo_plugin/data/demo"
MODEL = "dpo_plugin/data/tiny-model"


def _yaml(tmp_path, **values):
    path = tmp_path / "run.yaml"
    base = {"model_name_or_path": MODEL, "dataset_name": DATA, "output_dir": str(tmp_path / "out"), "bf16": False}
    path.write_text(yaml.safe_dump({**base, **values}))
    return str(path)


def test_yaml_values_and_flag_overrides(tmp_path):
    path = _yaml(tmp_path, loss_type=["simpo"], loss_params={"simpo": {"gamma": 0.8}}, learning_rate="1e-5")
    request = parse_train_args(["--config", path, "--max_steps", "7"])
    config = request.config
    assert config.max_steps == 7 and config.learning_rate == 1e-5 and config.loss_type == ["simpo"]
    assert config.loss_mix().components[0].params == {"beta": 2.0, "gamma": 0.8}
    assert request.model.model_name_or_path == MODEL and request.script.dataset_name == DATA
    assert {"loss_type", "loss_params", "learning_rate", "max_steps"} <= config.explicit_fields
    assert "beta" not in config.explicit_fields


def test_flags_count_as_set_explicitly(tmp_path):
    path = _yaml(tmp_path, loss_type="simpo")
    assert parse_train_args(["--config", path, "--beta", "0.7"]).config.loss_mix().components[0].params["beta"] == 0.7


def test_relative_paths_resolve_against_the_yaml(tmp_path):
    config = tmp_path / "sub" / "run.yaml"
    config.parent.mkdir()
    (tmp_path / "sub" / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    config.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset_name": "pairs.jsonl", "bf16": False, "output_dir": "o"}))
    assert parse_train_args(["--config", str(config)]).script.dataset_name == str(tmp_path / "sub" / "pairs.jsonl")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"learning_rte": 1e-5}, "Did you mean 'learning_rate'"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"max_steps": "many"}, "max_steps"),
        ({"gradient_checkpointing": "sometimes"}, "gradient_checkpointing"),
        ({"loss_params": ["simpo"]}, "loss_params"),
        ({"bf16": True}, "bf16: false"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, "loss_weights"),
    ],
)
def test_bad_yaml_is_refused(tmp_path, values, message):
    with pytest.raises(ConfigError) as info:
        parse_train_args(["--config", _yaml(tmp_path, **values)])
    assert message in str(info.value)


def test_unknown_loss_from_yaml(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'simpo'"):
        parse_train_args(["--config", _yaml(tmp_path, loss_type="simpoo")])


def test_unknown_flag_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="Unknown key .no_such_flag. in the command line"):
        parse_train_args(["--config", _yaml(tmp_path), "--no_such_flag", "1"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"dataset_name": DATA, "bf16": False, "output_dir": "o"}))
    with pytest.raises(ConfigError, match="model_name_or_path is required"):
        parse_train_args(["--config", str(path)])
    path.write_text(yaml.safe_dump({"model_name_or_path": MODEL, "bf16": False, "output_dir": "o"}))
    with pytest.raises(ConfigError, match="dataset_name .* is required"):
        parse_train_args(["--config", str(path)])


def test_missing_dataset_is_a_clear_error(tmp_path):
    from dpo_plugin.trl.run import load_datasets

    request = parse_train_args(["--config", _yaml(tmp_path, dataset_name=str(tmp_path / "nope.jsonl"))])
    with pytest.raises(ConfigError, match="No such file"):
        load_datasets(request)
    request = parse_train_args(["--config", _yaml(tmp_path, dataset_name="someone/not-a-dataset")])
    with pytest.raises(ConfigError, match="'someone/not-a-dataset' is not in the local cache and the Hugging Face Hub is offline"):
        load_datasets(request)


@pytest.mark.parametrize("earlier", ["adapter_model.safetensors", "trainer_state.json", "eval/report.json"])
def test_an_earlier_run_in_output_dir_is_not_overwritten(tmp_path, earlier):
    from dpo_plugin.trl.run import run_training

    saved = tmp_path / "out" / earlier
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"the user's earlier run")
    request = parse_train_args(["--config", _yaml(tmp_path, dataset_name=str(tmp_path / "never-read.jsonl"))])
    # refused before the (missing) data or the model is read, and nothing in the folder changes
    top = earlier.split("/")[0]
    with pytest.raises(ConfigError, match=rf"holds {top}, which this run did not write and would overwrite"):
        run_training(request)
    assert saved.read_bytes() == b"the user's earlier run"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [saved.relative_to(tmp_path), (tmp_path / "run.yaml").relative_to(tmp_path)]
    )


@pytest.mark.parametrize("strict, code", [(False, 0), (True, 1)])
def test_strict_checks_make_a_failed_check_exit_1(tmp_path, capsys, strict, code):
    """reward_margin with threshold 0.95 cannot pass on 40 held-out pairs (40/40 has Wilson lower bound 0.912):
    the exit code says so only with strict_checks."""
    from dpo_plugin.cli import main

    path = _yaml(
        tmp_path, max_steps=1, checks=["reward_margin"], check_params={"reward_margin": {"threshold": 0.95}},
        strict_checks=strict, per_device_train_batch_size=4,
    )  # fmt: skip
    assert main(["train", "--config", path]) == code
    out = capsys.readouterr().out
    assert "reward_margin  FAILED" in out and "Overall: NOT PASSED" in out


def test_accelerate_launch_runs_the_train_command(tmp_path):
    """`accelerate launch -m dpo_plugin train` (one process here) trains and saves as the plain command does."""
    import subprocess
    import sys
    from pathlib import Path

    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "-m", "dpo_plugin", "train", "--config", _yaml(tmp_path, max_steps=1)]
    repo = Path(__file__).resolve().parent.parent  # the YAML's model and data paths are relative to it
    result = subprocess.run(command, capture_output=True, text=True, cwd=repo, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Trained model saved to" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "trainer_state.json").is_file()
