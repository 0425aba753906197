"""Adapter recipes: trainable-parameter counts worked out from the tiny model's shapes, training, save/reload, merge."""

from __future__ import annotations

import types

import pytest
import torch
from peft import PeftModel, get_peft_model

import dpo_plugin
from dpo_plugin.adapter_recipes.recipe import (
    adapter_from_model_config,
    merge_and_save,
    save_converted_adapter,
    save_initial_adapter,
)
from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.trl import DPOConfig, DPOTrainer
from trainer_fixtures import config_kwargs, preference_dataset

# The tiny Llama: hidden 32, intermediate 64, 4 heads of 8, 2 KV heads → per layer (in, out) of each linear.
LINEARS = {"q_proj": (32, 32), "k_proj": (32, 16), "v_proj": (32, 16), "o_proj": (32, 32),
           "gate_proj": (32, 64), "up_proj": (32, 64), "down_proj": (64, 32)}  # fmt: skip
LAYERS = 2
R = 4


def expected_trainable(recipe: str, targets=tuple(LINEARS)) -> int:
    lora = sum(R * (LINEARS[t][0] + LINEARS[t][1]) for t in targets) * LAYERS
    if recipe == "dora":  # plus one magnitude per output feature
        lora += sum(LINEARS[t][1] for t in targets) * LAYERS
    return lora


def _wrap(recipe_name, model, **params):
    recipe = dpo_plugin.adapters()[recipe_name].obj
    config = recipe.peft_config(model, {"r": R, "lora_alpha": 8, "lora_dropout": 0.0, **params})
    return recipe, get_peft_model(model, config)


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["lora", "dora", "rslora", "pissa", "olora"])
def test_recipe_trains_saves_reloads_and_merges(name, make_model, tmp_path):
    original = {n: p.detach().clone() for n, p in make_model().named_parameters()}
    recipe, model = _wrap(name, make_model())
    assert _trainable(model) == expected_trainable(name)
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters() if "lora_" not in n}
    rewritten = any(not torch.equal(base[n], original[n]) for n in original)
    assert recipe.changes_base_weights == rewritten  # PiSSA/OLoRA rewrite the base weights at init
    if rewritten:
        save_initial_adapter(model, tmp_path / "initial")

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.randint(0, 262, (2, 12))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)

    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    if rewritten:  # converted to a plain LoRA on the original base weights
        save_converted_adapter(model, tmp_path / "adapter", tmp_path / "initial")
    else:
        model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_model(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    merged_dir = merge_and_save(model, tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_target_modules_list_and_regex(make_model):
    _, model = _wrap("lora", make_model(), target_modules=["q_proj", "v_proj"])
    assert _trainable(model) == expected_trainable("lora", ("q_proj", "v_proj"))
    _, model = _wrap("lora", make_model(), target_modules=r".*\.(k_proj|o_proj)")
    assert _trainable(model) == expected_trainable("lora", ("k_proj", "o_proj"))


def test_bad_targets_and_params(make_model):
    recipe = dpo_plugin.adapters()["lora"].obj
    with pytest.raises(ConfigError, match=r"\['attn'\] match no linear layer.*q_proj"):
        recipe.peft_config(make_model(), {"target_modules": ["q_proj", "attn"]})
    with pytest.raises(ConfigError, match="match no linear layer"):
        recipe.peft_config(make_model(), {"target_modules": r"nothing\..*"})
    with pytest.raises(ConfigError, match="LM head"):
        recipe.peft_config(make_model(), {"target_modules": ["q_proj", "lm_head"]})
    with pytest.raises(ConfigError, match="positive integer"):
        recipe.peft_config(make_model(), {"r": 0})
    with pytest.raises(ConfigError, match="accepted: r, lora_alpha"):
        recipe.peft_config(make_model(), {"rank": 8})
    with pytest.raises(ConfigError, match="takes no adapter_params"):
        dpo_plugin.adapters()["none"].obj.pre_load({"r": 8}, {})


def test_qlora_needs_cuda_before_anything_loads():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        dpo_plugin.adapters()["qlora"].obj.pre_load({}, {})
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        DPOTrainer("/does/not/matter", args=DPOConfig(**config_kwargs(adapter="qlora")), train_dataset=preference_dataset())


def test_registry_names_and_typos():
    assert {"none", "lora", "dora", "rslora", "pissa", "olora", "qlora"} <= set(dpo_plugin.adapters())
    with pytest.raises(UnknownNameError, match="Did you mean 'dora'"):
        DPOConfig(**config_kwargs(adapter="doora"))


def test_model_config_peft_options_map_onto_recipes():
    base = dict(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.1, lora_target_modules=["q_proj"],
                lora_modules_to_save=None, use_dora=False, use_rslora=False, load_in_4bit=False)  # fmt: skip
    args = types.SimpleNamespace(**base)
    assert adapter_from_model_config(args) == ("lora", {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["q_proj"]})
    assert adapter_from_model_config(types.SimpleNamespace(**{**base, "use_dora": True}))[0] == "dora"
    assert adapter_from_model_config(types.SimpleNamespace(**{**base, "use_rslora": True}))[0] == "rslora"
    assert adapter_from_model_config(types.SimpleNamespace(**{**base, "load_in_4bit": True}))[0] == "qlora"
    assert adapter_from_model_config(types.SimpleNamespace(**{**base, "use_peft": False})) is None


@pytest.mark.parametrize("name", ["lora", "pissa"])
def test_trainer_trains_with_recipes_and_merges(name, make_model, tokenizer, tmp_path):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), adapter=name, adapter_params={"r": R}, max_steps=2, merge_adapter=True))
    trainer = DPOTrainer(make_model(), args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    expected = "adapter (the policy" if name == "lora" else "copy"
    assert expected in trainer.reference_strategy.describe()
    assert _trainable(trainer.model) == expected_trainable(name)
    trainer.train()
    trainer.save_model()
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "merged" / "config.json").exists()
    # the saved adapter applies to the original base weights (PiSSA converted), and the merged model equals it
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([tokenizer("What is 3 + 4?")["input_ids"]])
    policy = trainer.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad():
        expected = policy(input_ids=ids).logits
        reloaded = PeftModel.from_pretrained(make_model(), tmp_path).eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_adapter_reference_refused_with_pissa(make_model, tokenizer, tmp_path):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), adapter="pissa", reference="adapter"))
    with pytest.raises(ConfigError, match="rewrites the base weights"):
        DPOTrainer(make_model(), args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
