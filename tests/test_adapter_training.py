"""Adapter recipes through the trainer and the YAML path.

* TRL ModelConfig's ``use_peft`` / ``lora_*`` keys in a YAML map onto the ``lora`` recipe (and conflict with
  another ``adapter:``).
* Every recipe but qlora trains 2 steps through ``dpo_plugin.trl.DPOTrainer``: the trainable-parameter count
  equals the one worked out from the model config (r·(in + out) per targeted Linear, plus DoRA's magnitude per
  output feature), and training changes exactly the adapter weights. (``test_adapters.py`` covers lora and pissa
  saving and merging through the trainer; this covers every recipe's training.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from peft import get_peft_model
from trainer_fixtures import config_kwargs, preference_dataset
from transformers import LlamaConfig

import dpo_plugin
from dpo_plugin.errors import ConfigError
from dpo_plugin.hosts.trl.run import _apply_model_config_adapter
from dpo_plugin.hosts.trl.train_args import parse_train_args
from dpo_plugin.trl import DPOConfig, DPOTrainer

PACKAGE = Path(dpo_plugin.__file__).parent


def linear_shapes(config: LlamaConfig) -> list[tuple[int, int]]:
    """(in, out) of every Linear in the decoder blocks of a Llama with this config (the LM head excluded)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    block = [
        (hidden, hidden),
        (hidden, kv),
        (hidden, kv),
        (hidden, hidden),
        (hidden, inter),
        (hidden, inter),
        (inter, hidden),
    ]
    return block * config.num_hidden_layers


def expected_trainable(config: LlamaConfig, r: int, dora: bool) -> int:
    shapes = linear_shapes(config)
    return sum(r * (i + o) for i, o in shapes) + (sum(o for _, o in shapes) if dora else 0)


# -- ModelConfig's peft keys through the YAML path ----------------------------------------------------------------


def _yaml(tmp_path, **values) -> str:
    path = tmp_path / "run.yaml"
    base = {
        "model_name_or_path": str(PACKAGE / "testing" / "tiny-model"),
        "dataset_name": str(PACKAGE / "demo" / "data"),
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
    }
    path.write_text(yaml.safe_dump({**base, **values}))
    return str(path)


def test_yaml_use_peft_maps_onto_lora(tmp_path, make_model):
    request = parse_train_args(["--config", _yaml(tmp_path, use_peft=True, lora_r=8, lora_alpha=16)])
    assert request.model.use_peft and request.config.adapter == "none"  # mapped only when the run starts
    _apply_model_config_adapter(request)
    assert request.config.adapter == "lora"
    assert request.config.adapter_params == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05}  # TRL's default dropout
    # and the recipe builds exactly that adapter: r·(in + out) over every linear layer of the tiny Llama
    model = make_model()
    config = dpo_plugin.adapters()["lora"].obj.peft_config(model, request.config.adapter_params)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    wrapped = get_peft_model(model, config)
    count = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert count == expected_trainable(model.config, 8, dora=False) == 8 * 512 * 2


def test_yaml_use_peft_without_lora_keys_keeps_trl_defaults(tmp_path):
    request = parse_train_args(["--config", _yaml(tmp_path, use_peft=True, use_dora=True)])
    _apply_model_config_adapter(request)
    assert request.config.adapter == "dora"
    assert request.config.adapter_params == {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}


def test_yaml_without_use_peft_leaves_the_adapter_alone(tmp_path):
    request = parse_train_args(["--config", _yaml(tmp_path, lora_r=8, adapter="rslora")])
    _apply_model_config_adapter(request)
    assert request.config.adapter == "rslora" and request.config.adapter_params is None


def test_yaml_use_peft_and_another_adapter_is_an_error(tmp_path):
    request = parse_train_args(["--config", _yaml(tmp_path, use_peft=True, lora_r=8, lora_alpha=16, adapter="dora")])
    with pytest.raises(ConfigError, match=r"adapter: lora.*'dora'.*set only one"):
        _apply_model_config_adapter(request)
    # the same adapter on both sides is no conflict
    request = parse_train_args(["--config", _yaml(tmp_path, use_peft=True, lora_r=8, adapter="lora")])
    _apply_model_config_adapter(request)
    assert request.config.adapter == "lora" and request.config.adapter_params["r"] == 8


def test_yaml_lora_keys_contradicting_adapter_params_are_an_error(tmp_path):
    values = dict(use_peft=True, lora_r=8, adapter="lora", adapter_params={"r": 4})
    request = parse_train_args(["--config", _yaml(tmp_path, **values)])
    with pytest.raises(ConfigError, match=r"lora_r=8 contradicts adapter_params.r=4; set only one"):
        _apply_model_config_adapter(request)
    # a key set on one side only is no conflict: ModelConfig's default dropout gives way to adapter_params
    request = parse_train_args(
        ["--config", _yaml(tmp_path, use_peft=True, lora_r=8, adapter_params={"lora_dropout": 0.0})]
    )
    _apply_model_config_adapter(request)
    assert request.config.adapter_params == {"r": 8, "lora_alpha": 32, "lora_dropout": 0.0}  # TRL's default alpha


# -- every recipe but qlora trains through the trainer ----------------------------------------------------------

R, ALPHA = 2, 4


@pytest.mark.parametrize("name", ["lora", "dora", "rslora", "pissa", "olora"])
def test_recipe_trains_two_steps_and_changes_only_the_adapter(name, make_model, tokenizer, tmp_path):
    policy = make_model()
    model_config = policy.config
    args = DPOConfig(
        **config_kwargs(
            output_dir=str(tmp_path),
            adapter=name,
            adapter_params={"r": R, "lora_alpha": ALPHA, "lora_dropout": 0.0},
            max_steps=2,
            learning_rate=1e-2,
        )
    )
    trainer = DPOTrainer(policy, args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    model = trainer.accelerator.unwrap_model(trainer.model)
    peft_config = model.peft_config["default"]
    assert (peft_config.r, peft_config.lora_alpha, peft_config.use_dora, peft_config.use_rslora) == (
        R,
        ALPHA,
        name == "dora",
        name == "rslora",
    )
    assert peft_config.init_lora_weights == {"pissa": "pissa", "olora": "olora"}.get(name, True)

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    count = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert count == expected_trainable(model_config, R, dora=name == "dora")
    assert all("lora_" in n for n in trainable)
    assert any("lora_magnitude_vector" in n for n in trainable) is (name == "dora")
    # one adapter per linear layer of the blocks; the LM head and the embeddings stay plain
    assert sum(1 for n in trainable if "lora_A" in n) == len(linear_shapes(model_config))

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable  # every adapter tensor moved (B at step 1, A at step 2), no base weight did
