"""Running the post-training checks from the trainer: the EvalContext, the report, the ``post_train`` hook."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..evaluation.context import EvalContext, PairScores
from ..plugins import checks as check_registry
from ..plugins import get_plugin_manager, judges
from ..types import CheckResult

logger = logging.getLogger(__name__)


def build_judge(name: str | None, params: dict[str, Any] | None) -> Any:
    """The configured judge (None when no judge is named); its factory validates its params."""
    if name is None:
        return None
    factory = judges()[name].obj
    params = params or {}
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as error:
        raise ConfigError(f"judge: {name} does not take these judge_params {sorted(params)}: {error}") from None
    return factory(**params)


def check_params(names: list[str], params: dict[str, dict[str, Any]] | None, judge: str | None) -> None:
    """Fail before training on unknown check options or a judge-less check that needs one."""
    registry = check_registry()
    for name in names:
        spec = registry[name]
        if spec.needs_judge and judge is None:
            raise ConfigError(f"Check {name!r} compares generations with a judge: set judge (e.g. judge: function).")
        given = (params or {}).get(name, {})
        parameters = list(inspect.signature(spec.settings or spec.obj).parameters.values())
        if spec.settings is None:
            parameters = parameters[1:]  # the EvalContext
        accepted = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = set(given) - set(accepted)
        if unknown:
            raise ConfigError(f"Check {name!r} does not take {sorted(unknown)}; it takes: {', '.join(accepted) or 'nothing'}.")
        if spec.settings is not None:
            spec.settings(**given)


def _eval_split(trainer: Any) -> Any:
    dataset = trainer.eval_dataset
    if isinstance(dataset, dict):
        dataset = dataset.get("eval", next(iter(dataset.values()), None))
    return dataset


def _unique_prompts(dataset: Any) -> list[Any]:
    seen, prompts = set(), []
    for prompt in dataset["prompt"]:
        key = repr(prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    return prompts


def _score(trainer: Any, dataset: Any, logps_of_batch: Any) -> PairScores:
    from torch.utils.data import DataLoader

    columns = [c for c in ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps") if c in dataset.column_names]
    loader = DataLoader(
        dataset.select_columns(columns),
        batch_size=trainer.args.per_device_eval_batch_size,
        collate_fn=trainer.data_collator,
        shuffle=False,
    )
    chosen, rejected, chosen_tokens, rejected_tokens = [], [], [], []
    for batch in loader:
        batch = trainer._prepare_inputs(batch)
        batch_chosen, batch_rejected = logps_of_batch(batch)
        counts = batch["completion_mask"].sum(dim=1).chunk(2, dim=0)
        chosen.append(batch_chosen.float().cpu().numpy())
        rejected.append(batch_rejected.float().cpu().numpy())
        chosen_tokens.append(counts[0].cpu().numpy())
        rejected_tokens.append(counts[1].cpu().numpy())
    return PairScores(*(np.concatenate(parts) for parts in (chosen, rejected, chosen_tokens, rejected_tokens)))


def build_eval_context(trainer: Any) -> EvalContext | None:
    """The checks' view of a trained run (None when there is no eval split)."""
    dataset = _eval_split(trainer)
    if dataset is None:
        return None
    strategy = trainer.reference_strategy

    def score_pairs(which: str) -> PairScores | None:
        if which == "policy":
            return _score(trainer, dataset, lambda batch: trainer.sequence_logps(trainer.model, batch))
        if strategy.provides_logps and "ref_chosen_logps" in dataset.column_names:
            return _score(trainer, dataset, strategy.logps)  # precomputed: the cached reference
        with strategy.generation_model() as reference:
            if reference is not None:
                return _score(trainer, dataset, lambda batch: trainer.sequence_logps(reference, batch))
        return None

    @contextlib.contextmanager
    def reference_model() -> Iterator[Any]:
        with strategy.generation_model() as reference:
            yield reference

    return EvalContext(
        policy=trainer.accelerator.unwrap_model(trainer.model),
        tokenizer=trainer._tokenizer,
        prompts=_unique_prompts(dataset),
        score_pairs=score_pairs,
        reference_model=reference_model,
        reference_note=strategy.describe(),
        beta=trainer.args.beta,
        output_dir=Path(trainer.args.output_dir),
        judge=trainer.judge,
        log_history=list(trainer.state.log_history),
        seed=trainer.args.seed,
    )


def run_checks(trainer: Any) -> dict[str, Any]:
    """Run the configured checks, write ``<output_dir>/eval/``, log the metrics and call ``post_train``."""
    from ..evaluation.report import write_report

    args = trainer.args
    context = build_eval_context(trainer)
    results = []
    registry = check_registry()
    for name in args.checks:
        if context is None:
            results.append(CheckResult(name, False, skipped="no eval split: pass an eval_dataset (or dataset_test_split)"))
            continue
        params = (args.check_params or {}).get(name, {})
        logger.info("Running check %s …", name)
        result = registry[name].obj(context, **params)
        results.append(result)
    report = write_report(
        results,
        args.output_dir,
        list(trainer.state.log_history),
        extra={"reference": trainer.reference_strategy.describe(), "losses": trainer.loss_mix.names},
    )
    metrics = {
        f"checks/{r.name}/{key}": float(value)
        for r in results
        for key, value in r.metrics.items()
        if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    }
    metrics.update({f"checks/{r.name}/passed": float(r.passed) for r in results})
    trainer.log(metrics)
    get_plugin_manager().hook.post_train(report=report)
    return report
