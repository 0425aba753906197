"""A resume compares the checkpoint's run with the new one: changed losses, data or max_length are refused, each
difference named, unless resume_changed: true; another architecture is refused always, before any weight loads."""

from __future__ import annotations

import json
import logging

import pytest
from fault_injection import DEMO_DATA, TINY_MODEL, run
from trainer_fixtures import config_kwargs, preference_dataset

from dpo_plugin.errors import ConfigError
from dpo_plugin.run_record import RECORD_FILE
from dpo_plugin.testing.tiny import tiny_model
from dpo_plugin.trl import DPOConfig, DPOTrainer

EVERY_STEP = {"save_strategy": "steps", "save_steps": 1}


def _trainer(tmp_path, tokenizer, *, model=None, dataset=None, **overrides):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path / "out"), **EVERY_STEP, **overrides))
    model = model if model is not None else tiny_model(len(tokenizer))
    train = dataset if dataset is not None else preference_dataset()
    return DPOTrainer(model, args=args, train_dataset=train, processing_class=tokenizer)


@pytest.fixture
def saved_run(tmp_path, tokenizer):
    """Two steps of sigmoid DPO at max_length 64, a checkpoint after each."""
    _trainer(tmp_path, tokenizer, max_steps=2).train()
    return tmp_path / "out"


def test_each_checkpoint_records_its_run(saved_run):
    record = json.loads((saved_run / "checkpoint-2" / RECORD_FILE).read_text())
    sigmoid = {"weight": 1.0, "beta": 0.1, "f_alpha_divergence_coef": 0.5, "f_divergence_type": "reverse_kl"}
    assert record["losses"] == {"sigmoid": sigmoid}
    assert record["max_length"] == 64 and record["reference"] == {"name": "auto"}
    assert record["architecture"]["hidden_size"] == 32 and record["architecture"]["num_hidden_layers"] == 2
    assert len(record["data"]) == 32  # a BLAKE2b-128 hex digest of the rows


def test_a_changed_loss_and_max_length_are_refused_naming_both(saved_run, tmp_path, tokenizer):
    changed = _trainer(tmp_path, tokenizer, max_steps=3, loss_type=["ipo"], max_length=48)
    with pytest.raises(ConfigError) as info:
        changed.train(resume_from_checkpoint=True)
    message = str(info.value)
    assert message.startswith(f"Resuming {saved_run / 'checkpoint-2'} would change the run it continues: losses: ")
    assert "sigmoid×1.0 (beta=0.1, " in message and "→ ipo×1.0 (beta=0.1, " in message
    assert "; max_length: 64 → 48." in message and "set resume_changed: true to continue with the change" in message
    assert changed.state.global_step == 0  # refused before any step


def test_changed_data_is_refused_and_resume_changed_lets_it_go_on(saved_run, tmp_path, tokenizer, caplog):
    other = preference_dataset(9)
    with pytest.raises(ConfigError, match="data: the training pairs differ from the checkpoint's"):
        _trainer(tmp_path, tokenizer, dataset=other, max_steps=3).train(resume_from_checkpoint=True)
    allowed = _trainer(tmp_path, tokenizer, dataset=other, max_steps=3, resume_changed=True)
    with caplog.at_level(logging.WARNING):
        allowed.train(resume_from_checkpoint=True)
    assert allowed.state.global_step == 3
    assert "with a changed run (resume_changed: true): data: the training pairs differ" in caplog.text


def test_another_architecture_is_refused_even_with_resume_changed(saved_run, tmp_path, tokenizer):
    wider = tiny_model(len(tokenizer), hidden_size=48)
    trainer = _trainer(tmp_path, tokenizer, model=wider, max_steps=3, resume_changed=True)
    with pytest.raises(ConfigError) as info:
        trainer.train(resume_from_checkpoint=True)
    assert str(info.value).startswith(
        f"Cannot resume {saved_run / 'checkpoint-2'}: it was saved by a model of another architecture "
        "(architecture.head_dim: 8 → 12; architecture.hidden_size: 32 → 48; architecture.intermediate_size: 64 → 96), "
        "whose weights do not fit"
    )


def test_the_command_line_refuses_a_changed_run_before_the_weights_load(tmp_path):
    """The model folder's weights are garbage: the refusal comes first, so the comparison ran before they load."""
    model = tmp_path / "model"
    model.mkdir()
    for file in TINY_MODEL.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    out = tmp_path / "out"
    flags = ["--model_name_or_path", str(model), "--dataset_name", DEMO_DATA, "--output_dir", str(out)]
    first = run(tmp_path, *flags, "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    (model / "model.safetensors").write_bytes(b"not weights")
    resumed = run(tmp_path, *flags, "--max_steps", "2", "--max_length", "100", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 2
    assert resumed.stderr.splitlines()[-1].startswith(
        f"error: Resuming {out / 'checkpoint-1'} would change the run it continues: max_length: 128 → 100."
    )
