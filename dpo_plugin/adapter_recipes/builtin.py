"""Registers the built-in adapter recipes."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..registry import Register
from .qlora import QLoraRecipe
from .recipe import LoraRecipe, NoAdapter


@hookimpl
def register_adapters(register: Register) -> None:
    register("none", NoAdapter(), description="Full fine-tuning, no adapter.")
    register("lora", LoraRecipe(), description="LoRA: low-rank adapters (Hu et al. 2021, arXiv:2106.09685).")
    register(
        "dora",
        LoraRecipe({"use_dora": True}),
        description="DoRA: weight-decomposed LoRA, magnitude and direction (Liu et al. 2024, arXiv:2402.09353).",
    )
    register(
        "rslora",
        LoraRecipe({"use_rslora": True}),
        description="rsLoRA: LoRA scaled by alpha/sqrt(r) (Kalajdzievski 2023, arXiv:2312.03732).",
    )
    register(
        "pissa",
        LoraRecipe({"init_lora_weights": "pissa"}, changes_base_weights=True),
        description="PiSSA: LoRA initialised from the principal singular vectors (Meng et al. 2024, arXiv:2404.02948).",
    )
    register(
        "olora",
        LoraRecipe({"init_lora_weights": "olora"}, changes_base_weights=True),
        description="OLoRA: LoRA initialised by QR decomposition (Büyükakyüz 2024, arXiv:2406.01775).",
    )
    register(
        "qlora",
        QLoraRecipe(),
        description="QLoRA: LoRA on a 4-bit NF4 base, CUDA + bitsandbytes only (Dettmers et al. 2023, arXiv:2305.14314).",
    )
