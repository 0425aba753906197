"""A run's DPO logic, with no host import: what every host's trainer delegates to.

The session owns the plugin settings (:class:`~dpo_plugin.settings.PluginSettings`), the loss mix,
the reference strategy's lifecycle, the batch layout, the per-step computation from a batch to the
loss and its metrics, the divergence guard, the drift watch, the output folder's manifest,
preemption, and the checks after training. A host's trainer — a transformers ``Trainer`` — calls:

1. ``DPOSession(settings, request, backend, output_dir=...)`` before anything loads (output folder,
   loss mix, judge), then :meth:`check_data` on the raw splits;
2. :meth:`pre_load` when it loads the policy by name, :meth:`adapter_config` for the loaded policy,
   :meth:`prepare_reference` for the reference model it should hold (or None);
3. :meth:`connect` before its own ``__init__`` runs (the scorer is built from the trainer when first
   needed, which may be inside that ``__init__``), :meth:`attach` after it;
4. each step :meth:`compute_loss`, and :meth:`after_backward` when a backward ends an optimizer step;
   at each log :meth:`extend_logs`;
5. :meth:`training` around its ``train()`` (the output folder's lock, the resume compared with the
   checkpoint's run, the model saved before the checks, signals during the checks), :meth:`save_model`
   for each save (a save into the output folder is staged through its manifest), :meth:`save_final`
   when the run ends.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from .checkpoints import resume_checkpoint
from .chosen_drift import ChosenDriftWatch
from .data_checks import check_datasets, check_truncation
from .data_quality import DataReport, ensure_template_round_trip
from .distributed import (
    DistributedEngine,
    check_engine,
    engine_note,
    ensure_deepspeed_comm,
    for_one_process,
    plain_loading,
    whole,
)
from .errors import ConfigError
from .evaluation.runner import build_context, build_judge, check_metrics, run_checks
from .faults import Preempted
from .forward.backend import ForwardBackend
from .forward.engine import Engine
from .forward.heads import METRIC_FIELDS, WPO_FIELD
from .forward.layout_choice import ESTIMATE_BATCHES, Workload, choose_layout
from .forward.logps import ForwardSettings, first_rows, forward_pairs
from .forward.scorer import Scorer
from .guard import PreemptionCallback, StepGuard
from .interruption import stopped_by_signals
from .loss_mix import LossMix
from .output_folder import STAGING, check_output_dir, clear_staging, entries, move_in, record
from .plugins import adapters, reference_strategies
from .reference.base import ReferenceStrategy, RunFacts
from .run_lock import acquire, release
from .run_record import architecture, check_resume, data_fingerprint, write_record
from .settings import LossRequest, PluginSettings
from .step_metrics import StepMetrics
from .write_failures import free_bytes, reported_write_failures, state_bytes

logger = logging.getLogger(__name__)

PEFT_INITS_REWRITING_BASE = ("pissa", "olora")


@dataclass(frozen=True)
class Connection:
    """What the session takes from the host's trainer besides the transformers ``Trainer`` itself.

    ``forward``: the settings that change log-probabilities (from the host's config); ``ref_model``:
    the reference model the host's trainer holds now (it may wrap it); ``blocked``: why the run
    cannot take a packed layout, if anything stands in the way; ``pad_to_multiple_of``: the host's.
    """

    forward: ForwardSettings
    ref_model: Callable[[], Any]
    blocked: str | None = None
    pad_to_multiple_of: int | None = None


def visits_every_pair(args: Any, rows: int | None) -> bool:
    """Whether the run's optimizer steps (``TrainingArguments``) cover every training pair once (unknown: streaming)."""
    if not rows:
        return False
    if args.max_steps > 0:
        pairs_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        return bool(args.max_steps * pairs_per_step >= rows)
    return bool(args.num_train_epochs >= 1)


def streams(dataset: Any) -> bool:
    """Whether a split, or any split of a mapping of them, is an ``IterableDataset`` (read as it streams)."""
    from datasets import IterableDataset

    splits = dataset.values() if isinstance(dataset, Mapping) else [dataset]
    return any(isinstance(split, IterableDataset) for split in splits)


def _checkpointing_kwargs(args: Any) -> dict[str, Any] | None:
    """``TrainingArguments.gradient_checkpointing_kwargs`` as a dict (it may hold a JSON string before parsing)."""
    kwargs = args.gradient_checkpointing_kwargs
    return dict(kwargs) if isinstance(kwargs, dict) else None


class _RecordOutputs(TrainerCallback):
    """The output folder's manifest lists each checkpoint (and the model card TRL writes beside it) before it is
    written, and all of it after; each checkpoint records its run (for a resume to compare)."""

    def __init__(self, session: DPOSession):
        self.session = session

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:
            name = f"checkpoint-{state.global_step}"
            self.session.saving = (name, free_bytes(args.output_dir))
            self.session.record_outputs(planned=[name, "README.md"])
            if self.session.trainer.accelerator.is_main_process:
                write_record(Path(self.session.output_dir) / name, self.session.run_settings())

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.record_outputs()


class _ReferenceSteps(TrainerCallback):
    """Hands optimizer-step events to the reference strategy (e.g. TR-DPO syncs)."""

    def __init__(self, strategy: ReferenceStrategy):
        self.strategy = strategy

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.strategy.on_step_end(state)


class DPOSession:
    """One run's DPO logic (see the module docstring); ``settings`` are validated already."""

    def __init__(
        self,
        settings: PluginSettings,
        request: LossRequest,
        backend: ForwardBackend,
        *,
        output_dir: str,
        entries_before: set[str] | None = None,
    ):
        """``entries_before``: what ``output_dir`` held before the host began writing there, when the host writes
        into it before its trainer exists (Axolotl: its debug log; before training, the tokenizer and config): what
        appeared since is the run's. None: the host writes nothing there itself."""
        self.settings, self.request, self.backend, self.output_dir = settings, request, backend, output_dir
        # whether train() resumes is known only there: here a run's own entries are not the user's
        self.user_entries = check_output_dir(output_dir, resuming=True, reuse=settings.reuse_output_dir, strict=False)
        self.entries_before = entries_before
        self.output_checked = False
        self.loss_mix: LossMix = settings.resolve_loss_mix(request).fresh()
        self.judge = build_judge(settings.judge, settings.options("judge_params"))
        strategy: type[ReferenceStrategy] = reference_strategies()[settings.reference].obj
        self.reference_strategy = strategy.from_params(settings.options("reference_params"))
        self.data_report: DataReport | None = None
        self.data_format: str | None = None
        self.check_report: dict[str, Any] | None = None
        self.layout: str | None = None
        self.initial_adapter_dir: Path | None = None
        self._trainer: Trainer | None = None
        self._connection: Connection | None = None
        self._reference_ready = False
        self._drift_warned = False
        self.requested_engine: DistributedEngine | None = None
        self._train_dataset: Any = None
        self._resumes: str | None = None  # the checkpoint already compared with this run
        self._saved_step: int | None = None  # the step whose model save_final saved
        #: the checkpoint being saved, and the bytes free before (for the message when its write fails)
        self.saving: tuple[str, int | None] = ("a checkpoint", None)
        #: ``(data, split)`` of the held-out pairs, as ``dpo-plugin evaluate`` takes them (set by a host's CLI)
        self.eval_data: tuple[str, str] | None = None

    # -- before the host's trainer exists --------------------------------------------------------
    def check_data(self, train_dataset: Any, eval_dataset: Any) -> None:
        """The columns of every split and the data-quality checks of the training split (errors stop the run)."""
        self.data_report, self.data_format = check_datasets(
            train_dataset, eval_dataset, self.backend, allow_errors=self.settings.allow_data_errors
        )
        self._train_dataset = train_dataset

    def check_chat_template(self, processing_class: Any) -> None:
        """Conversational data needs a tokenizer with a chat template (checked before the model loads)."""
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        templates = (getattr(processing_class, "chat_template", None), getattr(tokenizer, "chat_template", None))
        if self.data_format == "messages" and processing_class is not None and not any(templates):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ConfigError(
                f"The data is conversational (lists of messages), but the tokenizer of {name!r} has no chat template "
                "to render them. Use a chat (instruct) model's tokenizer, set tokenizer.chat_template, or write the "
                "pairs as plain text."
            )

    @functools.cached_property
    def data_fingerprint(self) -> str | None:
        """A fingerprint of the raw training pairs (None when streaming), for a resume to compare."""
        return data_fingerprint(self._train_dataset)

    def run_settings(self, shape: Mapping[str, Any] | None = None, max_length: Any = "") -> dict[str, Any]:
        """What a checkpoint records about this run (:mod:`dpo_plugin.run_record`); ``shape`` and ``max_length``
        default to the trainer's model and forward settings."""
        if shape is None:
            shape = self._architecture(self.trainer.accelerator.unwrap_model(self.trainer.model))
        if max_length == "":
            max_length = self.scorer.settings.max_length
        return {
            "losses": {c.name: {"weight": c.weight, **c.params} for c in self.loss_mix.components},
            "reference": {"name": self.settings.reference, **self.settings.options("reference_params")},
            "data": self.data_fingerprint,
            "max_length": max_length,
            "architecture": dict(shape),
        }

    @staticmethod
    def _architecture(model: Any) -> dict[str, Any]:
        """The shape of a loaded policy: its config's, and its active adapter's under PEFT."""
        peft = getattr(model, "peft_config", None)
        adapter = peft.get(getattr(model, "active_adapter", "default")) if isinstance(peft, dict) else None
        return architecture(model.config.to_dict(), adapter.to_dict() if adapter is not None else None)

    def check_resume(self, checkpoint: str | None, model_config: Mapping[str, Any] | None = None, **known: Any) -> None:
        """Refuse a resume whose checkpoint was saved by another run (see :mod:`dpo_plugin.run_record`), once per
        checkpoint. Before the model loads, a host passes ``model_config`` and the ``max_length`` it knows."""
        if checkpoint is None or self._resumes == checkpoint:
            return
        if model_config is not None:
            current = self.run_settings(architecture(model_config, None), known.get("max_length"))
        else:
            current = self.run_settings()
            self._resumes = checkpoint  # compared in full (the adapter's shape too)
        check_resume(checkpoint, current, allow_changes=self.settings.resume_changed)

    def prepare_engine(self, args: Any) -> None:
        """Before the policy loads: the engine the host's ``TrainingArguments`` ask for, refused when it cannot train
        this run, and DeepSpeed's communication ready for ZeRO-3 to partition models as they load."""
        self.requested_engine = DistributedEngine.requested(args)
        recipe = adapters()[self.settings.adapter].obj
        check_engine(
            self.requested_engine,
            merge_adapter=self.settings.merge_adapter,
            base_weights_change=recipe.changes_base_weights,
        )
        ensure_deepspeed_comm(self.requested_engine)

    def pre_load(self, model_init_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The adapter recipe's pre-load step (e.g. QLoRA's quantization) on the policy's loading kwargs."""
        return dict(
            adapters()[self.settings.adapter].obj.pre_load(self.settings.options("adapter_params"), model_init_kwargs)
        )

    def adapter_config(self, model: Any, peft_config: Any) -> tuple[Any, bool]:
        """The peft config to wrap ``model`` with (the recipe's, or the one passed),
        and whether it rewrites base weights."""
        adapter = self.settings.adapter
        if peft_config is not None and adapter != "none":
            raise ConfigError(
                f"Both a peft_config and adapter: {adapter} were given; pass one (the adapter recipe builds "
                "a peft config for the model)."
            )
        if adapter != "none":
            recipe = adapters()[adapter].obj
            return recipe.peft_config(model, self.settings.options("adapter_params")), recipe.changes_base_weights
        rewrites = str(getattr(peft_config, "init_lora_weights", "")).startswith(PEFT_INITS_REWRITING_BASE)
        if rewrites and self.requested_engine is not None:
            check_engine(self.requested_engine, base_weights_change=True)
        return peft_config, rewrites

    def run_facts(
        self, *, peft: bool, base_weights_change: bool, args: Any, train_dataset: Any, eval_dataset: Any = None
    ) -> RunFacts:
        """What the reference strategy is told about the run (``args``: the ``TrainingArguments``)."""
        from datasets import Dataset

        rows = len(train_dataset) if isinstance(train_dataset, Dataset) else None
        return RunFacts(
            peft=peft,
            base_weights_change=base_weights_change,
            needs_reference=self.loss_mix.needs_reference,
            checks=bool(self.settings.checks),
            full_pass=visits_every_pair(args, rows),
            streaming_eval=streams(eval_dataset),
        )

    def prepare_reference(self, policy: Any, ref_model: Any, run: RunFacts) -> Any:
        """The reference strategy prepared: what it returns is the reference model the host's trainer holds
        (or None)."""
        held = self.reference_strategy.prepare(policy, run, ref_model=ref_model)
        free = [c.name for c in self.loss_mix.components if not c.spec.needs_reference]
        if self.loss_mix.needs_reference and free:
            logger.info(
                "Reference-free %s mixed with reference-based losses: the reference forward runs for the latter.", free
            )
        if not self.loss_mix.needs_reference and self.reference_strategy.provides_logps:
            logger.warning(
                "The losses %s need no reference; reference %s only serves the post-training checks.",
                self.loss_mix.names,
                self.reference_strategy.name,
            )
        return held

    # -- bound to the host's trainer -------------------------------------------------------------
    def connect(self, trainer: Trainer, connection: Connection) -> None:
        """Bind the session to the host's trainer; the scorer is built from it when first needed."""
        self._trainer, self._connection = trainer, connection

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError("the session is not connected to a trainer yet (DPOSession.connect)")
        return self._trainer

    @functools.cached_property
    def scorer(self) -> Scorer:
        """The run's :class:`~dpo_plugin.forward.interface.PairScorer`:
        strategies and checks reach the models through it."""
        trainer, connection = self.trainer, self._connection
        assert connection is not None
        policy = trainer.accelerator.unwrap_model(trainer.model)
        initial = getattr(policy.config, "name_or_path", "") or None
        if initial is not None and Path(initial).expanduser().resolve() == Path(self.output_dir).resolve():
            initial = None  # a folder that now holds the trained weights is not the initial model
        return Scorer(
            lambda: self.trainer.model,
            getattr(trainer.processing_class, "tokenizer", trainer.processing_class),
            head=self.backend.head,
            collator=trainer.data_collator,
            splits=self.splits,
            engine=Engine.of(trainer.accelerator),
            settings=connection.forward,
            batch_size=trainer.args.per_device_eval_batch_size,
            initial_source=initial,
            gradient_checkpointing_kwargs=_checkpointing_kwargs(trainer.args),
        )

    def splits(self) -> dict[str, Any]:
        """The trainer's map-style tokenised splits: ``train``, then ``eval`` (or each named eval split)."""
        from datasets import Dataset

        trainer = self.trainer
        evaluation = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {"eval": trainer.eval_dataset}
        splits = {"train": trainer.train_dataset, **evaluation}
        return {name: split for name, split in splits.items() if isinstance(split, Dataset)}

    def prepared_layout(self) -> str:
        """The batch layout (``packing``), chosen once; a packed one replaces the trainer's padding collator."""
        if self.layout is None:
            connection = self._connection
            assert connection is not None
            with whole(self.scorer.policy):  # ZeRO-3: a partitioned policy is gathered for set-up passes
                self.layout = choose_layout(
                    self.scorer,
                    self.settings.packing,
                    padded_collator=self.backend.padded_collator,
                    blocked=connection.blocked,
                    pad_to_multiple_of=connection.pad_to_multiple_of,
                    workload=self._workload(),
                )
            self.trainer.data_collator = self.scorer.collator
        return self.layout

    def _workload(self) -> Workload:
        """What the layout is weighed on: the training split's first rows, its batches, the reference's forwards."""
        args, strategy = self.trainer.args, self.reference_strategy
        per_batch = self.loss_mix.needs_reference and strategy.provides_logps and not strategy.precomputes
        return Workload(
            first_rows(self.trainer.train_dataset, args.per_device_train_batch_size * ESTIMATE_BATCHES),
            args.per_device_train_batch_size,
            reference_forwards=int(per_batch),
            may_time=args.world_size == 1,
        )

    def prepared_reference(self) -> ReferenceStrategy:
        """The reference strategy, set up with the scorer and the reference the trainer holds (once)."""
        if not self._reference_ready:
            self._check_tokenised()
        self.prepared_layout()
        if not self._reference_ready:
            self._reference_ready = True
            connection = self._connection
            assert connection is not None
            with (
                stopped_by_signals(f"the reference's set-up ({self.reference_strategy.name})", self._nothing_trained),
                whole(self.scorer.policy),  # ZeRO-3: a partitioned policy is gathered for set-up passes
            ):
                self.reference_strategy.setup(self.scorer, connection.ref_model())
        return self.reference_strategy

    def _check_tokenised(self) -> None:
        """The host's tokenised training split checked (truncation, the chat template), before any reference pass."""
        forward, allow = self.scorer.settings, self.settings.allow_data_errors
        check_truncation(
            self.data_report,
            self.trainer.train_dataset,
            max_length=forward.max_length,
            truncation_mode=forward.truncation_mode,
            allow_errors=allow,
        )
        ensure_template_round_trip(self.data_report, self.trainer.processing_class, allow_errors=allow)

    def _nothing_trained(self) -> str:
        cached = getattr(self.reference_strategy, "cache_files", None)
        kept = (
            f" (the reference log-probs computed so far are cached in {cached[0].parent} and reused)" if cached else ""
        )
        return f"Nothing was trained or saved yet; run the same command again to start over{kept}."

    def attach(self, *, base_weights_change: bool) -> None:
        """After the host's trainer is built: the reference set up, the callbacks, the guard and the metrics."""
        trainer = self.trainer
        self.initial_adapter_dir = self._save_initial_adapter(base_weights_change)
        self.prepared_reference()
        trainer.add_callback(_ReferenceSteps(self.reference_strategy))
        self.preemption = PreemptionCallback(trainer.accelerator)
        trainer.add_callback(self.preemption)
        trainer.add_callback(_RecordOutputs(self))
        parallelism = trainer.accelerator.parallelism_config
        tp_size = parallelism.tp_size if parallelism else 1
        self.step_metrics = StepMetrics(trainer.accelerator, self.loss_mix, self.request.beta, tp_size)
        self.guard = StepGuard(trainer, self.settings, self.loss_mix, self.step_metrics)
        self.chosen_drift = ChosenDriftWatch(self.loss_mix.names)
        self._note_engine()
        logger.info(
            "Losses %s (weights %s); reference: %s, holding %.1f MiB (in each process).",
            self.loss_mix.names,
            self.loss_mix.weights,
            self.reference_strategy.describe(),
            self.reference_strategy.memory_bytes() / 2**20,
        )

    def _note_engine(self) -> None:
        """Log the engine accelerate runs, with a warning when it is not the one asked for."""
        accelerator = self.trainer.accelerator
        self.engine = DistributedEngine.running(accelerator)
        note = engine_note(self.requested_engine, self.engine) if self.requested_engine else None
        if note:
            logger.warning("%s", note)
        logger.info("Engine: %s, %d process(es).", self.engine.name, accelerator.num_processes)

    def _save_initial_adapter(self, base_weights_change: bool) -> Path | None:
        """PiSSA/OLoRA: the adapter as initialised, for converting the trained one to a plain LoRA at save time."""
        from accelerate.utils import is_peft_model

        trainer = self.trainer
        if not (base_weights_change and is_peft_model(trainer.model)):
            return None
        from .adapter_recipes.recipe import save_initial_adapter

        directory = Path(self.output_dir) / "adapter_init"
        policy = trainer.accelerator.unwrap_model(trainer.model)
        with whole(policy):  # ZeRO-3: gathered in every process
            if trainer.accelerator.is_main_process:
                with self.holding_output():
                    record(self.output_dir, self.user_entries, [directory.name])
                    save_initial_adapter(policy, directory)
        return directory

    # -- each step ---------------------------------------------------------------------------------
    def compute_loss(self, model: Any, batch: Mapping[str, Any], *, training: bool, router_coef: float | None) -> Any:
        """The step's loss: log-probs → reference → ``PairLogps`` → the loss mix (+ the router's aux loss);
        metrics kept.

        ``router_coef``: the mixture-of-experts load-balancing coefficient when the host adds that loss.
        """
        mode = "train" if training else "eval"
        use_weighting = self.request.use_weighting
        fields = METRIC_FIELDS + ((WPO_FIELD,) if use_weighting else ())
        scorer = self.scorer
        stats = forward_pairs(model, batch, scorer.settings, scorer.head, fields=fields, router=router_coef is not None)
        reference = self.reference_strategy.logps(batch) if self.loss_mix.needs_reference else (None, None)
        pair = stats.pair_logps(*reference)
        weights = stats.wpo_weights() if use_weighting else None
        loss, outputs = self.loss_mix(pair, weights, check_finite=not training)  # training: the guard decides
        if training:
            self.guard.watch_loss(pair, outputs)
        if router_coef is not None and stats.aux_loss is not None:
            loss = loss + router_coef * stats.aux_loss
        self.step_metrics.record(mode, stats, pair, outputs, weights)
        return loss

    def after_backward(self, loss: Any, model: Any) -> None:
        """At an optimizer step, before the optimizer applies it: the guard checks the loss and the gradients."""
        self.guard.after_backward(loss, model)

    def extend_logs(self, logs: dict[str, float], mode: str) -> None:
        """Add the step metrics since the last log to ``logs``, watching the drift from the reference and the
        chosen answers' log-probability (each warned once)."""
        self._warn_drift(mode)
        logs.update(self.step_metrics.pop(mode))
        if mode == "train" and (chosen_drift := self.chosen_drift.observe(logs, self.trainer.state.global_step)):
            logger.warning("%s (Warned once.)", chosen_drift)

    def _warn_drift(self, mode: str) -> None:
        drift, limit = self.step_metrics.mean(mode, "logratio/chosen"), self.settings.kl_warn
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

    # -- around training and saving -----------------------------------------------------------------
    @contextlib.contextmanager
    def holding_output(self) -> Iterator[None]:
        """The output folder's lock held: one run per folder (:mod:`dpo_plugin.run_lock`)."""
        acquire(self.output_dir)
        try:
            yield
        finally:
            release(self.output_dir)

    @contextlib.contextmanager
    def training(self, resume_from_checkpoint: Any) -> Iterator[str | None]:
        """Around the host's ``train()``: yields the checkpoint to resume from (``True``/``"true"``: the newest
        intact one), compared with this run; afterwards the model is saved and the checks run.

        The output folder is locked throughout; a checkpoint that cannot be written is a one-line
        :class:`~dpo_plugin.write_failures.WriteFailed`.
        """
        with self.holding_output():
            checkpoint = self.before_train(resume_from_checkpoint)
            with reported_write_failures(
                lambda: self.saving[0],
                self.output_dir,
                needed=self._checkpoint_bytes,
                advice=self._after_failed_checkpoint,
                free=lambda: self.saving[1],
            ):
                yield checkpoint
            self.after_train()

    def before_train(self, resume_from_checkpoint: Any) -> str | None:
        """The checkpoint to resume from (``True``/``"true"``: the newest intact one) compared with this run, the
        output folder checked."""
        checkpoint = resume_checkpoint(resume_from_checkpoint, self.output_dir)
        self._check_output(resuming=checkpoint is not None)
        self.check_resume(checkpoint)
        return checkpoint

    def after_train(self) -> None:
        """The manifest completed; a signal's stop raised as :class:`Preempted`; with checks, the model saved first,
        then the checks run (a signal during them stops them and says how to run them on the saved model)."""
        self.record_outputs()
        if self.preemption.received:
            step = self.trainer.state.global_step
            saved = Path(self.output_dir) / f"checkpoint-{step}"
            raise Preempted(
                f"Stopped by {self.preemption.received} after step {step}; the checkpoint {saved} "
                f"holds the run. Resume it with --resume_from_checkpoint {saved} (or --resume_from_checkpoint true)."
            )
        if self.settings.checks:
            self.save_final()
            with stopped_by_signals("the post-training checks", self._checks_advice):
                self.check_report = self.run_checks()

    def _check_output(self, resuming: bool) -> None:
        """Before the first write into output_dir: refuse it if the run would overwrite or delete the user's files."""
        reuse = self.settings.reuse_output_dir
        run_wrote = entries(self.output_dir) - self.entries_before if self.entries_before is not None else set()
        self.user_entries -= run_wrote
        self.user_entries |= check_output_dir(
            self.output_dir, resuming=resuming, reuse=reuse, strict=False, run_wrote=run_wrote
        )
        self.output_checked = True

    def record_outputs(self, planned: Any = ()) -> None:
        """Note in the output folder's manifest what this run wrote there, or is about to (the main process)."""
        if self.trainer.accelerator.is_main_process:
            record(self.output_dir, self.user_entries, planned)

    def save_model(self, save: Callable[[str], None], output_dir: str | None, internal: bool) -> None:
        """A save by the host's trainer (``save(folder)``, ``internal``: one of its checkpoints): finite weights
        only. A save into the output folder itself is written to a staging folder listed in its manifest, then moved
        in name by name (listed first), so that a save cut short (disk full, a kill) leaves a folder the next run
        accepts."""
        self.before_save(self.trainer.model)
        target = output_dir or self.output_dir
        if Path(target).absolute() != Path(self.output_dir).absolute():
            save(target)
            self.after_save(target, internal)
            return

        def write(staging: str) -> None:
            save(staging)
            self.after_save(staging, False)

        with self.holding_output():
            self._staged("the trained model", write)

    def save_final(self) -> None:
        """The trained model (:meth:`save_model`) and the training log (``trainer_state.json``) in output_dir, once
        per step; a signal meanwhile lets the save finish (then, with checks pending, stops)."""
        trainer = self.trainer
        if self._saved_step == trainer.state.global_step:
            return
        with stopped_by_signals("the save of the trained model", self._saved_advice, finish=True):
            trainer.save_model(self.output_dir)
            main = trainer.accelerator.is_main_process

            def write_log(folder: str) -> None:
                if main:
                    trainer.state.save_to_json(str(Path(folder) / "trainer_state.json"))

            with self.holding_output():
                self._staged("the training log", write_log)
        self._saved_step = trainer.state.global_step
        logger.info("Model and training log (trainer_state.json) saved to %s.", self.output_dir)

    def _staged(self, what: str, write: Callable[[str], Any]) -> None:
        """``write(staging)``, then its files moved into output_dir through the manifest (the main process)."""
        accelerator = self.trainer.accelerator
        staging = Path(self.output_dir) / STAGING
        if not self.output_checked:
            self._check_output(resuming=False)
        if accelerator.is_main_process:
            record(self.output_dir, self.user_entries, [STAGING])
            clear_staging(staging)
        accelerator.wait_for_everyone()
        with reported_write_failures(what, self.output_dir, needed=self._model_bytes, advice=self._after_failed_save):
            write(str(staging))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                move_in(self.output_dir, staging, self.user_entries)

    def _policy(self) -> Any:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def _model_bytes(self) -> int:
        """The bytes a save of the policy writes: all its weights, or under PEFT its adapter's."""
        from accelerate.utils import is_peft_model

        model = self._policy()
        return state_bytes(model, trainable_only=is_peft_model(model))

    def _checkpoint_bytes(self) -> int:
        """The bytes of a checkpoint: the weights saved, and the optimizer's two moments of each trained weight."""
        return self._model_bytes() + 2 * state_bytes(self._policy(), trainable_only=True)

    def _resume_hint(self) -> str:
        from .checkpoints import last_checkpoint

        newest = last_checkpoint(self.output_dir)
        if newest is None:
            return "No intact checkpoint was saved before it: free space, then run again (with reuse_output_dir: true)."
        return (
            f"The newest intact checkpoint is {newest}: free space, then resume with --resume_from_checkpoint true "
            "(the checkpoint cut short is listed as this run's and skipped)."
        )

    def _after_failed_checkpoint(self) -> str:
        return f"Training stopped at step {self.trainer.state.global_step}. {self._resume_hint()}"

    def _after_failed_save(self) -> str:
        return (
            f"What was written is in {Path(self.output_dir) / STAGING}, listed as this run's (its next save replaces "
            f"it); nothing else in the folder changed. {self._resume_hint()}"
        )

    def _saved_advice(self) -> str | None:
        if not self.settings.checks:
            return None  # nothing was left to do: the run ends as it would have
        return f"The trained model is saved in {self.output_dir}; the checks did not run. {self.evaluate_command()}"

    def _checks_advice(self) -> str:
        return f"The trained model is saved in {self.output_dir}. {self.evaluate_command()}"

    def evaluate_command(self) -> str:
        """How to run this run's checks on its saved model: the ``dpo-plugin evaluate`` command."""
        data, split = self.eval_data or ("<the held-out data>", "test")
        command = ["dpo-plugin", "evaluate", "--model", self.output_dir, "--data", data, "--split", split]
        command += ["--checks", *self.settings.checks, "--output_dir", self.output_dir]
        initial = self.scorer.initial_source
        from accelerate.utils import is_peft_model

        if initial is not None and not is_peft_model(self._policy()):
            command += ["--reference", initial]
        if self.settings.judge is not None:
            command += ["--judge", self.settings.judge]
        for name in ("judge_params", "check_params"):
            if self.settings.options(name):
                command += [f"--{name}", json.dumps(self.settings.options(name))]
        max_length = self.scorer.settings.max_length
        command += (["--max_length", str(max_length)] if max_length else []) + [
            "--beta",
            f"{self.loss_mix.reward_beta(self.request.beta):g}",
        ]
        return f"Run the checks on it with: {shlex.join(command)}"

    def before_save(self, model: Any) -> None:
        """Finite weights only; the output folder checked when the model is saved without training first."""
        self.guard.check_weights(model)
        if not self.output_checked:
            self._check_output(resuming=False)

    def after_save(self, output_dir: str | None, internal: bool) -> None:
        """A PEFT model's extras: PiSSA/OLoRA converted to plain LoRA, ``merge_adapter``'s merged model;
        the manifest."""
        from accelerate.utils import is_peft_model

        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        if internal or not is_peft_model(model):
            return
        # FSDP2, ZeRO-3: the conversion reads the whole trained adapter, gathered in every process
        sharded = self.initial_adapter_dir is not None and self.engine.shards_weights
        with for_one_process(trainer.model_wrapped, trainer.accelerator) if sharded else contextlib.nullcontext():
            if trainer.accelerator.is_main_process:
                self._save_adapter_extras(model, Path(output_dir or self.output_dir))
            if sharded:
                trainer.accelerator.wait_for_everyone()

    def _save_adapter_extras(self, model: Any, target: Path) -> None:
        if self.initial_adapter_dir is not None:
            from .adapter_recipes.recipe import save_converted_adapter

            save_converted_adapter(model, target, self.initial_adapter_dir)
            logger.info(
                "Adapter saved converted to a LoRA on the original base weights (peft's PiSSA/OLoRA conversion)."
            )
        if self.settings.merge_adapter:
            from .adapter_recipes.recipe import merge_and_save

            merged = merge_and_save(model, target / "merged", self.trainer.processing_class)
            logger.info("Merged full model and its tokenizer saved to %s.", merged)
        self.record_outputs()

    # -- the checks -------------------------------------------------------------------------------
    def run_checks(self) -> dict[str, Any] | None:
        """Run the configured checks now and return the report: the main process alone, with the whole models
        (sharded engines: every process gathers them and waits while it works); third-party checks and judges
        get plain models and need no collective of their own."""
        trainer = self.trainer
        report = None
        with self._whole_models():
            if trainer.accelerator.is_main_process:
                with self.scorer.alone(), plain_loading(trainer.accelerator):
                    report = self._checks_report()
            trainer.accelerator.wait_for_everyone()
        self.check_report = report
        return report

    @contextlib.contextmanager
    def _whole_models(self) -> Iterator[None]:
        """Within the block, the policy and the reference model the trainer holds are whole in every process."""
        engine = DistributedEngine.running(self.trainer.accelerator)
        if not engine.shards_weights:
            yield
            return
        connection = self._connection
        assert connection is not None
        trainer = self.trainer
        with contextlib.ExitStack() as stack:
            for model in (trainer.model_wrapped, connection.ref_model()):
                if model is not None:
                    stack.enter_context(for_one_process(model, trainer.accelerator))
            yield

    def _checks_report(self) -> dict[str, Any]:
        splits = self.splits()
        split = splits.get("eval", next((s for n, s in splits.items() if n != "train"), None))
        context, missing = None, "no eval split: pass an eval_dataset (or dataset_test_split)"
        if split is not None:
            try:
                context = build_context(
                    self.scorer,
                    self.prepared_reference(),
                    split,
                    judge=self.judge,
                    beta=self.loss_mix.reward_beta(self.request.beta),
                    output_dir=self.output_dir,
                    log_history=self.trainer.state.log_history,
                    seed=self.trainer.args.seed,
                    no_pairs_note=self._no_pairs_note(split),
                )
            except Exception as error:
                logger.exception("Preparing the checks failed.")
                missing = f"preparing the checks raised {type(error).__name__}: {error}"
        extra = {"reference": self.reference_strategy.describe(), "losses": self.loss_mix.names}
        checks, params = self.settings.checks, self.settings.options("check_params")
        report, results = run_checks(context, checks, params, output_dir=self.output_dir, extra=extra, missing=missing)
        self.record_outputs()
        self.trainer.log(check_metrics(results))
        return report

    def _no_pairs_note(self, split: Any) -> str | None:
        """Why the eval split has no usable pairs (None when it has some)."""
        if len(split) > 0:
            return None
        forward = self.scorer.settings
        if forward.max_length is not None and forward.truncation_mode == "keep_start":
            return (
                f"the eval split is empty after preprocessing: TRL drops every pair whose prompt fills "
                f"max_length={forward.max_length} (raise max_length or shorten the prompts)"
            )
        return "the eval split is empty after preprocessing"
