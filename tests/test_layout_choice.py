"""``packing: auto`` weighed by cost: the estimate worked out by hand, the timing's verdict taken and logged,
an explicit layout honoured when it measures slower, and shapes the estimate has never seen."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from datasets import Dataset
from trainer_fixtures import config_kwargs, preference_dataset
from transformers import Qwen2Config

from dpo_plugin.forward import layout_choice
from dpo_plugin.forward.layout_cost import BatchCost, ModelShape, estimate, packed_cost, padded_cost, time_layouts
from dpo_plugin.forward.logps import ForwardSettings
from dpo_plugin.forward.segment_kernels import CALL_COST
from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer
from dpo_plugin.trl import DPOConfig, DPOTrainer

PAIRS = [
    {"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10, 11, 12]},
    {"prompt_ids": [20, 21], "chosen_ids": [22], "rejected_ids": [23]},
]


def test_the_estimate_counts_positions_attention_pairs_and_calls():
    settings = ForwardSettings()
    # TRL's rows: chosen 5 and 3 tokens, rejected 6 and 3, each padded to 6; the mask keeps SDPA on the full square
    assert padded_cost(PAIRS, settings, compact_head=False) == BatchCost(24, 24, 4 * 6**2, 1, 17)
    assert padded_cost(PAIRS, settings, compact_head=True).head == 2 + 1 + 3 + 1  # Triton: the scored tokens only
    # prefix sharing: 5 + 4 + 3 + 2 = 14 positions; causal sequences of 5, 6 (the branch over the prompt less its
    # last token), 3 and 3 keys; at a call cost of one pair the buckets are {3, 3}, {5}, {6}: 9 + 12.5 + 18 pairs
    width = CALL_COST  # heads × head_dim such that a call costs one query-key pair
    assert packed_cost(PAIRS, settings, False, share_prompt=True, width=width) == BatchCost(14, 14, 39.5, 3, 17)
    # padding-free: four sequences of 5, 3, 6, 3 positions, each its own bucket but the two of 3
    assert packed_cost(PAIRS, settings, False, share_prompt=False, width=width) == BatchCost(17, 17, 39.5, 3, 17)
    # truncated as TRL truncates: max_length 4 keeps [5 6 7 8], [5 6 7 10], [20 21 22], [20 21 23]
    truncated = ForwardSettings(max_length=4)
    assert padded_cost(PAIRS, truncated, compact_head=False) == BatchCost(16, 16, 4 * 4**2, 1, 14)
    # rows of one length: no padding, so no mask, and SDPA skips the upper triangle
    equal = [{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5, 6]}]
    assert padded_cost(equal, settings, compact_head=False) == BatchCost(8, 8, 2 * 4**2 / 2, 1, 8)


def test_the_model_shape_and_its_flops_per_position():
    config = Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    shape = ModelShape.of(config)
    assert shape == ModelShape(64, 2, 128, config.vocab_size, 4, 2, 16)
    # q, k, v, o projections (64 × 16 × (4 + 2 + 2 + 4)) and a gated MLP (3 × 64 × 128), two FLOPs per weight
    assert shape.layer_flops == 2 * (64 * 16 * 12 + 3 * 64 * 128)
    cost = BatchCost(body=10, head=4, pairs=50, calls=2, real=8)
    head, attention = 4 * 2 * 64 * config.vocab_size, 2 * (4 * 64 * 50 + 4 * CALL_COST * 2)
    assert cost.flops(shape) == 10 * shape.layer_flops * 2 + head + attention


def _trainer(tmp_path, dataset=None, **overrides):
    tokenizer = tiny_tokenizer()
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=1, **overrides))
    return DPOTrainer(
        tiny_model(len(tokenizer)),
        args=args,
        train_dataset=dataset if dataset is not None else preference_dataset(),
        processing_class=tokenizer,
    )


def test_auto_takes_the_layout_its_timing_finds_faster_and_says_why(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        trainer = _trainer(tmp_path)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("packing: auto →"))
    assert re.search(
        r"estimated [0-9.]+× the padded step's cost: [0-9.]+ against [0-9.]+ positions per real token", line
    )
    measured = re.search(r"measured ([0-9.]+)× on the run's first batch \(\d+ ms against \d+ ms padded\)", line)
    assert measured, line  # a tiny model's step is quick: both layouts are timed
    assert trainer.session.layout == ("prefix_sharing" if float(measured.group(1)) < 1 else "none")
    trainer.train()


def _long_prompts(n=8):
    """Long shared prompts and answers of very different lengths: most of TRL's positions are repeats and padding."""
    prompt = "the same long prompt " * 6
    return Dataset.from_list(
        [{"prompt": f"Context {i}: {prompt}", "chosen": " Yes.", "rejected": " No" + "!" * 40} for i in range(n)]
    )


