"""``dpo-plugin demo``: the shipped demo run, and ``--compare`` of several loss mixes on it.

The settings are those of ``demo/demo.yaml``; ``--compare sigmoid,sigmoid+sft`` trains each mix
from the same start and tabulates the checks and how many held-out answers are exactly right
(the seed's warning: pure DPO lowers the rejected answers without teaching the chosen format).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hosts.base import DEFAULT_HOST, TrainResult, flag_names

logger = logging.getLogger(__name__)

CONFIG = Path(__file__).parent / "demo.yaml"
DEFAULT_OUTPUT = "runs/demo"
#: Flags the demo sets itself; each with what to use instead.
OWN_FLAGS = {
    "config": "dpo-plugin train --config YOUR.yaml (start from dpo_plugin/demo/demo.yaml)",
    "loss_type": "--compare (e.g. --compare sigmoid+sft; equal weights)",
    "loss_weights": "dpo-plugin train --config dpo_plugin/demo/demo.yaml --loss_weights ...",
}


@dataclass
class DemoRun:
    """One demo training: its loss mix, result, wall time and exact-answer count on the held-out prompts."""

    losses: list[str]
    result: TrainResult
    seconds: float
    exact: int
    prompts: int


def _exact_answers(report: dict[str, Any]) -> tuple[int, int]:
    """Held-out prompts the policy answered exactly right (from the win-rate check's samples and counts)."""
    from .arithmetic import is_correct

    details = report["checks"].get("win_rate", {}).get("details", {})
    samples = details.get("samples", [])
    return sum(is_correct(s["prompt"], s["policy"]) for s in samples), len(samples)


def check_overrides(extra: list[str]) -> None:
    """A ConfigError for a ``dpo-plugin train`` flag that the demo sets itself (it would be ignored or misreported)."""
    from ..errors import ConfigError

    clashes = sorted(flag_names(extra) & OWN_FLAGS.keys())
    if clashes:
        raise ConfigError(f"dpo-plugin demo sets --{clashes[0]} itself; use {OWN_FLAGS[clashes[0]]} instead.")


def fresh_output_dir(base: str = DEFAULT_OUTPUT) -> str:
    """``base``, or ``base-2``, ``base-3`` … : the first that does not exist yet, so a rerun keeps earlier demos."""
    candidate, number = base, 1
    while Path(candidate).exists():
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def run(losses: list[str], output_dir: str, extra: list[str] | None = None) -> DemoRun:
    """Train the demo with ``losses`` (equal weights) and run its checks."""
    weights = ["1.0"] * len(losses)
    argv = ["--config", str(CONFIG), "--output_dir", output_dir, "--loss_type", *losses, "--loss_weights", *weights]
    from ..plugins import hosts

    start = time.perf_counter()
    result = hosts()[DEFAULT_HOST].obj.train(argv + list(extra or []))
    seconds = time.perf_counter() - start
    exact, prompts = _exact_answers(result.report) if result.report else (0, 0)
    return DemoRun(losses, result, seconds, exact, prompts)


def parse_mixes(text: str) -> list[list[str]]:
    """``"sigmoid,sigmoid+sft"`` → ``[["sigmoid"], ["sigmoid", "sft"]]``."""
    mixes = [[name for name in part.split("+") if name] for part in text.split(",") if part.strip()]
    if not mixes:
        from ..errors import ConfigError

        raise ConfigError("--compare needs loss mixes such as sigmoid,sigmoid+sft.")
    return mixes
