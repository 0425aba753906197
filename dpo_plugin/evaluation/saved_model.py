"""``dpo-plugin evaluate``: the post-training checks on saved models, without training.

The held-out split is tokenised and scored exactly as the host's trainer would (its
:class:`~dpo_plugin.forward.backend.ForwardBackend`, the default host's unless one is given).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..forward.backend import ForwardBackend


@dataclass
class SavedPolicy:
    """A policy loaded for the checks: the model, its tokenizer, and for an adapter folder the base it applies to."""

    model: Any
    tokenizer: Any
    base: str | None = None


def load_saved_policy(source: str, *, base: str | None = None, bf16: bool = False) -> SavedPolicy:
    """A model folder, a PEFT adapter folder (on its base: ``base``, else the one in ``adapter_config.json``),
    or a hub id.

    The tokenizer comes from the folder when it has one (training saves it there), else from the base.
    Anything that cannot be loaded is a ConfigError saying what and how to fix it.
    """
    import torch

    from ..demo.smollm import resolve_model_name

    folder = Path(source).expanduser()
    adapter_config = folder / "adapter_config.json"
    dtype = torch.bfloat16 if bf16 else torch.float32
    if not adapter_config.is_file():
        if base is not None:
            raise ConfigError(f"--base applies to a PEFT adapter folder, but {source!r} holds no adapter_config.json.")
        tokenizer, model = _load_pretrained(source, source, dtype)
        return SavedPolicy(model, tokenizer)
    base = base or _adapter_base(adapter_config)
    base = resolve_model_name(base)
    tokenizer_source = source if (folder / "tokenizer_config.json").is_file() else base
    tokenizer, model = _load_pretrained(base, tokenizer_source, dtype)
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"Cannot apply the adapter {source!r} to its base {base!r}: {error}") from None
    return SavedPolicy(model, tokenizer, base)


def _adapter_base(adapter_config: Path) -> str:
    import json

    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter_config} names no base model: pass it with --base (a model folder or hub id).")
    if (base.startswith((".", "/", "~")) or base.count("/") > 1) and not Path(base).expanduser().exists():
        raise ConfigError(
            f"The adapter's base model {base!r} (from {adapter_config}) does not exist here: pass it with --base."
        )
    return base


def _load_pretrained(model: str, tokenizer: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded_tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return loaded_tokenizer, AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot load the model {model!r}: {error}") from None


def evaluate_saved_model(
    model: str,
    data: str,
    *,
    base: str | None = None,
    reference: str | None = None,
    checks: list[str],
    judge: str | None = None,
    judge_params: dict[str, Any] | None = None,
    check_params: dict[str, Any] | None = None,
    output_dir: str = "dpo-eval",
    split: str = "test",
    beta: float = 0.1,
    max_length: int | None = 1024,
    batch_size: int = 8,
    backend: ForwardBackend | None = None,
    reuse_output_dir: bool = False,
) -> dict[str, Any]:
    """Run the post-training checks on a saved model against a reference, without training.

    ``model``: a model folder, a PEFT adapter folder (applied to ``base``, default: the base its
    ``adapter_config.json`` names) or a hub id. ``reference``: a model folder or hub id; default,
    for an adapter, its base (the policy with the adapter disabled), else none (the checks that need
    one are skipped). Names, settings and data are checked before any model loads; the pairs are
    tokenised and scored as the host's training does (``backend``: the default host's), with ``beta``.

    The report goes to ``<output_dir>/eval/`` by training's rules (an empty folder, or a run without a report,
    unless ``reuse_output_dir``: :func:`~dpo_plugin.output_folder.check_report_folder`), under the folder's lock.
    """
    from ..output_folder import check_report_folder
    from ..preference_data import load_preference_data, validate_preference_columns
    from ..run_lock import holding
    from .runner import build_context

    judge_object = _checks_plan(checks, check_params, judge, judge_params)
    with holding(output_dir):
        users = check_report_folder(output_dir, reuse=reuse_output_dir)
        held_out = load_preference_data(data, split=split)
        validate_preference_columns(held_out)
        policy, strategy, scorer = _scoring(model, base, reference, held_out, max_length, batch_size, backend)
        pairs = scorer.splits()["eval"]
        dropped = None if len(pairs) else f"every pair of the {split} split was dropped at max_length={max_length}"
        context = build_context(
            scorer, strategy, pairs, judge=judge_object, beta=beta, output_dir=output_dir, no_pairs_note=dropped
        )
        evaluated = {"model": model, "base": policy.base, "reference": reference or policy.base, "data": data}
        evaluated |= {"split": split, "judge": judge, "beta": beta, "max_length": max_length}
        extra = {"evaluated": evaluated, "reference": strategy.describe()}
        return _report(context, checks, check_params, output_dir, extra, users)


def _report(
    context: Any, checks: list[str], params: Any, output_dir: str, extra: dict[str, Any], users: set[str]
) -> dict[str, Any]:
    """The checks run and their report written to ``<output_dir>/eval/`` (listed in the folder's manifest); a
    signal stops them before the report is written."""
    from ..interruption import stopped_by_signals
    from ..output_folder import record
    from .runner import run_checks

    if "eval" in os.listdir(output_dir):  # its own earlier report, replaced on request (reuse_output_dir)
        shutil.rmtree(Path(output_dir) / "eval")
    with stopped_by_signals("the checks", lambda: "The report was not written: run the same command again."):
        record(output_dir, users, ["eval"])
        report, _ = run_checks(context, checks, params, output_dir=output_dir, extra=extra)
    record(output_dir, users)
    return report


def _scoring(
    model: str,
    base: str | None,
    reference: str | None,
    held_out: Any,
    max_length: int | None,
    batch_size: int,
    backend: ForwardBackend | None,
) -> tuple[SavedPolicy, Any, Any]:
    """The saved policy, the checks' reference strategy set up, and the scorer of the held-out pairs."""
    import torch

    from ..demo.smollm import resolve_model_name
    from ..forward.scorer import pair_scorer
    from ..reference.base import RunFacts

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    policy = load_saved_policy(resolve_model_name(model), base=base, bf16=bf16)
    strategy = _reference_for(policy, reference and resolve_model_name(reference))
    run = RunFacts(peft=policy.base is not None, needs_reference=strategy.provides_logps)
    reference_model = strategy.prepare(policy.model, run)
    scorer = pair_scorer(
        policy.model,
        policy.tokenizer,
        {"eval": held_out},
        max_length=max_length,
        batch_size=batch_size,
        bf16=bf16,
        reloadable=False,  # the model loaded is the trained one, not its own reference
        backend=backend,
    )
    strategy.setup(scorer, None if reference_model is None else scorer.place(reference_model))
    return policy, strategy, scorer


def _checks_plan(checks: list[str], params: dict[str, Any] | None, judge: str | None, judge_params: Any) -> Any:
    """Check the names and settings of the checks and build the judge (None without one), before anything loads."""
    from ..plugins import checks as check_registry
    from .runner import build_judge, validate_check_params

    for name in checks:
        check_registry()[name]
    validate_check_params(checks, params, judge)
    return build_judge(judge, judge_params)


def _reference_for(policy: SavedPolicy, reference: str | None) -> Any:
    """The checks' reference: the model named (``path``), else an adapter's base (``adapter``), else ``none``."""
    from ..plugins import reference_strategies

    if reference is not None and reference != policy.base:
        return reference_strategies()["path"].obj.from_params({"model": reference})
    return reference_strategies()["adapter" if policy.base is not None else "none"].obj.from_params({})
