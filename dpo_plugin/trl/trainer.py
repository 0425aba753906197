"""``DPOTrainer``: TRL's trainer with the loss, reference and adapter chosen through the plugin registries.

Each step: the policy forward through TRL's fused LM head (no ``[batch, seq, vocab]`` logits), the
reference log-probs from the run's reference strategy (skipped when every loss is reference-free),
then ``PairLogps`` → each registered loss → the weighted sum (:class:`~dpo_plugin.trl.loss_mix.LossMix`).
The metrics keep TRL's names and add ``loss/<name>`` per component, ``<name>/<metric>`` for a loss's
own metrics and the drift ``logratio/chosen``/``logratio/rejected`` (mean per-token log-ratio of
policy to reference).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import trl
import trl.trainer.dpo_trainer as trl_dpo
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, use_adapter

from ..errors import ConfigError
from ..plugins import adapters, reference_strategies
from .checks import build_judge, run_checks
from ..reference.base import ReferenceStrategy
from ..types import LossOutput, PairLogps
from .config import DPOConfig, explicit_fields

logger = logging.getLogger(__name__)

NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})
PEFT_INITS_REWRITING_BASE = ("pissa", "olora")


def plugin_config(args: Any, model: Any) -> DPOConfig:
    """``args`` as a plugin :class:`DPOConfig` (a plain TRL config is converted; None gives TRL's default)."""
    if isinstance(args, DPOConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
        return DPOConfig(output_dir=f"{name.split('/')[-1]}-DPO")
    if isinstance(args, trl.DPOConfig):
        fields = [f for f in dataclasses.fields(trl.DPOConfig) if f.init]
        values = {f.name: getattr(args, f.name) for f in fields}
        defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default for f in fields}
        with explicit_fields({k for k, v in values.items() if v != defaults[k]}):
            return DPOConfig(**values)
    raise TypeError(f"args must be a dpo_plugin.trl.DPOConfig (or TRL's DPOConfig), got {type(args).__name__}.")


@contextlib.contextmanager
def _trl_view(args: DPOConfig, **values: Any) -> Iterator[None]:
    """Show TRL's ``__init__`` the field values it must act on, then restore the user's."""
    saved = {name: getattr(args, name) for name in values}
    for name, value in values.items():
        setattr(args, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(args, name, value)


def _no_reference_reload(*_: Any, **__: Any) -> None:
    """Stands in for TRL's reload of the reference from ``config._name_or_path``: the strategy owns the reference."""
    return None


def _check_datasets(train_dataset: Any, eval_dataset: Any, args: DPOConfig) -> Any:
    """Column checks for every split and the data-quality checks on the training split, before anything loads."""
    from datasets import Dataset

    from ..data import validate_preference_columns
    from ..data_quality import check_data, ensure_clean

    splits = [train_dataset] + (list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset])
    for split in splits:
        if split is not None:
            validate_preference_columns(split)
    if not isinstance(train_dataset, Dataset):
        return None
    report = check_data(train_dataset)
    ensure_clean(report, allow_errors=args.allow_data_errors)
    return report


def _log_truncation(report: Any, prepared: Any, args: DPOConfig) -> None:
    """Token-level findings from TRL's tokenised training split: pairs it dropped, completions it truncates.

    Logged as warnings; no pair left is a ConfigError (before any reference pass or training step).
    """
    from datasets import Dataset

    from ..data_quality import token_findings

    if report is None or args.max_length is None or not isinstance(prepared, Dataset):
        return
    if len(prepared) == 0:
        raise ConfigError(
            f"TRL dropped all {report.rows} training pairs: each prompt alone fills max_length={args.max_length} "
            "tokens, leaving nothing to train on. Raise max_length or shorten the prompts (`dpo-plugin check-data "
            "--model M --max-length N` counts them)."
        )
    lengths = [prepared[c] for c in ("prompt_ids", "chosen_ids", "rejected_ids")]
    findings = token_findings(
        *([len(ids) for ids in column] for column in lengths), max_length=args.max_length, truncation_mode=args.truncation_mode
    )
    dropped = report.rows - len(prepared)
    if dropped:
        logger.warning("TRL dropped %d of %d training pairs whose prompt alone fills max_length=%d.", dropped, report.rows, args.max_length)
    for finding in findings:
        logger.warning("Data quality: %s", finding.message)
    report.findings.extend(findings)


def _ensure_fused_head(model: Any) -> None:
    """Give a model TRL's fused log-prob head if it has none yet (e.g. a reference reloaded for the checks)."""
    base = model.get_base_model() if is_peft_model(model) else model
    if "forward" not in base.__dict__:  # TRL's patch replaces forward on the instance
        add_fused_lm_head(base)


class _ReferenceCallback(TrainerCallback):
    """Hands optimizer-step events to the reference strategy (e.g. TR-DPO syncs)."""

    def __init__(self, strategy: ReferenceStrategy):
        self.strategy = strategy

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.strategy.on_step_end(state)


class DPOTrainer(trl.DPOTrainer):
    """Drop-in for TRL's ``DPOTrainer``: same constructor; losses, reference and adapter come from the registries."""

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: DPOConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
    ):
        args = plugin_config(args, model)
        self.data_report = _check_datasets(train_dataset, eval_dataset, args)
        self.loss_mix = args.loss_mix()
        self.judge = build_judge(args.judge, args.judge_params)
        self.check_report: dict[str, Any] | None = None
        recipe = adapters()[args.adapter].obj
        adapter_params = dict(args.adapter_params or {})
        if peft_config is not None and args.adapter != "none":
            raise ConfigError(
                f"Both a peft_config and adapter: {args.adapter} were given; pass one (the adapter recipe builds "
                "a peft config for the model)."
            )
        loaded_here = isinstance(model, str)
        if loaded_here:
            model = self._load_policy(model, args, recipe, adapter_params, quantization_config)
        if args.adapter != "none":
            peft_config = recipe.peft_config(model, adapter_params)
        base_weights_change = (
            recipe.changes_base_weights
            if args.adapter != "none"
            else str(getattr(peft_config, "init_lora_weights", "")).startswith(PEFT_INITS_REWRITING_BASE)
        )
        strategy = reference_strategies()[args.reference].obj.from_params(args.reference_params)
        trl_ref_model = strategy.prepare(
            model,
            ref_model=ref_model,
            peft=peft_config is not None or is_peft_model(model),
            base_weights_change=base_weights_change,
            needs_reference=self.loss_mix.needs_reference,
        )
        free = [c.name for c in self.loss_mix.components if not c.spec.needs_reference]
        if self.loss_mix.needs_reference and free:
            logger.info("Reference-free %s mixed with reference-based losses: the reference forward runs for the latter.", free)
        if not self.loss_mix.needs_reference and strategy.provides_logps:
            logger.warning(
                "The losses %s need no reference; reference %s only serves the post-training checks.",
                self.loss_mix.names,
                strategy.name,
            )
        self.reference_strategy = strategy
        trl_fields = {
            "loss_type": ["sigmoid"],  # the loss mix is ours; TRL's name checks would refuse plugin losses
            "loss_weights": None,
            "precompute_ref_log_probs": False,  # the precomputed strategy caches the reference itself
            "sync_ref_model": False,  # the sync strategy updates the reference itself (PEFT included)
        }
        if loaded_here:
            trl_fields["model_init_kwargs"] = None
        with _trl_view(args, **trl_fields), mock.patch.object(trl_dpo, "create_model_from_path", _no_reference_reload):
            super().__init__(
                model,
                ref_model=trl_ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        self._initial_adapter_dir = None
        if base_weights_change and is_peft_model(self.model):
            from ..adapter_recipes.recipe import save_initial_adapter

            self._initial_adapter_dir = Path(args.output_dir) / "adapter_init"
            if self.accelerator.is_main_process:
                save_initial_adapter(self.accelerator.unwrap_model(self.model), self._initial_adapter_dir)
        _log_truncation(self.data_report, self.train_dataset, args)
        strategy.setup(self)
        self.add_callback(_ReferenceCallback(strategy))
        self._kl_warned = False
        logger.info(
            "Losses %s (weights %s); reference: %s, holding %.1f MiB.",
            self.loss_mix.names,
            [c.weight for c in self.loss_mix.components],
            strategy.describe(),
            strategy.memory_bytes() / 2**20,
        )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's training loop, then the configured post-training checks (report in ``<output_dir>/eval/``)."""
        output = super().train(*args, **kwargs)
        if self.args.checks:
            self.check_report = self.run_checks()
        return output

    def run_checks(self) -> dict[str, Any] | None:
        """Run ``args.checks`` now (main process; the others wait) and return the report."""
        report = run_checks(self) if self.accelerator.is_main_process else None
        self.accelerator.wait_for_everyone()
        self.check_report = report
        return report

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """TRL's save; PiSSA/OLoRA adapters converted to plain LoRA on the original base; ``merge_adapter``: a merged model too."""
        super().save_model(output_dir, _internal_call)
        model = self.accelerator.unwrap_model(self.model)
        if _internal_call or not is_peft_model(model) or not self.accelerator.is_main_process:
            return
        target = Path(output_dir or self.args.output_dir)
        if self._initial_adapter_dir is not None:
            from ..adapter_recipes.recipe import save_converted_adapter

            save_converted_adapter(model, target, self._initial_adapter_dir)
            logger.info("Adapter saved converted to a LoRA on the original base weights (peft's PiSSA/OLoRA conversion).")
        if self.args.merge_adapter:
            from ..adapter_recipes.recipe import merge_and_save

            logger.info("Merged full model saved to %s.", merge_and_save(model, target / "merged"))

    @staticmethod
    def _load_policy(
        model_id: str, args: DPOConfig, recipe: Any, adapter_params: dict[str, Any], quantization_config: Any
    ) -> Any:
        """Load the policy as TRL would, after the adapter recipe's pre-load checks (e.g. QLoRA's quantization)."""
        kwargs = dict(args.model_init_kwargs or {})
        if quantization_config is not None:
            if "quantization_config" in kwargs:
                raise ConfigError("quantization_config is given both to the trainer and in model_init_kwargs; give one.")
            kwargs["quantization_config"] = quantization_config
        kwargs = recipe.pre_load(adapter_params, kwargs)
        if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
            kwargs["device_map"] = None
        kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        return create_model_from_path(model_id, **kwargs)

    # -- log-probabilities ------------------------------------------------------------------------
    def _sum_completion_logps(self, per_token_logps: torch.Tensor, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Summed completion log-probs and, with ``ld_alpha`` (LD-DPO, arXiv:2409.06411), the plain sums too.

        LD-DPO keeps the tokens up to the shorter completion's length and weights the rest by ``ld_alpha``.
        """
        plain = per_token_logps.sum(dim=1)
        if self.args.ld_alpha is None:
            return plain, None
        shift_mask = completion_mask[..., 1:]
        positions = shift_mask.cumsum(dim=1)
        chosen_lens, rejected_lens = shift_mask.sum(dim=1).long().chunk(2, dim=0)
        shared = torch.minimum(chosen_lens, rejected_lens)
        shared = torch.cat([shared, shared], dim=0).to(per_token_logps.device).unsqueeze(1)
        shared_mask = (positions > 0) & (positions <= shared)
        tail_mask = positions > shared
        weighted = (per_token_logps * shared_mask).sum(dim=1) + self.args.ld_alpha * (per_token_logps * tail_mask).sum(dim=1)
        return weighted, plain

    def sequence_logps(
        self, model: Any, inputs: dict[str, Any], *, adapters_off: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(chosen, rejected)`` summed completion log-probs of a batch under ``model``, without gradients.

        Summed as the policy's are in training (LD-DPO weighting included). ``adapters_off``: run
        ``model`` (a PEFT policy) with its adapters disabled, or with the frozen "ref" adapter when
        training an existing adapter.
        """
        _ensure_fused_head(self.accelerator.unwrap_model(model))
        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        adapter_context = self.adapters_off() if adapters_off else contextlib.nullcontext()
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            adapter_context,
            self.accelerator.autocast(),
        ):
            outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        per_token = outputs.log_probs[:, -(completion_mask.size(1) - 1) :]
        logps, _ = self._sum_completion_logps(per_token, completion_mask)
        return logps.chunk(2, dim=0)

    @contextlib.contextmanager
    def adapters_off(self) -> Iterator[Any]:
        """The unwrapped PEFT policy as the reference: adapters disabled, or the "ref" adapter active."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
            yield unwrapped

    def _wpo_weights(self, outputs: Any, per_token: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        """WPO pair weights ``exp(mean_t(log p_t − log Σ_v p_v²))`` of chosen × rejected (arXiv:2406.11827, Eq. 2)."""
        lengths = shift_mask.sum(dim=1).clamp_min(1)
        with torch.no_grad():
            aligned = (per_token - outputs.log_sum_sq_probs[:, -shift_mask.size(1) :]) * shift_mask
        weights = torch.exp(aligned.sum(dim=1) / lengths)
        chosen, rejected = weights.chunk(2, dim=0)
        return chosen * rejected

    # -- the training step ------------------------------------------------------------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        per_token = outputs.log_probs[:, -shift_mask.size(1) :]
        logps, plain = self._sum_completion_logps(per_token, completion_mask)
        ref_chosen, ref_rejected = (
            self.reference_strategy.logps(inputs) if self.loss_mix.needs_reference else (None, None)
        )
        chosen_tokens, rejected_tokens = completion_mask.sum(dim=1).chunk(2, dim=0)
        chosen_plain, rejected_plain = plain.chunk(2, dim=0) if plain is not None else (None, None)
        pair = PairLogps(
            *logps.chunk(2, dim=0), ref_chosen, ref_rejected, chosen_tokens, rejected_tokens, chosen_plain, rejected_plain
        )
        weights = self._wpo_weights(outputs, per_token, shift_mask) if self.args.use_weighting else None
        loss, component_outputs = self.loss_mix(pair, weights)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())
        self._record_metrics(mode, inputs, outputs, pair, component_outputs, weights, shift_mask)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def _gathered_mean(self, value: torch.Tensor) -> float:
        return self.accelerator.gather(value.detach()).float().mean().item()

    def _token_average(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        """Σ values over the masked tokens / number of masked tokens, gathered over processes."""
        total = self.accelerator.gather_for_metrics(values[mask.bool()].sum()).sum()
        count = self.accelerator.gather_for_metrics(mask.sum()).sum()
        return (total / count).item() if count > 0 else 0.0

    def _record_metrics(
        self,
        mode: str,
        inputs: dict[str, Any],
        outputs: Any,
        pair: PairLogps,
        component_outputs: list[LossOutput],
        weights: torch.Tensor | None,
        shift_mask: torch.Tensor,
    ) -> None:
        metrics = self._metrics[mode]
        seq_len = shift_mask.size(1)
        metrics["entropy"].append(self._token_average(outputs.entropy[:, -seq_len:].detach(), shift_mask))
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        chosen_mask, rejected_mask = shift_mask.chunk(2, dim=0)
        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
        metrics["logits/chosen"].append(self._token_average(chosen_logits.detach(), chosen_mask))
        metrics["logits/rejected"].append(self._token_average(rejected_logits.detach(), rejected_mask))
        chosen_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        metrics["mean_token_accuracy"].append(self._token_average(chosen_top1.float(), chosen_mask))

        if pair.has_reference:
            chosen_ratio, rejected_ratio = (r.detach() for r in pair.logratios())
            beta = self.loss_mix.reward_beta(self.args.beta)
            chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
            chosen_tokens, rejected_tokens = pair.token_counts()
            metrics["logratio/chosen"].append(self._gathered_mean(chosen_ratio / chosen_tokens))
            metrics["logratio/rejected"].append(self._gathered_mean(rejected_ratio / rejected_tokens))
        else:
            chosen_rewards, rejected_rewards = component_outputs[0].chosen_rewards, component_outputs[0].rejected_rewards
        metrics["rewards/chosen"].append(self._gathered_mean(chosen_rewards))
        metrics["rewards/rejected"].append(self._gathered_mean(rejected_rewards))
        metrics["rewards/accuracies"].append(self._gathered_mean((chosen_rewards > rejected_rewards).float()))
        metrics["rewards/margins"].append(self._gathered_mean(chosen_rewards - rejected_rewards))
        metrics["logps/chosen"].append(self._gathered_mean(pair.chosen))
        metrics["logps/rejected"].append(self._gathered_mean(pair.rejected))

        for component, out in zip(self.loss_mix.components, component_outputs):
            losses = out.losses.detach() if weights is None else out.losses.detach() * weights
            metrics[f"loss/{component.name}"].append(self._gathered_mean(losses))
            for key, value in out.metrics.items():
                value = value if torch.is_tensor(value) else torch.tensor(float(value), device=losses.device)
                metrics[f"{component.name}/{key}"].append(self._gathered_mean(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        drift = self._metrics[mode].get("logratio/chosen")
        kl_warn = self.args.kl_warn
        if drift and kl_warn is not None and not self._kl_warned:
            value = sum(drift) / len(drift)
            if abs(value) > kl_warn:
                self._kl_warned = True
                logger.warning(
                    "The policy has drifted from the reference: mean per-token log-ratio on the chosen completions is "
                    "%.3f (kl_warn=%s). A large drift often means over-optimisation; consider a larger beta%s. "
                    "(Warned once.)",
                    value,
                    kl_warn,
                    "" if "sft" in self.loss_mix.names else " or an sft term",
                )
        super().log(logs, start_time)
