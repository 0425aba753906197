"""Adapter recipes on the tiny Llama: trainable-parameter counts worked out by hand from its shapes, each
recipe's initialisation against an independent float64 construction, training, save/reload, merging,
parameter and target checks, TRL ModelConfig's mapping, the registry, and the trainer's use of them."""

from __future__ import annotations

import math

import pytest
import torch
from peft import PeftModel, get_peft_model
from trainer_fixtures import config_kwargs, preference_dataset
from transformers import AutoModelForCausalLM
from trl import ModelConfig

import dpo_plugin
from dpo_plugin.adapter_recipes.recipe import (
    adapter_from_model_config,
    merge_and_save,
    save_converted_adapter,
    save_initial_adapter,
)
from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.trl import DPOConfig, DPOTrainer

# The tiny Llama: hidden 32, intermediate 64, 4 heads of 8 and 2 KV heads, 2 blocks. Each block's linear
# layers as (in, out); Σ(in + out) = 512 and Σ out = 256 per block.
LINEARS = {
    "q_proj": (32, 32),
    "k_proj": (32, 16),
    "v_proj": (32, 16),
    "o_proj": (32, 32),
    "gate_proj": (32, 64),
    "up_proj": (32, 64),
    "down_proj": (64, 32),
}
BLOCKS = 2
R, ALPHA = 4, 8
# LoRA adds A (r × in) and B (out × r) per targeted layer: r·Σ(in + out)·blocks = 4·512·2 = 4096.
# DoRA adds a magnitude per output feature: + 256·2 = 4608.
TRAINABLE = {"lora": 4096, "dora": 4608, "rslora": 4096, "pissa": 4096, "olora": 4096}
SCALING = {"lora": ALPHA / R, "dora": ALPHA / R, "rslora": ALPHA / math.sqrt(R), "pissa": ALPHA / R, "olora": ALPHA / R}
REWRITES_BASE = {"lora": False, "dora": False, "rslora": False, "pissa": True, "olora": True}
PAPERS = {
    "lora": "2106.09685",
    "dora": "2402.09353",
    "rslora": "2312.03732",
    "pissa": "2404.02948",
    "olora": "2406.01775",
    "qlora": "2305.14314",
}


def lora_count(targets) -> int:
    """r·(in + out) summed over the targeted layers of every block."""
    return sum(R * sum(LINEARS[t]) for t in targets) * BLOCKS


def recipe(name: str):
    return dpo_plugin.adapters()[name].obj


