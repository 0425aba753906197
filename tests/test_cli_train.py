"""`dpo-plugin train`: YAML + flags parsed into TRL's dataclasses, bad input refused before anything loads."""

from __future__ import annotations

import pytest
import yaml

from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.hosts.trl.train_args import parse_train_args

DATA = "dpo_plugin/demo/data"
MODEL = "dpo_plugin/testing/tiny-model"


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
    config.write_text(
        yaml.safe_dump({"model_name_or_path": "m", "dataset_name": "pairs.jsonl", "bf16": False, "output_dir": "o"})
    )
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


@pytest.mark.parametrize(
    "flag, closest", [("--learning_rat", "learning_rate"), ("--max_step", "max_steps"), ("--output_di", "output_dir")]
)
def test_an_abbreviated_flag_is_refused_naming_the_whole_key(tmp_path, flag, closest):
    """argparse would take a prefix of a flag for the flag (``--max_step 2`` training 2 steps); the YAML's rule
    holds for flags: the whole key or an error naming it."""
    with pytest.raises(ConfigError) as info:
        parse_train_args(["--config", _yaml(tmp_path), flag, "2"])
    assert f"Unknown key '{flag[2:]}' in the command line. Did you mean '{closest}'?" in str(info.value)


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
    from dpo_plugin.hosts.trl.run import load_datasets

    request = parse_train_args(["--config", _yaml(tmp_path, dataset_name=str(tmp_path / "nope.jsonl"))])
    with pytest.raises(ConfigError, match="No such file"):
        load_datasets(request)
    request = parse_train_args(["--config", _yaml(tmp_path, dataset_name="someone/not-a-dataset")])
    with pytest.raises(
        ConfigError, match="'someone/not-a-dataset' is not in the local cache and the Hugging Face Hub is offline"
    ):
        load_datasets(request)


@pytest.mark.parametrize("earlier", ["adapter_model.safetensors", "trainer_state.json", "eval/report.json"])
def test_an_earlier_run_in_output_dir_is_not_overwritten(tmp_path, earlier):
    from dpo_plugin.hosts.trl.run import run_training

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
        tmp_path,
        max_steps=1,
        checks=["reward_margin"],
        check_params={"reward_margin": {"threshold": 0.95}},
        strict_checks=strict,
        per_device_train_batch_size=4,
    )
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


