"""Which checkpoint a run resumes from: ``resume_from_checkpoint`` as a folder, ``true`` the newest intact one.

A checkpoint cut short while saving (a missing ``trainer_state.json``, a truncated safetensors file) is
named and skipped, never resumed from.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRUE, FALSE = {"true", "yes", "1", "latest", "last"}, {"false", "no", "0", "none", ""}


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is intact): a missing or truncated file."""
    from safetensors import safe_open

    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as error:
        return f"{state.name} is missing or unreadable ({type(error).__name__})"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")):
        return "it holds no model weights"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 -- safetensors raises its own error for a cut-short file
            return f"{path.name} is cut short or corrupted ({error})"
    return None


def _checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of a run, by step."""
    folder = Path(output_dir)
    steps = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        match = CHECKPOINT.match(path.name)
        if match and path.is_dir():
            steps[path] = int(match.group(1))
    return sorted(steps, key=steps.__getitem__)


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest intact checkpoint of a run, or None."""
    return next((p for p in reversed(_checkpoints(output_dir)) if checkpoint_problem(p) is None), None)


def resume_checkpoint(value: Any, output_dir: str | Path) -> str | None:
    """``resume_from_checkpoint`` as a checkpoint folder to resume from, or None; errors say which file is broken."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in FALSE):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in TRUE):
        for candidate in reversed(_checkpoints(output_dir)):
            problem = checkpoint_problem(candidate)
            if problem is None:
                return str(candidate)
            logger.warning("Checkpoint %s is incomplete (%s); trying the one before it.", candidate, problem)
        raise ConfigError(
            f"resume_from_checkpoint: true, but {str(output_dir)!r} holds no intact checkpoint-* folder to resume from."
        )
    folder = Path(value)
    if not folder.is_dir():
        raise ConfigError(
            f"resume_from_checkpoint {str(folder)!r} is not a folder (give a checkpoint-* folder, or true)."
        )
    problem = checkpoint_problem(folder)
    if problem is not None:
        previous = last_checkpoint(folder.parent)
        hint = f" The newest intact one is {previous}." if previous else ""
        raise ConfigError(f"Cannot resume from {folder}: {problem} (was the run killed while saving?).{hint}")
    return str(folder)
