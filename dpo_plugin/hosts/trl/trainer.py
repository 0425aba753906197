"""``DPOTrainer``: TRL's trainer running a :class:`~dpo_plugin.session.DPOSession`.

Same constructor as TRL's. The session resolves the losses, reference strategy and adapter through
the registries before TRL's ``__init__`` runs (TRL is handed a ready ``ref_model``, or none, so it
never reloads one from disk); each step goes through the session (:class:`~.internals.SessionHooks`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import trl
from accelerate.utils import is_peft_model
from transformers import TrainerCallback

from ...checkpoints import resume_checkpoint
from ...errors import ConfigError
from ...model_files import load_model_config, load_processing_class
from ...session import Connection, DPOSession, streams
from .config import DPOConfig
from .internals import (
    TRL_DEFAULTS,
    SessionHooks,
    TrlBackend,
    forward_settings,
    held_reference,
    load_policy,
    loss_request,
    policy_load_kwargs,
    strip_fused_head,
    tell_trl,
    trl_init_view,
)


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


def packing_obstacle(
    args: DPOConfig,
    model: Any,
    peft_config: Any,
    collator: Any,
    processor: Any,
    train: Any,
    compute_metrics: Any,
    evaluation: Any = None,
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
        "a streaming dataset on several processes is gathered as padded batches": (
            streams(train) or streams(evaluation)
        )
        and args.world_size > 1,
    }
    return next((reason for reason, present in obstacles.items() if present), None)


@dataclass(frozen=True)
class RunPlan:
    """What a TRL-based trainer hands TRL's ``__init__``, prepared by its session before it runs.

    ``model``: the policy (loaded when given by name); ``ref_model``: the reference TRL holds (None for
    strategies that need none in TRL's hands); ``peft_config``: the adapter to wrap the policy with;
    ``precompute``: show TRL ``precompute_ref_log_probs`` (so it neither reloads nor keeps a reference);
    ``processing_class``: the one passed, or the model's, loaded (as TRL would) before the model.
    """

    model: Any
    ref_model: Any
    peft_config: Any
    base_weights_change: bool
    precompute: bool
    loaded_here: bool
    processing_class: Any = None


def plan_run(
    trainer: Any,
    args: Any,
    model: Any,
    datasets: tuple[Any, Any],
    *,
    ref_model: Any = None,
    peft_config: Any = None,
    quantization_config: Any = None,
    data_collator: Any = None,
    processing_class: Any = None,
    compute_metrics: Any = None,
    initial_copy: Any = None,
) -> RunPlan:
    """Before TRL's ``__init__``: the data checked, the policy loaded, the adapter and the reference prepared,
    the session connected to ``trainer`` (``trainer.session``). ``datasets``: the raw train and eval splits;
    ``initial_copy``: a copy of the initial policy the host already loaded (see ``RunFacts``)."""
    session: DPOSession = trainer.session
    train_dataset, eval_dataset = datasets
    session.prepare_engine(args)
    session.check_data(train_dataset, eval_dataset)
    loaded_here = isinstance(model, str)
    load_kwargs = policy_load_kwargs(args, session.pre_load, quantization_config) if loaded_here else {}
    processing_class = _before_loading(session, args, model, processing_class)
    if isinstance(model, str):
        model = load_policy(model, load_kwargs)
    else:
        strip_fused_head(model)  # patched by an earlier trainer: a copy of it would still run the original
    explicit = getattr(args, "explicit_fields", frozenset())  # a DPOConfig's (another host's arguments have none)
    if peft_config is not None and session.settings.adapter == "none" and "adapter" in explicit:
        raise ConfigError("A peft_config was passed, but adapter: none is set: they contradict each other; set one.")
    peft_config, rewrites = session.adapter_config(model, peft_config)
    peft = peft_config is not None or is_peft_model(model)
    run = session.run_facts(
        peft=peft, base_weights_change=rewrites, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset
    )
    held = session.prepare_reference(model, ref_model, dataclasses.replace(run, initial_copy=initial_copy))
    obstacle = packing_obstacle(
        args, model, peft_config, data_collator, processing_class, train_dataset, compute_metrics, eval_dataset
    )
    connection = Connection(forward_settings(args), lambda: held_reference(trainer), obstacle, args.pad_to_multiple_of)
    session.connect(trainer, connection)
    precompute = session.reference_strategy.precomputes or (held is None and not peft)
    return RunPlan(model, held, peft_config, rewrites, precompute, loaded_here, processing_class)


def _before_loading(session: DPOSession, args: Any, model: Any, processing_class: Any) -> Any:
    """What can be found wrong before the policy's weights load: its config and tokenizer files (loaded here when
    the model is a name), the chat template conversational data needs, a resume of another run (``dpo-plugin
    train`` sets ``resume_from_checkpoint``). Returns the processing class."""
    if isinstance(model, str):
        options = {
            "revision": (args.model_init_kwargs or {}).get("revision"),
            "trust_remote_code": args.trust_remote_code,
        }
        config = load_model_config(model, **options).to_dict()
        processing_class = processing_class or load_processing_class(model, **options)
    else:
        config = model.config.to_dict()
    session.check_chat_template(processing_class)
    if args.resume_from_checkpoint not in (None, False):
        checkpoint = resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
        session.check_resume(checkpoint, config, max_length=args.max_length)
    return processing_class


def finish_run(trainer: Any, plan: RunPlan) -> None:
    """After TRL's ``__init__``: TRL told the run's loss mix and reference, the session attached."""
    tell_trl(trainer, trainer.session)
    trainer.session.attach(base_weights_change=plan.base_weights_change)


def new_session(args: Any, explicit: frozenset[str]) -> DPOSession:
    """The session of a run configured by a TRL ``DPOConfig`` that is also the run's :class:`PluginSettings`
    (the installed TRL checked against the host's range first)."""
    from .host import TrlHost

    TrlHost().check_versions()
    return DPOSession(args, loss_request(args, explicit), TrlBackend(), output_dir=args.output_dir)


class DPOTrainer(SessionHooks, trl.DPOTrainer):
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
        self.session = new_session(args, args.explicit_fields)
        plan = plan_run(
            self,
            args,
            model,
            (train_dataset, eval_dataset),
            ref_model=ref_model,
            peft_config=peft_config,
            quantization_config=quantization_config,
            data_collator=data_collator,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
        )
        with trl_init_view(args, precompute=plan.precompute, loaded_here=plan.loaded_here):
            super().__init__(
                plan.model,
                ref_model=plan.ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=plan.processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=plan.peft_config,
            )
        finish_run(self, plan)
