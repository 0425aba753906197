"""Running the post-training checks on any model: the judge, the check settings, the context, the report.

Used alike after training (by the trainer) and on a saved model (``dpo-plugin evaluate``): the
models are reached only through a :class:`~dpo_plugin.forward.interface.PairScorer` and the run's
reference strategy, so nothing here needs a trainer to run.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..faults import nonfinite_tensors
from ..plugins import checks as check_registry
from ..plugins import get_plugin_manager, judges
from ..types import CheckResult
from .context import EvalContext

logger = logging.getLogger(__name__)


def build_judge(name: str | None, params: Mapping[str, Any] | None) -> Any:
    """The configured judge (None when no judge is named); its factory validates its params."""
    if name is None:
        return None
    factory = judges()[name].obj
    params = dict(params or {})
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as error:
        raise ConfigError(f"judge: {name} does not take these judge_params {sorted(params)}: {error}") from None
    return factory(**params)


def validate_check_params(
    names: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None, judge: str | None
) -> None:
    """Fail before any model loads on unknown check options or a judge-less check that needs one."""
    registry = check_registry()
    for name in names:
        spec = registry[name]
        if spec.needs_judge and judge is None:
            raise ConfigError(f"Check {name!r} compares generations with a judge: set judge (e.g. judge: function).")
        given = dict((params or {}).get(name, {}))
        parameters = list(inspect.signature(spec.settings or spec.obj).parameters.values())
        if spec.settings is None:
            parameters = parameters[1:]  # the EvalContext
        accepted = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = set(given) - set(accepted)
        if unknown:
            raise ConfigError(
                f"Check {name!r} does not take {sorted(unknown)}; it takes: {', '.join(accepted) or 'nothing'}."
            )
        if spec.settings is not None:
            spec.settings(**given)


def unique_prompts(dataset: Any) -> list[Any]:
    """The distinct prompts of a split, in order of first appearance."""
    seen, prompts = set(), []
    for prompt in dataset["prompt"]:
        key = repr(prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    return prompts


def build_context(
    scorer: Any,
    strategy: Any,
    dataset: Any,
    *,
    judge: Any,
    beta: float,
    output_dir: str | Path,
    log_history: Sequence[Mapping[str, Any]] = (),
    seed: int = 0,
    no_pairs_note: str | None = None,
) -> EvalContext:
    """The checks' view of a policy and its reference strategy on a tokenised held-out split."""

    def note_unavailable() -> None:  # e.g. the initial model could not be loaded: say which and why
        problem = strategy.unavailable
        if problem and problem not in context.reference_note:
            context.reference_note = f"{context.reference_note}; {problem}"

    def score_pairs(which: str) -> Any:
        if which == "policy":
            return scorer.score(dataset, desc="Scoring (policy)")
        scores = strategy.score(dataset)
        if scores is None:
            note_unavailable()
        return scores

    @contextlib.contextmanager
    def reference_model() -> Iterator[Any]:
        with strategy.generation_model() as reference:
            if reference is None:
                note_unavailable()
            yield reference

    context = EvalContext(
        policy=scorer.policy,
        tokenizer=scorer.tokenizer,
        prompts=unique_prompts(dataset),
        score_pairs=score_pairs,
        reference_model=reference_model,
        reference_note=strategy.describe(),
        beta=beta,
        output_dir=Path(output_dir),
        judge=judge,
        log_history=list(log_history),
        seed=seed,
        no_pairs_note=no_pairs_note,
    )
    return context


def _run_one(name: str, check: Any, context: EvalContext, params: Mapping[str, Any]) -> CheckResult:
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


def check_metrics(results: Sequence[CheckResult]) -> dict[str, float]:
    """The numeric metrics of the results as ``checks/<check>/<metric>`` (and ``…/passed``),
    for the trainer's loggers."""
    metrics = {
        f"checks/{r.name}/{key}": float(value)
        for r in results
        for key, value in r.metrics.items()
        if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    }
    metrics.update({f"checks/{r.name}/passed": float(r.passed) for r in results})
    return metrics


def run_checks(
    context: EvalContext | None,
    names: Sequence[str],
    params: Mapping[str, Mapping[str, Any]] | None,
    *,
    output_dir: str | Path,
    extra: Mapping[str, Any] | None = None,
    missing: str = "no eval split: pass an eval_dataset (or dataset_test_split)",
) -> tuple[dict[str, Any], list[CheckResult]]:
    """Run the checks, write ``<output_dir>/eval/`` and call the ``post_train`` hook; the report and the results.

    With no ``context`` every check fails with the reason ``missing``; with non-finite policy weights
    every check fails saying so (nothing is computed from them).
    """
    from .report import write_report

    registry = check_registry()
    if context is not None:
        broken = nonfinite_tensors(context.policy.named_parameters())
        if broken:
            missing = (
                f"the policy's weights are not finite ({len(broken)} tensors, e.g. {broken[0]}): training diverged"
            )
            context = None
    results = []
    for name in names:
        if context is None:
            results.append(CheckResult(name, False, skipped=missing))
            continue
        logger.info("Running check %s …", name)
        results.append(_run_one(name, registry[name].obj, context, (params or {}).get(name, {})))
    log_history = context.log_history if context is not None else []
    report = write_report(results, output_dir, log_history, extra=extra)
    try:
        get_plugin_manager().hook.post_train(report=report)
    except Exception:  # the report is written and returned; a failing forwarder must not lose the run
        logger.exception("A post_train hook failed; the report is in %s/eval/.", output_dir)
    return report, results