def _refused(*argv: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_train_args(list(argv))
    assert "\n" not in str(info.value)
    return str(info.value)


EMPTY = (
    "is empty (nothing but blank lines or comments). Write the settings as key: value lines, at least "
    "model_name_or_path, dataset_name and output_dir (see docs/configuration.md)."
)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing set yet\n"])
def test_an_empty_yaml_says_so(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert _refused("--config", str(path)) == f"{path} {EMPTY}"


def test_a_binary_or_unreadable_yaml_names_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"bf16: false\nmodel_name_or_path: caf\xe9\n")
    assert _refused("--config", str(path)) == (
        f"{path}, line 2: byte 0xe9 is not UTF-8 text. Save the file as UTF-8 (your editor's encoding setting, or "
        "iconv -f <its encoding> -t utf-8)."
    )
    path.write_bytes(b"bf16: false\n\x00\x01\x02")
    assert _refused("--config", str(path)) == (
        f"{path}, line 2: not valid YAML (character #x0000: special characters are not allowed). Remove it."
    )
    path.write_text("bf16: false\nloss_type: [sigmoid\nbeta: 0.1\n")
    assert _refused("--config", str(path)).startswith(f"{path}, line 3: not valid YAML (")
    path.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    assert _refused("--config", str(path)) == (
        f"{path} has {(1 << 20) + 3} bytes, more than the 1048576 a config file may have; is it the right file?"
    )


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """Nine levels of nine aliases: 462 bytes standing for 9^9 = 387 million strings."""
    import time

    lines = ['  A: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("ABCDEFGH", "BCDEFGHI"):
        lines.append(f"  {name}: &{name.lower()} [{','.join([f'*{previous.lower()}'] * 9)}]")
    path = tmp_path / "run.yaml"
    path.write_text(f"model_name_or_path: {MODEL}\ndataset_name: {DATA}\nbf16: false\nenv:\n" + "\n".join(lines) + "\n")
    assert len(path.read_bytes()) == 462
    started = time.perf_counter()
    message = _refused("--config", str(path))
    assert time.perf_counter() - started < 5
    assert (
        message
        == f"{path}: its aliases expand to more than 100000 values, far more than a config needs. Write the values out."
    )
    path.write_text("a: &a [*a]\n")
    assert _refused("--config", str(path)) == (
        f"{path}: an alias refers to a list or mapping that contains it, an endless value. Write the values out."
    )
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert _refused("--config", str(path)) == f"{path}: lists or mappings nested too deeply to be a config."


def test_ordinary_aliases_still_work(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"model_name_or_path: {MODEL}\ndataset_name: {DATA}\noutput_dir: {tmp_path / 'o'}\nbf16: false\n"
        "per_device_train_batch_size: &batch 3\nper_device_eval_batch_size: *batch\n"
    )
    assert parse_train_args(["--config", str(path)]).config.per_device_eval_batch_size == 3


def test_env_values_must_be_scalars(tmp_path):
    assert _refused("--config", _yaml(tmp_path, env={"HF_HOME": ["a", "b"]})) == (
        f"env.HF_HOME in {tmp_path / 'run.yaml'} must be a string or a number, got a list."
    )


@pytest.mark.parametrize(
    "key, value, advice",
    [
        ("torch_dtype", "float32", "transformers 5 renamed it dtype (same values: auto, bfloat16, float16, float32)"),
        (
            "warmup_ratio",
            0.1,
            "transformers 5 removed it; give the ratio to warmup_steps, which reads a value below 1 as a fraction of "
            "the training steps (warmup_steps: 0.1)",
        ),
        (
            "logging_dir",
            "logs",
            "transformers 5 removed it; TensorBoard writes to the folder named by the environment variable "
            "TENSORBOARD_LOGGING_DIR (in the YAML: env: {TENSORBOARD_LOGGING_DIR: <folder>})",
        ),
        (
            "overwrite_output_dir",
            True,
            "transformers 5 removed it; reuse_output_dir: true lets a run write into a folder that holds other files "
            "(dpo-plugin never overwrites or deletes them)",
        ),
    ],
)
def test_keys_transformers_5_renamed_or_removed_say_what_replaced_them(tmp_path, key, value, advice):
    path = _yaml(tmp_path, **{key: value})
    assert _refused("--config", path) == f"Unknown key {key!r} in {path}: {advice}."
    assert (
        _refused("--config", _yaml(tmp_path), f"--{key}", str(value))
        == f"Unknown key {key!r} in the command line: {advice}."
    )


def test_the_replacements_exist_in_transformers_5(tmp_path):
    """What the table points to is a real field (and the old names really are gone)."""
    import dataclasses

    from transformers import TrainingArguments
    from trl import ModelConfig

    from dpo_plugin.hosts.trl.train_args import REPLACED_KEYS

    fields = {f.name for f in dataclasses.fields(TrainingArguments)} | {f.name for f in dataclasses.fields(ModelConfig)}
    assert not set(REPLACED_KEYS) & fields
    assert {
        "dtype",
        "warmup_steps",
        "eval_strategy",
        "use_cpu",
        "per_device_train_batch_size",
        "include_for_metrics",
    } <= fields
    request = parse_train_args(["--config", _yaml(tmp_path, dtype="float32", warmup_steps=0.1, reuse_output_dir=True)])
    assert request.model.dtype == "float32" and request.config.warmup_steps == 0.1 and request.config.reuse_output_dir


@pytest.mark.parametrize("key", ["eval_strategy", "save_strategy"])
def test_an_unquoted_no_gets_the_hint_to_quote_it(tmp_path, key):
    path = tmp_path / "run.yaml"
    path.write_text(f"model_name_or_path: {MODEL}\ndataset_name: {DATA}\nbf16: false\n{key}: no\n")
    message = _refused("--config", str(path))
    assert message.startswith(f"{key} in {path} must be ") and message.endswith(
        "got False (bool). YAML reads an unquoted yes, no, on or off as a boolean: "
        f"quote the word you meant ({key}: 'no')."
    )
    path.write_text(f"model_name_or_path: {MODEL}\ndataset_name: {DATA}\nbf16: false\noutput_dir: o\n{key}: 'no'\n")
    assert str(getattr(parse_train_args(["--config", str(path)]).config, key)) in (
        "no",
        "IntervalStrategy.NO",
        "SaveStrategy.NO",
    )


def test_bad_flag_values_name_the_command_line(tmp_path):
    path = _yaml(tmp_path)
    assert _refused("--config", path, "--max_steps", "2.5") == (
        "the command line: argument --max_steps/--max-steps: invalid int value: '2.5'."
    )
    assert _refused("--config", path, "--eval_strategy", "never") == (
        "the command line: argument --eval_strategy/--eval-strategy: invalid choice: 'never' (choose from 'no', "
        "'steps', 'epoch')."
    )