def wrap(name: str, model, **params):
    config = recipe(name).peft_config(model, {"r": R, "lora_alpha": ALPHA, "lora_dropout": 0.0, **params})
    return get_peft_model(model, config)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def plain_name(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


IDS = torch.tensor([[5, 17, 99, 3, 250, 41, 8, 77, 120, 64, 33, 2], [9, 9, 200, 13, 1, 0, 45, 61, 7, 19, 230, 101]])


def test_the_hand_table_is_the_tiny_llama(make_model):
    layer = make_model().model.layers[0]
    for name, (fan_in, fan_out) in LINEARS.items():
        module = getattr(layer.self_attn, name, None) or getattr(layer.mlp, name)
        assert tuple(module.weight.shape) == (fan_out, fan_in), name
    assert sum(sum(s) for s in LINEARS.values()) == 512 and sum(o for _, o in LINEARS.values()) == 256


@pytest.mark.parametrize("name", ["lora", "dora", "rslora", "pissa", "olora"])
def test_recipe_initialises_trains_saves_reloads_and_merges(name, make_model, tmp_path):
    original = make_model()
    model = wrap(name, make_model())
    assert sum(p.numel() for p in trainable(model).values()) == TRAINABLE[name]
    assert all("lora_" in n for n in trainable(model))

    # Every recipe starts as the original function; PiSSA/OLoRA by moving part of W into the adapter.
    torch.testing.assert_close(logits(model, IDS), logits(original, IDS), rtol=0, atol=1e-5)
    assert recipe(name).changes_base_weights is REWRITES_BASE[name]
    base = {plain_name(n): p for n, p in model.named_parameters() if "lora_" not in n}
    rewritten = {n for n, p in original.named_parameters() if not torch.equal(base[n], p)}
    assert bool(rewritten) is REWRITES_BASE[name]
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(SCALING[name])
    w = original.model.layers[0].self_attn.q_proj.weight.detach().double()
    update = q.scaling["default"] * (q.lora_B["default"].weight @ q.lora_A["default"].weight).detach().double()
    if name == "pissa":  # s·B·A = U_r·S_r·V_rᵀ, the top-r singular part of W
        u, s, vt = torch.linalg.svd(w)
        torch.testing.assert_close(update, u[:, :R] @ torch.diag(s[:R]) @ vt[:R], rtol=0, atol=1e-5)
    elif name == "olora":  # B·A = Q[:, :r]·R[:r] from W = Q·R (the product does not depend on QR's signs)
        qr_q, qr_r = torch.linalg.qr(w)
        torch.testing.assert_close(update / q.scaling["default"], qr_q[:, :R] @ qr_r[:R], rtol=0, atol=1e-5)
    else:  # B starts at zero
        assert not update.any()
    if rewritten:
        torch.testing.assert_close(q.base_layer.weight.detach().double(), w - update, rtol=0, atol=1e-5)
        save_initial_adapter(model, tmp_path / "initial")

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(trainable(model).values(), lr=0.1)
    model.train()
    for _ in range(2):
        model(input_ids=IDS, labels=IDS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(trainable(model))  # every adapter weight moved (B first, then A), nothing else
    trained = logits(model, IDS)

    if rewritten:  # peft's conversion: a plain LoRA that applies to the original base weights
        save_converted_adapter(model, tmp_path / "adapter", tmp_path / "initial")
    else:
        model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_model(), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, IDS), trained, rtol=0, atol=1e-5)

    merged_dir = merge_and_save(model, tmp_path / "merged")
    assert merged_dir == tmp_path / "merged"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not isinstance(merged, PeftModel) and not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, IDS), trained, rtol=0, atol=1e-5)
    # the trained PeftModel was merged through a copy: it still has its adapters and the same outputs
    assert set(trainable(model)) == changed
    torch.testing.assert_close(logits(model, IDS), trained, rtol=0, atol=0)


def test_target_modules_list_and_regex(make_model):
    model = wrap("lora", make_model(), target_modules=["q_proj", "v_proj"])
    assert sum(p.numel() for p in trainable(model).values()) == lora_count(["q_proj", "v_proj"]) == 896
    model = wrap("lora", make_model(), target_modules=r".*\.(k_proj|down_proj)")
    assert sum(p.numel() for p in trainable(model).values()) == lora_count(["k_proj", "down_proj"]) == 1152


def test_all_linear_is_the_default_and_leaves_the_lm_head_alone(make_model):
    config = recipe("lora").peft_config(make_model(), {})
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (16, 32, 0.05, "none")
    assert config.target_modules == "all-linear" and config.modules_to_save is None
    model = get_peft_model(make_model(), config)
    assert sum(p.numel() for p in trainable(model).values()) == 16 * 512 * BLOCKS
    assert type(model.get_output_embeddings()) is torch.nn.Linear


def test_lm_head_can_train_fully_through_modules_to_save(make_model, tokenizer):
    model = wrap("lora", make_model(), modules_to_save=["lm_head"])
    vocab = len(tokenizer)
    assert vocab == 256 + 6  # bytes + pad/end/bos + user/assistant/system
    assert sum(p.numel() for p in trainable(model).values()) == TRAINABLE["lora"] + vocab * 32
    assert model.get_output_embeddings().weight.requires_grad  # the weight TRL's fused head reads trains


