"""Registers the built-in adapter recipes; each one's description is its docstring's first line."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from .lora import DoRA, LoRA, OLoRA, PiSSA, RsLoRA
from .qlora import QLoRA
from .recipe import FullFineTuning


@hookimpl
def register_adapters(register: Register) -> None:
    register("none", FullFineTuning())
    register("lora", LoRA())
    register("dora", DoRA())
    register("rslora", RsLoRA())
    register("pissa", PiSSA())
    register("olora", OLoRA())
    register("qlora", QLoRA())
