"""What a checkpoint records about its run, and the comparison that makes a resume notice a changed run.

Each checkpoint a run saves holds :data:`RECORD_FILE`: the losses (names, weights, resolved
parameters), the reference strategy and its options, a fingerprint of the training data, ``max_length``
and the model's architecture (the config values that shape its weights, and the adapter's). Resuming
compares it with the new run before anything trains: a change in the losses, the reference, the
data or ``max_length`` silently changes what the resumed run optimises (the loss jumps from one step
to the next), so it is refused with every difference named unless the user says
``resume_changed: true``; a different architecture cannot load the checkpoint at all and is always
refused. A checkpoint without a record (TRL's own, an older dpo-plugin's) is compared on its
``config.json`` and ``adapter_config.json`` alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

RECORD_FILE = "dpo_plugin_run_settings.json"
#: The model-config values that shape the weights (a checkpoint of another shape cannot be loaded).
SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
)
#: The adapter-config values that shape the adapter's weights.
ADAPTER_KEYS = ("peft_type", "r", "target_modules")
#: What a resume compares, in the order its differences are named; ``architecture`` is refused always.
COMPARED = ("losses", "reference", "data", "max_length")


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (sets sorted, anything else unknown as its repr)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def data_fingerprint(dataset: Any, rows_per_part: int = 10_000) -> str | None:
    """BLAKE2b of a map-style dataset's rows as JSON (the values alone: however the data is stored or chunked),
    read part by part in bounded memory; None for a streaming one."""
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        return None
    table = dataset.with_format("arrow")[:]
    digest = hashlib.blake2b(digest_size=16)
    for start in range(0, table.num_rows, rows_per_part):
        rows = table.slice(start, rows_per_part).to_pylist()
        digest.update(json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "replace"))
    return digest.hexdigest()


def architecture(model_config: Mapping[str, Any], adapter_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values that shape a checkpoint's weights: the model config's :data:`SHAPE_KEYS` (those it has) and,
    under an adapter, its :data:`ADAPTER_KEYS`."""
    shape = {key: _plain(model_config[key]) for key in SHAPE_KEYS if model_config.get(key) is not None}
    if adapter_config:
        shape["adapter"] = {key: _plain(adapter_config.get(key)) for key in ADAPTER_KEYS}
    return shape


def write_record(folder: str | Path, record: Mapping[str, Any]) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / RECORD_FILE).write_text(json.dumps(_plain(record), indent=1, sort_keys=True) + "\n")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_record(checkpoint: str | Path) -> dict[str, Any] | None:
    """A checkpoint's record; for one without (TRL's), its architecture from ``config.json``/``adapter_config.json``
    (None when it has neither)."""
    folder = Path(checkpoint)
    record = _json(folder / RECORD_FILE)
    if record is not None:
        return record
    config, adapter = _json(folder / "config.json"), _json(folder / "adapter_config.json")
    if config is None and adapter is None:
        return None
    shape = architecture(config or {}, adapter)
    if config is None:  # an adapter checkpoint: the base's shape is not in it
        shape = {"adapter": shape["adapter"]}
    return {"architecture": shape}


def _changes(before: Any, after: Any, path: str) -> list[str]:
    """``path: before → after`` for each value that differs (nested mappings compared key by key)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            found += _changes(before.get(key), after.get(key), f"{path}.{key}")
        return found
    return [] if before == after else [f"{path}: {json.dumps(before)} → {json.dumps(after)}"]


def _mix(losses: Any) -> str:
    """A loss mix as one phrase: ``sigmoid×1.0 (beta=0.1) + sft×1.0``."""
    if not isinstance(losses, dict):
        return json.dumps(losses)
    parts = []
    for name, params in losses.items():
        params = dict(params) if isinstance(params, dict) else {}
        weight = params.pop("weight", None)
        options = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        parts.append(f"{name}×{weight}" + (f" ({options})" if options else ""))
    return " + ".join(parts)


def differences(saved: Mapping[str, Any], current: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Each difference between a checkpoint's record and the new run's, for ``keys`` both records have."""
    found: list[str] = []
    for key in keys:
        if key in saved and key in current:
            before, after = _plain(saved[key]), _plain(current[key])
            if key == "architecture":  # only what both sides know (an adapter checkpoint lacks the base's shape)
                before = {k: v for k, v in before.items() if k in after}
                after = {k: v for k, v in after.items() if k in before}
            if key == "losses" and before != after:
                found.append(f"losses: {_mix(before)} → {_mix(after)}")
            elif key == "data" and before != after:
                found.append("data: the training pairs differ from the checkpoint's (another file, or edited rows)")
            else:
                found += _changes(before, after, key)
    return found


def check_resume(checkpoint: str | Path, current: Mapping[str, Any], *, allow_changes: bool) -> None:
    """Refuse to resume ``checkpoint`` in a run that differs from the one that saved it (see the module docstring)."""
    saved = read_record(checkpoint)
    if saved is None:
        logger.warning("Checkpoint %s records nothing about its run: the resume is not compared with it.", checkpoint)
        return
    shape = differences(saved, current, ("architecture",))
    if shape:
        raise ConfigError(
            f"Cannot resume {checkpoint}: it was saved by a model of another architecture ({'; '.join(shape)}), whose "
            "weights do not fit this one. Resume with the model it was trained from, or start a new run in "
            "another output_dir."
        )
    changed = differences(saved, current, COMPARED)
    if not changed:
        return
    listed = "; ".join(changed)
    if allow_changes:
        logger.warning("Resuming %s with a changed run (resume_changed: true): %s.", checkpoint, listed)
        return
    raise ConfigError(
        f"Resuming {checkpoint} would change the run it continues: {listed}. The resumed steps would optimise "
        "something else than the steps before them. Restore those settings, start a new run in another "
        "output_dir, or set resume_changed: true to continue with the change."
    )
