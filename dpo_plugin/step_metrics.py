"""The metrics each training and eval step logs: TRL 1.16's names and values, plus the plugin's own.

TRL's (as its ``DPOTrainer._compute_loss`` computes them): ``entropy``, ``num_tokens``,
``logits/chosen``, ``logits/rejected``, ``mean_token_accuracy``, ``rewards/{chosen,rejected,
accuracies,margins}``, ``logps/{chosen,rejected}`` and ``aux_loss``. The plugin's: ``loss/<name>``
per loss of the mix, ``<name>/<metric>`` for a loss's own metrics, and the drift
``logratio/chosen``/``logratio/rejected`` (mean per-token log-ratio of policy to reference).
Values are gathered over processes and averaged over the steps since the last log, as TRL's
``log`` does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from .forward.logps import SequenceStats
from .loss_mix import LossMix
from .types import LossOutput, PairLogps


class StepMetrics:
    """Per-mode (``train``/``eval``) metric values of the steps since the last log."""

    def __init__(self, accelerator: Any, loss_mix: LossMix, beta: float, tp_size: int = 1):
        self.accelerator, self.loss_mix, self.tp_size = accelerator, loss_mix, tp_size
        self.reward_beta = loss_mix.reward_beta(beta)
        self.values: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.train_tokens = 0
        self._step_start: dict[
            str, int
        ] = {}  # per metric, how many training values the current optimizer step began at

    def step_done(self) -> None:
        """An optimizer step was applied: its values stay."""
        self._step_start = {key: len(values) for key, values in self.values["train"].items()}

    def drop_step(self) -> None:
        """An optimizer step was skipped (non-finite): forget the values its micro-batches logged."""
        for key, values in self.values["train"].items():
            del values[self._step_start.get(key, 0) :]

    def _mean(self, value: Tensor) -> float:
        return self.accelerator.gather(value.detach()).float().mean().item()

    def _ratio(self, total: Tensor, count: Tensor) -> float:
        """Σ total / Σ count over processes (0 without any count)."""
        total = self.accelerator.gather_for_metrics(total.detach().float().sum()).sum()
        count = self.accelerator.gather_for_metrics(count.sum()).sum()
        return (total / count).item() if count > 0 else 0.0

    def record(
        self, mode: str, stats: SequenceStats, pair: PairLogps, outputs: list[LossOutput], weights: Tensor | None
    ) -> None:
        """Append one step's values (TRL's, then the plugin's)."""
        metrics = self.values[mode]
        if stats.aux_loss is not None:
            metrics["aux_loss"].append(self.accelerator.gather_for_metrics(stats.aux_loss.detach()).mean().item())
        entropy, mean_logits, top1 = stats.metric_sums()
        metrics["entropy"].append(self._ratio(entropy, stats.predicted))
        if mode == "train":
            self.train_tokens += self.accelerator.gather_for_metrics(stats.input_tokens).sum().item() // self.tp_size
        metrics["num_tokens"] = [self.train_tokens]
        chosen_predicted, rejected_predicted = stats.predicted.chunk(2)
        chosen_logits, rejected_logits = mean_logits.chunk(2)
        metrics["logits/chosen"].append(self._ratio(chosen_logits, chosen_predicted))
        metrics["logits/rejected"].append(self._ratio(rejected_logits, rejected_predicted))
        metrics["mean_token_accuracy"].append(self._ratio(top1.chunk(2)[0], chosen_predicted))
        self._rewards(metrics, pair, outputs)
        for component, out in zip(self.loss_mix.components, outputs):
            losses = out.losses.detach() if weights is None else out.losses.detach() * weights
            metrics[f"loss/{component.name}"].append(self._mean(losses))
            for key, value in out.metrics.items():
                value = value if torch.is_tensor(value) else torch.tensor(float(value), device=losses.device)
                metrics[f"{component.name}/{key}"].append(self._mean(value))

    def _rewards(self, metrics: defaultdict[str, list[float]], pair: PairLogps, outputs: list[LossOutput]) -> None:
        """``rewards/*`` are β·log-ratios as in TRL (reference-free: the first loss's rewards), with the drift."""
        if pair.has_reference:
            chosen_ratio, rejected_ratio = (r.detach() for r in pair.logratios())
            chosen_rewards, rejected_rewards = self.reward_beta * chosen_ratio, self.reward_beta * rejected_ratio
            chosen_tokens, rejected_tokens = pair.token_counts()
            metrics["logratio/chosen"].append(self._mean(chosen_ratio / chosen_tokens))
            metrics["logratio/rejected"].append(self._mean(rejected_ratio / rejected_tokens))
        else:
            chosen_rewards, rejected_rewards = outputs[0].chosen_rewards, outputs[0].rejected_rewards
        metrics["rewards/chosen"].append(self._mean(chosen_rewards))
        metrics["rewards/rejected"].append(self._mean(rejected_rewards))
        metrics["rewards/accuracies"].append(self._mean((chosen_rewards > rejected_rewards).float()))
        metrics["rewards/margins"].append(self._mean(chosen_rewards - rejected_rewards))
        metrics["logps/chosen"].append(self._mean(pair.chosen))
        metrics["logps/rejected"].append(self._mean(pair.rejected))

    def mean(self, mode: str, key: str) -> float | None:
        """The average of ``key`` since the last log, None when it was not recorded."""
        values = self.values[mode].get(key)
        return sum(values) / len(values) if values else None

    def pop(self, mode: str) -> dict[str, float]:
        """The averages since the last log (``eval_`` prefixed in eval mode), then forget them."""
        metrics = {key: sum(values) / len(values) for key, values in self.values[mode].items() if values}
        self.values[mode].clear()
        if mode == "train":
            self._step_start = {}
        return {f"eval_{key}": value for key, value in metrics.items()} if mode == "eval" else metrics