def test_targets_that_match_nothing_or_the_lm_head_are_refused(make_model):
    lora = recipe("lora")
    linear_layers = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
    with pytest.raises(ConfigError, match=rf"\['attn'\] match no module.*{linear_layers}"):
        lora.peft_config(make_model(), {"target_modules": ["q_proj", "attn"]})
    with pytest.raises(ConfigError, match=rf"match no module.*{linear_layers}"):
        lora.peft_config(make_model(), {"target_modules": r"nothing\..*"})
    with pytest.raises(ConfigError, match=rf"match no module.*{linear_layers}"):
        lora.peft_config(make_model(), {"target_modules": "q_proj"})  # a string is a regex over full names
    for targets in (["q_proj", "lm_head"], ".*", r"lm_\w+"):
        with pytest.raises(ConfigError, match="LM head 'lm_head'.*never train"):
            lora.peft_config(make_model(), {"target_modules": targets})
    with pytest.raises(ConfigError, match=r"modules_to_save \['lm_haed'\] match no module.*lm_head"):
        lora.peft_config(make_model(), {"modules_to_save": ["lm_haed"]})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rank": 8}, r"\['rank'\] are not options of LoRA; accepted: r \(default 16\), lora_alpha \(default 32\)"),
        ({"r": 0}, "r of LoRA must be a positive integer"),
        ({"r": -2}, "r of LoRA must be a positive integer"),
        ({"r": 2.5}, "r of LoRA must be a positive integer"),
        ({"r": True}, "r of LoRA must be a positive integer"),
        ({"lora_alpha": "8"}, "lora_alpha of LoRA must be a positive number"),
        ({"lora_dropout": 1.0}, r"lora_dropout of LoRA must be a number in \[0, 1\)"),
        ({"target_modules": 5}, "target_modules of LoRA must be 'all-linear', a regex"),
        ({"target_modules": ["q_proj", 3]}, "target_modules of LoRA must be"),
        ({"modules_to_save": "lm_head"}, "modules_to_save of LoRA must be null or a list"),
        ({"bias": "some"}, "bias of LoRA must be one of none, all, lora_only"),
    ],
)
def test_bad_params_are_config_errors(params, message, make_model):
    with pytest.raises(ConfigError, match=message):
        recipe("lora").peft_config(make_model(), params)
    with pytest.raises(ConfigError, match=message):
        recipe("lora").pre_load(params, {})


def test_whole_numbers_are_accepted_for_float_params(make_model):
    config = recipe("lora").peft_config(
        make_model(), {"lora_alpha": 16, "lora_dropout": 0, "target_modules": ("q_proj",)}
    )
    assert (config.lora_alpha, config.lora_dropout, config.target_modules) == (16, 0, {"q_proj"})


def test_none_is_full_fine_tuning(make_model):
    none = recipe("none")
    assert none.peft_config(make_model(), {}) is None and none.changes_base_weights is False
    assert none.pre_load({}, {"dtype": "float32"}) == {"dtype": "float32"}
    with pytest.raises(ConfigError, match="takes no adapter_params"):
        none.pre_load({"r": 8}, {})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_qlora_needs_cuda_before_anything_loads(make_model):
    qlora = recipe("qlora")
    assert qlora.changes_base_weights is False
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        qlora.pre_load({}, {"dtype": "bfloat16"})
    with pytest.raises(ConfigError, match="r of QLoRA must be a positive integer"):  # params are checked first
        qlora.pre_load({"r": 0}, {})
    with pytest.raises(ConfigError, match="qlora needs the model loaded in 4 bits"):
        qlora.peft_config(make_model(), {})
    # through the trainer: the CUDA error comes before the (nonexistent) model path is ever read
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        DPOTrainer(
            "/does/not/exist", args=DPOConfig(**config_kwargs(adapter="qlora")), train_dataset=preference_dataset()
        )


def test_registry_names_descriptions_and_typos():
    registry = dpo_plugin.adapters()
    assert {"none", "lora", "dora", "rslora", "pissa", "olora", "qlora"} <= set(registry)
    for name, paper in PAPERS.items():
        assert f"arXiv:{paper}" in registry[name].description, name
        assert registry[name].plugin == "dpo_plugin.adapter_recipes.builtin"
    assert dpo_plugin.adapters() is registry  # the public function survives importing the recipes
    with pytest.raises(UnknownNameError, match="Did you mean 'dora'") as error:
        registry["doora"]
    assert error.value.closest == "dora"


