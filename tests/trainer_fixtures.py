"""Helpers shared by the trainer tests: a small preference dataset and trainer construction."""

from __future__ import annotations

import copy
from typing import Any

import torch
from datasets import Dataset

from dpo_plugin.testing.tiny import tiny_model


def preference_rows(n: int = 8) -> list[dict[str, str]]:
    """Standard-format pairs with prompts and completions of varied lengths (so normalisations matter)."""
    rows = []
    for i in range(n):
        a, b = 3 + 2 * i, 7 + i
        rows.append(
            {
                "prompt": f"Question {i}: what is {a} + {b}?" + " Think." * (i % 3),
                "chosen": f" {a + b}." + " Sure." * (i % 2),
                "rejected": f" It is {a + b + 1}, I believe, more or less" + "!" * (i % 4),
            }
        )
    return rows


def preference_dataset(n: int = 8) -> Dataset:
    return Dataset.from_list(preference_rows(n))


def policy_and_reference(vocab_size: int, seed: int = 0, scale: float = 0.02) -> tuple[Any, Any]:
    """A tiny model and a copy whose weights are perturbed, so policy != reference."""
    reference = tiny_model(vocab_size, seed=seed)
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return policy, reference


def config_kwargs(**overrides: Any) -> dict[str, Any]:
    """DPOConfig keywords for fast CPU tests."""
    kwargs = dict(
        output_dir="unused",
        bf16=False,
        report_to="none",
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        max_length=64,
        learning_rate=1e-3,
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    kwargs.update(overrides)
    return kwargs
