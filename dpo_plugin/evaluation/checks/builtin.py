"""Registers the built-in checks."""

from __future__ import annotations

from ...hookspecs import Register, hookimpl
from .degeneration import DegenerationSettings, degeneration
from .reward_margin import RewardMarginSettings, reward_margin
from .win_rate import WinRateSettings, win_rate


@hookimpl
def register_checks(register: Register) -> None:
    register("reward_margin", reward_margin, settings=RewardMarginSettings)
    register("win_rate", win_rate, needs_judge=True, settings=WinRateSettings)
    register("degeneration", degeneration, settings=DegenerationSettings)
