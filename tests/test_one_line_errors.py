"""Inputs that used to end in a raw traceback get one line saying what is wrong and how to fix it, before the
model's weights load: a damaged tokenizer.json, a model folder without config.json, conversational data and a
tokenizer without a chat template, a batch size of 0, use_peft with adapter: none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fault_injection import DEMO_DATA, TINY_MODEL, run

STEADY = ["--max_steps", "1", "--save_strategy", "no"]


def _model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for file in TINY_MODEL.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def _last_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.splitlines()[-1]


def test_a_damaged_tokenizer_json_is_named(tmp_path):
    model = _model_copy(tmp_path)
    (model / "tokenizer.json").write_text('{"version": "1.0",\n  "truncation": ')  # cut short, line 2
    result = run(tmp_path, "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out"), *STEADY)
    assert result.returncode == 2
    assert _last_line(result) == (
        f"error: Cannot load the tokenizer of the model '{model}': {model / 'tokenizer.json'}, line 2: not valid JSON "
        "(Expecting value at column 17). Restore the tokenizer files (save_pretrained of the tokenizer writes them) or "
        "give a model whose tokenizer loads."
    )


def test_a_model_folder_without_config_json_is_named(tmp_path):
    model = _model_copy(tmp_path)
    (model / "config.json").unlink()
    result = run(tmp_path, "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out"), *STEADY)
    assert result.returncode == 2
    assert _last_line(result) == (
        f"error: The model folder '{model}' has no config.json: a model folder holds config.json beside its weights "
        "(save_pretrained writes both). Point model_name_or_path at the folder that has them."
    )


def test_conversational_data_needs_a_chat_template(tmp_path):
    model = _model_copy(tmp_path)
    (model / "chat_template.jinja").unlink()
    data = tmp_path / "chat.jsonl"
    with data.open("w") as handle:
        for i in range(4):
            user = [{"role": "user", "content": f"What is {i} + 1?"}]
            pair = {"prompt": user, "chosen": [{"role": "assistant", "content": f"{i + 1}"}]}
            pair["rejected"] = [{"role": "assistant", "content": f"{i + 2}"}]
            handle.write(json.dumps(pair) + "\n")
    flags = ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")]
    result = run(tmp_path, *flags, *STEADY)
    assert result.returncode == 2
    assert _last_line(result) == (
        f"error: The data is conversational (lists of messages), but the tokenizer of '{model}' has no chat template "
        "to render them. Use a chat (instruct) model's tokenizer, set tokenizer.chat_template, or write the pairs as "
        "plain text."
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--per_device_train_batch_size", "0"],
            "error: per_device_train_batch_size must be an integer >= 1, got 0.",
        ),
        (
            ["--use_peft", "true", "--adapter", "none"],
            "error: ModelConfig's use_peft options mean adapter: lora, but adapter is 'none'; set only one.",
        ),
    ],
)
def test_contradicting_or_impossible_settings(tmp_path, flags, message):
    result = run(tmp_path, "--output_dir", str(tmp_path / "out"), "--dataset_name", DEMO_DATA, *STEADY, *flags)
    assert result.returncode == 2 and _last_line(result) == message
    assert not (tmp_path / "out").exists()  # refused before anything was written
