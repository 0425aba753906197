"""``DPOTrainer``: TRL's trainer with the loss, reference and adapter chosen through the plugin registries.

Each step: the policy forward (:func:`~dpo_plugin.trl.forward.forward_pairs`: TRL's fused LM head,
no ``[batch, seq, vocab]`` logits), the reference log-probs from the run's reference strategy
(skipped when every loss is reference-free), then ``PairLogps`` → each registered loss → the
weighted sum (:class:`~dpo_plugin.loss_mix.LossMix`), and the step's metrics
(:class:`~dpo_plugin.trl.metrics.StepMetrics`). Strategies and checks see the run only through its
:class:`~dpo_plugin.scoring.PairScorer` (:attr:`DPOTrainer.scorer`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import datasets
import trl
from accelerate.utils import is_peft_model
from transformers import TrainerCallback

from ..chosen_drift import ChosenDriftWatch
from ..data_quality import ensure_template_round_trip
from ..divergence import Preempted
from ..errors import ConfigError
from ..evaluation.runner import build_context, build_judge, check_metrics, run_checks
from ..plugins import adapters, reference_strategies
from ..reference.base import ReferenceStrategy
from ..run_folder import check_output_dir, record
from .config import TRL_DEFAULTS, DPOConfig
from .data_checks import check_datasets, log_truncation
from .forward import (
    Engine,
    ForwardSettings,
    Scorer,
    TrlHooks,
    choose_layout,
    forward_pairs,
    load_policy,
    logits_outputs,
    strip_fused_head,
    trl_init_view,
)
from .guard import PreemptionCallback, StepGuard, resume_checkpoint
from .metrics import StepMetrics

logger = logging.getLogger(__name__)

PEFT_INITS_REWRITING_BASE = ("pissa", "olora")


def plugin_config(args: Any, model: Any) -> DPOConfig:
    """``args`` as a plugin :class:`DPOConfig` (a plain TRL config is converted; None gives TRL's default)."""
    if isinstance(args, DPOConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "name_or_path", "") or "model"
        return DPOConfig(output_dir=f"{name.split('/')[-1]}-DPO")
    if isinstance(args, trl.DPOConfig):
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(trl.DPOConfig) if f.init}
        return DPOConfig(**{k: v for k, v in values.items() if v != TRL_DEFAULTS[k]})
    raise TypeError(f"args must be a dpo_plugin.trl.DPOConfig (or TRL's DPOConfig), got {type(args).__name__}.")


def _visits_every_pair(args: DPOConfig, rows: int | None) -> bool:
    """Whether the run's optimizer steps cover every training pair at least once (unknown for a streaming split)."""
    if not rows:
        return False
    if args.max_steps > 0:
        pairs_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        return args.max_steps * pairs_per_step >= rows
    return args.num_train_epochs >= 1


def _packing_obstacle(
    args: DPOConfig, model: Any, peft_config: Any, collator: Any, processor: Any, train: Any, compute_metrics: Any
) -> str | None:
    """Why this run cannot take a packed layout, whatever the model (None when nothing stands in the way)."""
    from transformers import ProcessorMixin

    prompt_learning = getattr(peft_config, "is_prompt_learning", False) or (
        is_peft_model(model) and model.active_peft_config.is_prompt_learning
    )
    columns = set(getattr(train, "column_names", None) or ())
    obstacles = {
        "a data_collator was passed, and it decides the layout": collator is not None,
        "a prompt-learning PEFT adapter prepends virtual tokens": prompt_learning,
        "vision-language data is collated by TRL's vision collator": isinstance(processor, ProcessorMixin)
        or bool({"image", "images"} & columns),
        "torch_compile would recompile for every packed row": bool(args.torch_compile),
        "compute_metrics expects TRL's padded rows": compute_metrics is not None,
        "a streaming dataset on several processes is gathered as padded batches": isinstance(train, datasets.IterableDataset)
        and args.world_size > 1,
    }
    return next((reason for reason, present in obstacles.items() if present), None)