def test_an_estimate_that_settles_it_is_not_timed(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(layout_choice, "QUICK_STEP_S", 0.0)  # as for a model large enough that timing costs
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        trainer = _trainer(tmp_path, _long_prompts(), max_length=256)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("packing: auto →"))
    ratio = float(re.search(r"estimated ([0-9.]+)×", line).group(1))
    assert ratio <= layout_choice.CLEAR_WIN and "measured" not in line
    assert trainer.session.layout == "prefix_sharing"


def _measured_slower(*args, **kwargs):
    """A timing in which the packed step takes 1.31× the padded one (a wall clock cannot be made to say so)."""
    return {"none": 0.010, "prefix_sharing": 0.0131}


def test_a_layout_measured_slower_is_auto_s_fallback_and_an_explicit_one_is_kept_with_a_warning(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(layout_choice, "time_layouts", _measured_slower)
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        auto = _trainer(tmp_path / "auto")
    assert auto.session.layout == "none"
    assert re.search(
        r"packing: auto → none .*measured 1\.31× on the run's first batch \(13 ms against 10 ms", caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        explicit = _trainer(tmp_path / "explicit", packing="prefix_sharing")
    assert explicit.session.layout == "prefix_sharing"
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING and "kept as set" in r.getMessage())
    assert "looks slower than packing: none" in warning.getMessage() and "measured 1.31×" in warning.getMessage()


@pytest.mark.parametrize("packing", ["auto", "prefix_sharing", "padding_free"])
def test_shapes_the_estimate_never_saw_give_a_valid_layout(tmp_path, packing):
    """One pair, one-character prompt and answers, max_length 8192: a layout is chosen and a step trains."""
    one = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    trainer = _trainer(tmp_path, one, packing=packing, max_length=8192, per_device_train_batch_size=4)
    assert trainer.session.layout in (("none", "prefix_sharing") if packing == "auto" else (packing,))
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))
    shape = ModelShape.of(trainer.model.config)
    for rows in ([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}], []):
        found = estimate(
            rows, 8, shape, ForwardSettings(max_length=8192), share_prompt=True, compact_head=False, passes=3
        )
        assert found.batches == len(rows) and (found.ratio > 0 if rows else found.ratio == 1.0)


def test_timing_the_layouts_leaves_the_models_gradients_and_weights_as_they_were(tmp_path):
    trainer = _trainer(tmp_path, packing="prefix_sharing")
    scorer, model = trainer.session.scorer, trainer.model
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.grad = torch.full_like(parameter, 0.5)
    weights = [p.detach().clone() for p in parameters]
    seconds = time_layouts(
        model,
        {"prefix_sharing": scorer.collator(PAIRS)},
        scorer.settings,
        scorer.head,
        context=scorer.engine.autocast,
        backward=True,
        reference_forwards=1,
    )
    assert set(seconds) == {"prefix_sharing"} and seconds["prefix_sharing"] > 0
    # the backward's gradients went elsewhere: a backward that accumulated into these would have changed them
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in parameters)
    assert all(torch.equal(p, w) for p, w in zip(parameters, weights, strict=True))