def test_model_config_peft_options_map_onto_recipes(make_model):
    assert adapter_from_model_config(ModelConfig()) is None
    assert adapter_from_model_config(ModelConfig(use_peft=True)) == (
        "lora",
        {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05},
    )
    full = ModelConfig(
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        lora_target_modules=["q_proj", "v_proj"],
        lora_modules_to_save=["lm_head"],
    )
    assert adapter_from_model_config(full) == (
        "lora",
        {
            "r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.1,
            "target_modules": ["q_proj", "v_proj"],
            "modules_to_save": ["lm_head"],
        },
    )
    assert adapter_from_model_config(ModelConfig(use_peft=True, use_dora=True))[0] == "dora"
    assert adapter_from_model_config(ModelConfig(use_peft=True, use_rslora=True))[0] == "rslora"
    assert adapter_from_model_config(ModelConfig(use_peft=True, load_in_4bit=True))[0] == "qlora"
    # ModelConfig turns a one-element list into its element; it still means that module, not a regex
    single = ModelConfig(use_peft=True, lora_r=R, lora_target_modules=["q_proj"])
    assert single.lora_target_modules == "q_proj"
    name, params = adapter_from_model_config(single)
    assert params["target_modules"] == ["q_proj"]
    model = get_peft_model(make_model(), recipe(name).peft_config(make_model(), params))
    assert sum(p.numel() for p in trainable(model).values()) == lora_count(["q_proj"]) == 512
    assert (
        adapter_from_model_config(ModelConfig(use_peft=True, lora_target_modules=["all-linear"]))[1]["target_modules"]
        == "all-linear"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"use_dora": True, "use_rslora": True}, "use_dora and use_rslora; no adapter recipe combines them"),
        ({"load_in_4bit": True, "use_dora": True}, "load_in_4bit and use_dora"),
        ({"load_in_8bit": True}, "load_in_8bit=True has no adapter recipe"),
        ({"lora_task_type": "SEQ_CLS"}, "lora_task_type='SEQ_CLS' has no adapter recipe"),
        ({"lora_target_parameters": ["experts.w1"]}, "lora_target_parameters=.* has no adapter recipe"),
        ({"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}, "qlora quantizes to nf4 only"),
    ],
)
def test_model_config_options_without_a_recipe_are_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        adapter_from_model_config(ModelConfig(use_peft=True, **options))


@pytest.mark.parametrize("name", ["lora", "pissa"])
def test_trainer_trains_with_recipes_and_merges(name, make_model, tokenizer, tmp_path):
    args = DPOConfig(
        **config_kwargs(
            output_dir=str(tmp_path), adapter=name, adapter_params={"r": R}, max_steps=1, merge_adapter=True
        )
    )
    trainer = DPOTrainer(make_model(), args=args, train_dataset=preference_dataset(), processing_class=tokenizer)
    expected = "adapter (the policy" if name == "lora" else "copy"
    assert expected in trainer.session.reference_strategy.describe()
    assert sum(p.numel() for p in trainable(trainer.model).values()) == TRAINABLE[name]
    trainer.train()
    trainer.save_model()
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "merged" / "config.json").exists()
    # the saved adapter applies to the original base weights (PiSSA converted), and the merged model equals it
    ids = torch.tensor([tokenizer("What is 3 + 4?")["input_ids"]])
    expected = logits(trainer.accelerator.unwrap_model(trainer.model), ids)
    torch.testing.assert_close(
        logits(PeftModel.from_pretrained(make_model(), tmp_path), ids), expected, rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"), ids), expected, rtol=1e-4, atol=1e-4
    )


def test_adapter_reference_refused_with_pissa(make_model, tokenizer, tmp_path):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), adapter="pissa", reference="adapter"))
    with pytest.raises(ConfigError, match="rewrites the base weights"):
        DPOTrainer(make_model(), args=args, train_dataset=preference_dataset(), processing_class=tokenizer)


def test_a_peft_config_with_adapter_none_set_is_refused_as_contradicting(make_model, tokenizer, tmp_path):
    """docs/coming-from-trl.md: contradicting adapter settings are an error; ``adapter: none`` said explicitly and a
    ``peft_config`` passed contradict each other (left unset, the peft_config is TRL's way and trains)."""
    from peft import LoraConfig

    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), adapter="none"))
    with pytest.raises(ConfigError, match="A peft_config was passed, but adapter: none is set"):
        DPOTrainer(
            make_model(),
            args=args,
            train_dataset=preference_dataset(),
            processing_class=tokenizer,
            peft_config=LoraConfig(),
        )
    unset = DPOConfig(**config_kwargs(output_dir=str(tmp_path)))
    trainer = DPOTrainer(
        make_model(),
        args=unset,
        train_dataset=preference_dataset(),
        processing_class=tokenizer,
        peft_config=LoraConfig(),
    )
    assert isinstance(trainer.model, PeftModel)