class _RecordOutputs(TrainerCallback):
    """The output folder's manifest lists each checkpoint before it is written, and all of it after."""

    def __init__(self, trainer: DPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:
            self.trainer.record_outputs(planned=[f"checkpoint-{state.global_step}"])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.record_outputs()


class _ReferenceCallback(TrainerCallback):
    """Hands optimizer-step events to the reference strategy (e.g. TR-DPO syncs)."""

    def __init__(self, strategy: ReferenceStrategy):
        self.strategy = strategy

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.strategy.on_step_end(state)


class DPOTrainer(TrlHooks, trl.DPOTrainer):
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
        # whether train() resumes is known only there: here a run's own entries are not the user's
        self._user_entries = check_output_dir(args.output_dir, resuming=True, reuse=args.reuse_output_dir, strict=False)
        self._output_checked = False
        self.data_report = check_datasets(train_dataset, eval_dataset, allow_errors=args.allow_data_errors)
        self.loss_mix = args.loss_mix().fresh()
        self.judge = build_judge(args.judge, args.judge_params)
        self.check_report: dict[str, Any] | None = None
        loaded_here = isinstance(model, str)
        model, peft_config, base_weights_change = self._policy_and_adapter(model, args, peft_config, quantization_config)
        peft = peft_config is not None or is_peft_model(model)
        self._layout_blocked = _packing_obstacle(
            args, model, peft_config, data_collator, processing_class, train_dataset, compute_metrics
        )
        self._train_rows = len(train_dataset) if isinstance(train_dataset, datasets.Dataset) else None
        self.layout: str | None = None
        trl_ref_model = self._prepare_reference(args, model, ref_model, peft=peft, base_weights_change=base_weights_change)
        precompute = self.reference_strategy.precomputes or (trl_ref_model is None and not peft)
        with trl_init_view(args, precompute=precompute, loaded_here=loaded_here):
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
        self._finish_setup(base_weights_change)

    # -- construction -----------------------------------------------------------------------------
    def _policy_and_adapter(self, model: Any, args: DPOConfig, peft_config: Any, quantization_config: Any) -> tuple[Any, Any, bool]:
        """The policy (loaded when given by name), the peft config to wrap it with, and whether it rewrites base weights."""
        recipe = adapters()[args.adapter].obj
        adapter_params = dict(args.adapter_params or {})
        if peft_config is not None and args.adapter != "none":
            raise ConfigError(
                f"Both a peft_config and adapter: {args.adapter} were given; pass one (the adapter recipe builds "
                "a peft config for the model)."
            )
        if isinstance(model, str):
            model = load_policy(model, args, lambda kwargs: recipe.pre_load(adapter_params, kwargs), quantization_config)
        else:
            strip_fused_head(model)  # patched by an earlier trainer: a copy of it would still run the original
        if args.adapter != "none":
            peft_config = recipe.peft_config(model, adapter_params)
            return model, peft_config, recipe.changes_base_weights
        init = str(getattr(peft_config, "init_lora_weights", ""))
        return model, peft_config, init.startswith(PEFT_INITS_REWRITING_BASE)

    def _prepare_reference(self, args: DPOConfig, model: Any, ref_model: Any, *, peft: bool, base_weights_change: bool) -> Any:
        """The run's reference strategy, prepared: what it returns is the reference model TRL holds (or None)."""
        self.reference_strategy = reference_strategies()[args.reference].obj.from_params(args.reference_params)
        self._reference_ready = False
        trl_ref_model = self.reference_strategy.prepare(
            model,
            ref_model=ref_model,
            peft=peft,
            base_weights_change=base_weights_change,
            needs_reference=self.loss_mix.needs_reference,
            checks=bool(args.checks),
            full_pass=_visits_every_pair(args, self._train_rows),
        )
        free = [c.name for c in self.loss_mix.components if not c.spec.needs_reference]
        if self.loss_mix.needs_reference and free:
            logger.info("Reference-free %s mixed with reference-based losses: the reference forward runs for the latter.", free)
        if not self.loss_mix.needs_reference and self.reference_strategy.provides_logps:
            logger.warning(
                "The losses %s need no reference; reference %s only serves the post-training checks.",
                self.loss_mix.names,
                self.reference_strategy.name,
            )
        return trl_ref_model

    def _finish_setup(self, base_weights_change: bool) -> None:
        """After TRL's ``__init__``: TRL's view of the run made true again, the reference set up, the metrics."""
        self.loss_types, self.loss_weights = self.loss_mix.names, self.loss_mix.weights
        self.precompute_ref_logps = self.reference_strategy.precomputes  # TRL's evaluate() then calls our hook
        self._initial_adapter_dir = self._save_initial_adapter(base_weights_change)
        args = self.args
        log_truncation(self.data_report, self.train_dataset, max_length=args.max_length, truncation_mode=args.truncation_mode)
        ensure_template_round_trip(self.data_report, self.processing_class, allow_errors=args.allow_data_errors)
        self.prepared_reference()
        self.add_callback(_ReferenceCallback(self.reference_strategy))
        self.guard = StepGuard(self)
        self.preemption = PreemptionCallback(self.accelerator)
        self.add_callback(self.preemption)
        self.add_callback(_RecordOutputs(self))
        tp_size = self.accelerator.parallelism_config.tp_size if self.accelerator.parallelism_config else 1
        self.step_metrics = StepMetrics(self.accelerator, self.loss_mix, args.beta, tp_size)
        self._drift_warned = False
        self.chosen_drift = ChosenDriftWatch(self.loss_mix.names)
        logger.info(
            "Losses %s (weights %s); reference: %s, holding %.1f MiB.",
            self.loss_mix.names,
            self.loss_mix.weights,
            self.reference_strategy.describe(),
            self.reference_strategy.memory_bytes() / 2**20,
        )

    def _save_initial_adapter(self, base_weights_change: bool) -> Path | None:
        """PiSSA/OLoRA: the adapter as initialised, for converting the trained one to a plain LoRA at save time."""
        if not (base_weights_change and is_peft_model(self.model)):
            return None
        from ..adapter_recipes.recipe import save_initial_adapter

        directory = Path(self.args.output_dir) / "adapter_init"
        if self.accelerator.is_main_process:
            save_initial_adapter(self.accelerator.unwrap_model(self.model), directory)
            record(self.args.output_dir, self._user_entries)
        return directory

    # -- the forward seam -------------------------------------------------------------------------
    @functools.cached_property
    def scorer(self) -> Scorer:
        """The run's :class:`~dpo_plugin.scoring.PairScorer`: strategies and checks reach the models through it."""
        policy = self.accelerator.unwrap_model(self.model)
        initial = getattr(policy.config, "name_or_path", "") or None
        if initial is not None and Path(initial).expanduser().resolve() == Path(self.args.output_dir).resolve():
            initial = None  # a folder that now holds the trained weights is not the initial model
        return Scorer(
            lambda: self.model,
            getattr(self.processing_class, "tokenizer", self.processing_class),
            collator=self.data_collator,
            splits=self._splits,
            engine=Engine.of(self.accelerator),
            settings=ForwardSettings.of(self.args),
            batch_size=self.args.per_device_eval_batch_size,
            initial_source=initial,
            gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
        )

    def _splits(self) -> dict[str, Any]:
        """The map-style tokenised splits: ``train``, then ``eval`` (or each named eval split)."""
        from datasets import Dataset

        evaluation = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"eval": self.eval_dataset}
        splits = {"train": self.train_dataset, **evaluation}
        return {name: split for name, split in splits.items() if isinstance(split, Dataset)}

    def prepared_layout(self) -> str:
        """The batch layout (``packing``), chosen once; a packed one replaces TRL's padding collator."""
        if self.layout is None:
            self.layout = choose_layout(
                self.scorer, self.args.packing, blocked=self._layout_blocked, pad_to_multiple_of=self.args.pad_to_multiple_of
            )
            self.data_collator = self.scorer.collator
        return self.layout

    def prepared_reference(self) -> ReferenceStrategy:
        """The reference strategy, set up with the scorer and the reference TRL holds (once)."""
        self.prepared_layout()
        if not self._reference_ready:
            self._reference_ready = True
            self.reference_strategy.setup(self.scorer, self.ref_model)
        return self.reference_strategy

    # -- the step ---------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        mode = "train" if self.model.training else "eval"
        stats = forward_pairs(model, inputs, self.scorer.settings, training=True, router=self.aux_loss_enabled)
        reference = self.reference_strategy.logps(inputs) if self.loss_mix.needs_reference else (None, None)
        pair = stats.pair_logps(*reference)
        weights = stats.wpo_weights() if self.args.use_weighting else None
        training = self.model.training
        loss, outputs = self.loss_mix(pair, weights, check_finite=not training)  # training: the guard decides
        if training:
            self.guard.watch_loss(pair, outputs)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * stats.aux_loss
        self.step_metrics.record(mode, stats, pair, outputs, weights)
        return (loss, logits_outputs(model, inputs)) if return_outputs else loss

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """TRL's step (forward, loss, backward); at an optimizer step the guard checks the loss and gradients first."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self.guard.after_backward(loss, self.model)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        self._warn_drift(mode)
        logs.update(self.step_metrics.pop(mode))
        if mode == "train" and (chosen_drift := self.chosen_drift.observe(logs, self.state.global_step)):
            logger.warning("%s (Warned once.)", chosen_drift)
        super().log(logs, start_time)

    def _warn_drift(self, mode: str) -> None:
        drift, limit = self.step_metrics.mean(mode, "logratio/chosen"), self.args.kl_warn
        if drift is None or limit is None or self._drift_warned or abs(drift) <= limit:
            return
        self._drift_warned = True
        logger.warning(
            "The policy has drifted from the reference: mean per-token log-ratio on the chosen completions is "
            "%.3f (kl_warn=%s). A large drift often means over-optimisation; consider a larger beta%s. (Warned once.)",
            drift,
            limit,
            "" if "sft" in self.loss_mix.names else " or an sft term",
        )

    # -- after training ---------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        """TRL's training loop, then the configured post-training checks (report in ``<output_dir>/eval/``).

        ``resume_from_checkpoint``: a checkpoint folder, or ``True``/``"true"`` for the output folder's
        newest intact one. A signal (SIGTERM, SIGINT) saves a checkpoint and raises :class:`Preempted`.
        """
        checkpoint = resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        self._check_output(resuming=checkpoint is not None)
        output = super().train(checkpoint, *args, **kwargs)
        self.record_outputs()
        if self.preemption.received:
            saved = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            raise Preempted(
                f"Stopped by {self.preemption.received} after step {self.state.global_step}; the checkpoint {saved} "
                f"holds the run. Resume it with --resume_from_checkpoint {saved} (or --resume_from_checkpoint true)."
            )
        if self.args.checks:
            self.check_report = self.run_checks()
        return output

    def _check_output(self, resuming: bool) -> None:
        """Before the first write into output_dir: refuse it if the run would overwrite or delete the user's files."""
        self._user_entries |= check_output_dir(self.args.output_dir, resuming=resuming, reuse=self.args.reuse_output_dir, strict=False)
        self._output_checked = True

    def record_outputs(self, planned: Any = ()) -> None:
        """Note in the output folder's manifest what this run wrote there, or is about to (the main process)."""
        if self.accelerator.is_main_process:
            record(self.args.output_dir, self._user_entries, planned)

    def run_checks(self) -> dict[str, Any] | None:
        """Run ``args.checks`` now (main process, scoring alone; the others wait) and return the report."""
        report = None
        if self.accelerator.is_main_process:
            with self.scorer.alone():
                report = self._checks_report()
        self.accelerator.wait_for_everyone()
        self.check_report = report
        return report

    def _checks_report(self) -> dict[str, Any]:
        split = self._splits().get("eval", next((s for n, s in self._splits().items() if n != "train"), None))
        context, missing = None, "no eval split: pass an eval_dataset (or dataset_test_split)"
        if split is not None:
            try:
                context = build_context(
                    self.scorer,
                    self.prepared_reference(),
                    split,
                    judge=self.judge,
                    beta=self.loss_mix.reward_beta(self.args.beta),
                    output_dir=self.args.output_dir,
                    log_history=self.state.log_history,
                    seed=self.args.seed,
                    no_pairs_note=self._no_pairs_note(split),
                )
            except Exception as error:
                logger.exception("Preparing the checks failed.")
                missing = f"preparing the checks raised {type(error).__name__}: {error}"
        extra = {"reference": self.reference_strategy.describe(), "losses": self.loss_mix.names}
        report, results = run_checks(context, self.args.checks, self.args.check_params, output_dir=self.args.output_dir, extra=extra, missing=missing)
        self.record_outputs()
        self.log(check_metrics(results))
        return report

    def _no_pairs_note(self, split: Any) -> str | None:
        """Why the eval split has no usable pairs (None when it has some)."""
        if len(split) > 0:
            return None
        if self.args.max_length is not None and self.args.truncation_mode == "keep_start":
            return (
                f"the eval split is empty after preprocessing: TRL drops every pair whose prompt fills "
                f"max_length={self.args.max_length} (raise max_length or shorten the prompts)"
            )
        return "the eval split is empty after preprocessing"

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """TRL's save, of finite weights only; PiSSA/OLoRA converted to plain LoRA; ``merge_adapter``: a merged model too."""
        self.guard.check_weights(self.model)
        if not self._output_checked:  # saved without training first
            self._check_output(resuming=False)
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

            merged = merge_and_save(model, target / "merged", self.processing_class)
            logger.info("Merged full model and its tokenizer saved to %s.", merged)
        self.record_outputs()
