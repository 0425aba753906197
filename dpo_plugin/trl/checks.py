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
    if len(dataset) == 0:  # no usable pairs: empty scores, which the checks refuse with a reason
        empty = np.zeros(0, dtype=np.float64)
        return PairScores(empty, empty.copy(), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for batch in loader:
        batch = trainer._prepare_inputs(batch)
        batch_chosen, batch_rejected = logps_of_batch(batch)
        counts = batch["completion_mask"].sum(dim=1).chunk(2, dim=0)
        chosen.append(batch_chosen.float().cpu().numpy())
        rejected.append(batch_rejected.float().cpu().numpy())
        chosen_tokens.append(counts[0].cpu().numpy())
        rejected_tokens.append(counts[1].cpu().numpy())
    return PairScores(*(np.concatenate(parts) for parts in (chosen, rejected, chosen_tokens, rejected_tokens)))


def _no_pairs_note(trainer: Any, dataset: Any) -> str | None:
    """Why the eval split has no usable pairs (None when it has some)."""
    if len(dataset) > 0:
        return None
    args = trainer.args
    if args.max_length is not None and args.truncation_mode == "keep_start":
        return (
            f"the eval split is empty after preprocessing: TRL drops every pair whose prompt fills "
            f"max_length={args.max_length} (raise max_length or shorten the prompts)"
        )
    return "the eval split is empty after preprocessing"


def build_eval_context(trainer: Any) -> EvalContext | None:
    """The checks' view of a trained run (None when there is no eval split)."""
    dataset = _eval_split(trainer)
    if dataset is None:
        return None
    strategy = trainer.reference_strategy
    context: EvalContext

    def score_pairs(which: str) -> PairScores | None:
        if which == "policy":
            return _score(trainer, dataset, lambda batch: trainer.sequence_logps(trainer.model, batch))
        if strategy.provides_logps and "ref_chosen_logps" in dataset.column_names:
            return _score(trainer, dataset, strategy.logps)  # precomputed: the cached reference
        with strategy.generation_model() as reference:
            if reference is not None:
                return _score(trainer, dataset, lambda batch: trainer.sequence_logps(reference, batch))
            _note_missing_reference()
        return None

    def _note_missing_reference() -> None:
        # e.g. model_for_checks could not load the initial model: say which and why
        problem = getattr(trainer, "checks_reference_problem", None)
        if problem and problem not in context.reference_note:
            context.reference_note = f"{context.reference_note}; {problem}"

    @contextlib.contextmanager
    def reference_model() -> Iterator[Any]:
        with strategy.generation_model() as reference:
            if reference is None:
                _note_missing_reference()
            yield reference

    context = EvalContext(
        policy=trainer.accelerator.unwrap_model(trainer.model),
        tokenizer=trainer._tokenizer,
        prompts=_unique_prompts(dataset),
        score_pairs=score_pairs,
        reference_model=reference_model,
        reference_note=strategy.describe(),
        beta=trainer.loss_mix.reward_beta(trainer.args.beta),
        output_dir=Path(trainer.args.output_dir),
        judge=trainer.judge,
        log_history=list(trainer.state.log_history),
        seed=trainer.args.seed,
        no_pairs_note=_no_pairs_note(trainer, dataset),
    )
    return context


def _run_one(name: str, check: Any, context: EvalContext, params: dict[str, Any]) -> CheckResult:
    """One check; an exception (or a return value that is not a CheckResult) becomes a failed result saying so.

    A crashing check, e.g. a third-party one, must not lose the trained model or the other checks' results.
    """
    try:
        result = check(context, **params)
    except Exception as error:
        logger.exception("Check %s raised %s; it is reported as failed.", name, type(error).__name__)
        return CheckResult(name, False, skipped=f"the check raised {type(error).__name__}: {error}")
    if not isinstance(result, CheckResult):
        logger.error("Check %s returned %r, not a CheckResult; it is reported as failed.", name, type(result).__name__)
        return CheckResult(name, False, skipped=f"the check returned a {type(result).__name__}, not a CheckResult")
    return result


def run_checks(trainer: Any) -> dict[str, Any]:
    """Run the configured checks, write ``<output_dir>/eval/``, log the metrics and call ``post_train``."""
    from ..evaluation.report import write_report

    args = trainer.args
    context, context_error = None, None
    try:
        context = build_eval_context(trainer)
    except Exception as error:
        logger.exception("Preparing the checks failed.")
        context_error = f"preparing the checks raised {type(error).__name__}: {error}"
    results = []
    registry = check_registry()
    for name in args.checks:
        if context is None:
            reason = context_error or "no eval split: pass an eval_dataset (or dataset_test_split)"
            results.append(CheckResult(name, False, skipped=reason))
            continue
        params = (args.check_params or {}).get(name, {})
        logger.info("Running check %s …", name)
        results.append(_run_one(name, registry[name].obj, context, params))
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
    try:
        get_plugin_manager().hook.post_train(report=report)
    except Exception:  # the report is written and returned; a failing forwarder must not lose the run
        logger.exception("A post_train hook failed; the report is in %s/eval/.", args.output_dir)
    return report
