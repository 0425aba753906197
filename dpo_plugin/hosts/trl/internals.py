"""TRL's internals: the one module that knows how TRL's ``DPOTrainer`` works inside.

When TRL changes, this file and ``tests/test_trl_parity.py`` are what change. It lends the host-free
forward TRL's tokenisation, padded collator and per-token head (:class:`TrlBackend`), loads the
policy as TRL would, shows TRL's ``__init__`` the field values it must act on (:func:`trl_init_view`),
and overrides the ``DPOTrainer`` methods through which a run's :class:`~dpo_plugin.session.DPOSession`
drives the trainer (:class:`SessionHooks`).

Every TRL attribute the package uses (``tests/test_boundaries.py`` fails on any other, and on any
use outside ``hosts/trl/``); a module named beside one uses it too:

- ``trl.DPOTrainer._prepare_dataset(dataset, processing_class, args, name)``: TRL's tokenisation,
  called unbound by :func:`prepare_pairs` (it reads only ``self._tokenizer`` and the ``args`` fields
  ``dataset_num_proc``, ``max_length``, ``truncation_mode``) and by :meth:`SessionHooks.evaluate`.
- ``trl.DPOTrainer._precompute_ref_logps(dataset, name, batch_size)``: overridden by
  :class:`SessionHooks`; TRL calls it for each split at the end of ``__init__`` and in
  ``evaluate()`` when ``precompute_ref_logps`` is on.
- ``trl.DPOTrainer.precompute_ref_logps``, ``loss_types``, ``loss_weights``: set by :func:`tell_trl`
  (TRL reads them in ``evaluate`` and its model card); ``aux_loss_enabled``,
  ``router_aux_loss_coef``: read by :func:`router_coef`; ``ref_model``: the reference TRL holds.
- ``trl.DPOTrainer.compute_loss``, ``training_step``, ``log``, ``evaluate``, ``train``,
  ``save_model``: overridden by :class:`SessionHooks`.
- The instance attribute ``forward`` that ``trl.trainer.utils.add_fused_lm_head`` sets (a
  ``_fused_forward`` closure over the original forward), and the ``fused_lm_head`` keyword it adds:
  detected and removed by :func:`strip_fused_head` (a deep copy of a patched model would still run
  the original), called by :class:`FusedHead`.
- ``trl.DPOConfig`` fields read as TRL's: ``loss_type``, ``loss_weights``, ``beta``, ``use_weighting``,
  ``ld_alpha``, ``max_length``, ``truncation_mode``, ``pad_to_multiple_of``, ``precompute_ref_log_probs``,
  ``precompute_ref_batch_size``, ``sync_ref_model``, ``ref_model_sync_steps``, ``ref_model_mixup_alpha``,
  ``padding_free``, ``model_init_kwargs``, ``f_divergence_type``, ``trust_remote_code`` (in
  ``hosts/trl/config.py`` too), and ``TrainingArguments._VALID_DICT_FIELDS`` (in ``hosts/trl/config.py``):
  the fields whose JSON strings transformers parses into dicts; ours adds the plugin's dict fields.
- TRL's public functions and classes: ``trl.trainer.utils.add_fused_lm_head``,
  ``create_model_from_path``, ``trl.trainer.dpo_trainer.DataCollatorForPreference``,
  ``trl.data_utils.extract_prompt``, ``trl.DPOTrainer``, ``trl.DPOConfig`` (in ``hosts/trl/config.py``,
  ``hosts/trl/trainer.py``), ``TrlParser``, ``ScriptArguments``, ``ModelConfig``,
  ``DatasetMixtureConfig``, ``get_dataset`` (in ``hosts/trl/train_args.py``, ``hosts/trl/run.py``,
  ``hosts/trl/train_help.py``).

Copies of TRL 1.16 code, each covered by the parity test: :func:`~dpo_plugin.forward.logps.forward_pairs`
mirrors the log-prob, LD-DPO and WPO parts of ``DPOTrainer._compute_loss``; :func:`load_policy` the
model loading of ``DPOTrainer.__init__``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import trl
from accelerate.utils import is_peft_model
from trl.data_utils import extract_prompt
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import create_model_from_path

from ...errors import ConfigError
from ...forward.backend import Collator
from ...forward.heads import LogitsHead, TokenHead, TokenOutputs
from ...forward.logps import REFERENCE_COLUMNS, ForwardSettings, logits_outputs
from ...session import streams
from ...settings import LossRequest

if TYPE_CHECKING:
    from ...session import DPOSession

#: TRL's default of every DPOConfig field (a field set to its default is never refused).
TRL_DEFAULTS = {
    f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    for f in dataclasses.fields(trl.DPOConfig)
    if f.init
}


# -- the per-token head ------------------------------------------------------------------------
def _fused_patch(model: Any) -> Any:
    """TRL's ``_fused_forward`` patch on a model (its base model under PEFT), or None."""
    base = model.get_base_model() if is_peft_model(model) else model
    forward = base.__dict__.get("forward")
    code = getattr(getattr(forward, "__func__", None), "__code__", None)
    return forward if code is not None and code.co_name == "_fused_forward" else None


def strip_fused_head(model: Any) -> Any:
    """``model`` without TRL's fused-LM-head patch (its class's own forward back); returns the model."""
    if _fused_patch(model) is not None:
        base = model.get_base_model() if is_peft_model(model) else model
        del base.__dict__["forward"]
    return model


class FusedHead:
    """TRL 1.16's fused LM head: per-token log-probs without ``[B, T, V]`` logits (a patch of the model's forward).

    The policy is patched by TRL's ``__init__`` with the fields its metrics need; :meth:`ensure`
    patches any other model (a reference) for ``log_probs`` alone.
    """

    def __call__(self, model: Any, model_kwargs: dict[str, Any], fields: Sequence[str] = ()) -> TokenOutputs:
        outputs: TokenOutputs = model(**model_kwargs, fused_lm_head=True)
        return outputs

    def ensure(self, model: Any) -> Any:
        from trl.trainer.utils import add_fused_lm_head

        if _fused_patch(model) is None:
            add_fused_lm_head(model.get_base_model() if is_peft_model(model) else model, outputs=("log_probs",))
        return model


def fused_head_available() -> bool:
    """Whether the installed TRL has the fused LM head (1.16 and later); before it, log-probs come from logits."""
    import trl.trainer.utils as utils

    return hasattr(utils, "add_fused_lm_head")


class TrlBackend:
    """TRL's tokenisation, padded collator and per-token head, for the host-free forward."""

    def __init__(self) -> None:
        self._head: TokenHead = FusedHead() if fused_head_available() else LogitsHead()

    @property
    def head(self) -> TokenHead:
        return self._head

    def padded_collator(
        self,
        pad_token_id: int,
        *,
        max_length: int | None = None,
        truncation_mode: str = "keep_start",
        pad_to_multiple_of: int | None = None,
    ) -> Collator:
        collator: Collator = DataCollatorForPreference(
            pad_token_id=pad_token_id,
            max_length=max_length,
            truncation_mode=truncation_mode,
            pad_to_multiple_of=pad_to_multiple_of,
        )
        return collator

    def prepare_pairs(
        self,
        dataset: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        truncation_mode: str = "keep_start",
        name: str = "eval",
    ) -> Any:
        return prepare_pairs(dataset, tokenizer, max_length=max_length, truncation_mode=truncation_mode, name=name)

    def extract_prompt(self, example: dict[str, Any]) -> dict[str, Any]:
        extracted: dict[str, Any] = extract_prompt(example)
        return extracted


def prepare_pairs(
    dataset: Any,
    tokenizer: Any,
    *,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    name: str = "eval",
) -> Any:
    """A preference split tokenised exactly as TRL's ``DPOTrainer`` does (``prompt_ids``, ``chosen_ids``, …).

    TRL's own ``_prepare_dataset``: implicit prompts extracted, EOS added to plain-text completions,
    chat templates applied, pairs whose prompt alone fills ``max_length`` dropped (``keep_start``).
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer_view = types.SimpleNamespace(_tokenizer=tokenizer)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode=truncation_mode)
    return trl.DPOTrainer._prepare_dataset(trainer_view, dataset, tokenizer, args, name)


# -- the config, read as TRL's --------------------------------------------------------------------
def forward_settings(args: Any) -> ForwardSettings:
    """What changes log-probabilities, from a ``DPOConfig``: LD-DPO's α, truncation, precision."""
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "float32"
    return ForwardSettings(args.ld_alpha, args.max_length, args.truncation_mode, precision)


def loss_request(args: Any, explicit: frozenset[str]) -> LossRequest:
    """The loss fields of a ``DPOConfig`` (``explicit``: the fields the user set)."""
    values = {name: getattr(args, name) for name in sorted(explicit) if hasattr(args, name)}
    weights = tuple(args.loss_weights) if args.loss_weights is not None else None
    return LossRequest(tuple(args.loss_type), weights, values, TRL_DEFAULTS, args.beta, bool(args.use_weighting))


def policy_load_kwargs(
    args: Any, pre_load: Callable[[dict[str, Any]], dict[str, Any]], quantization_config: Any
) -> dict[str, Any]:
    """The policy's loading kwargs as TRL's ``DPOTrainer.__init__`` builds them, after the adapter recipe's
    ``pre_load`` (e.g. QLoRA's quantization; its checks need no file, so they run before the model's are read)."""
    kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        if "quantization_config" in kwargs:
            raise ConfigError("quantization_config is given both to the trainer and in model_init_kwargs; give one.")
        kwargs["quantization_config"] = quantization_config
    kwargs = pre_load(kwargs)
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return kwargs


def load_policy(model_id: str, kwargs: dict[str, Any]) -> Any:
    """Load the policy as TRL's ``DPOTrainer.__init__`` would, with :func:`policy_load_kwargs`."""
    return create_model_from_path(model_id, **kwargs)


@contextlib.contextmanager
def trl_init_view(args: Any, *, precompute: bool, loaded_here: bool) -> Iterator[None]:
    """Show TRL's ``__init__`` the field values it must act on, then restore the user's.

    ``loss_type``/``loss_weights``: the mix is ours, and TRL's name checks would refuse plugin
    losses (ours validate the same rules); ``precompute_ref_log_probs``: on for strategies that need
    no reference model in TRL's hands (``precomputed``, ``none``), so TRL neither reloads one from
    disk nor keeps one, and calls :meth:`SessionHooks._precompute_ref_logps`; ``sync_ref_model``: the
    ``sync`` strategy updates the reference itself (PEFT included, where TRL refuses);
    ``padding_free``: ours is the ``packing`` setting (TRL 1.16 only warns and pads);
    ``model_init_kwargs``: already applied when we loaded the policy.
    """
    values: dict[str, Any] = {
        "loss_type": ["sigmoid"],
        "loss_weights": None,
        "precompute_ref_log_probs": precompute,
        "sync_ref_model": False,
        "padding_free": False,
    }
    if loaded_here:
        values["model_init_kwargs"] = None
    saved = {name: getattr(args, name) for name in values}
    for name, value in values.items():
        setattr(args, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(args, name, value)


# -- the trainer, as TRL built it -----------------------------------------------------------------
def tell_trl(trainer: Any, session: DPOSession) -> None:
    """After TRL's ``__init__``: its view of the run made true (the loss mix, whether the reference is precomputed)."""
    trainer.loss_types, trainer.loss_weights = session.loss_mix.names, session.loss_mix.weights
    trainer.precompute_ref_logps = session.reference_strategy.precomputes  # TRL's evaluate() then calls our hook


def router_coef(trainer: Any) -> float | None:
    """The mixture-of-experts load-balancing coefficient when TRL adds that loss, else None."""
    return float(trainer.router_aux_loss_coef) if trainer.aux_loss_enabled else None


def held_reference(trainer: Any) -> Any:
    """The reference model TRL holds (prepared by the accelerator), or None."""
    return trainer.ref_model


class SessionHooks:
    """The ``trl.DPOTrainer`` methods a session drives, mixed in before ``trl.DPOTrainer`` (or a subclass of it).

    The trainer sets ``self.session`` (a :class:`~dpo_plugin.session.DPOSession`) before TRL's ``__init__``.
    """

    session: DPOSession

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        training = self.model.training  # type: ignore[attr-defined]
        loss = self.session.compute_loss(model, inputs, training=training, router_coef=router_coef(self))
        return (loss, logits_outputs(model, inputs)) if return_outputs else loss

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """TRL's step (forward, loss, backward); at an optimizer step the guard checks the loss and gradients first."""
        loss = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        if self.accelerator.sync_gradients:  # type: ignore[attr-defined]
            self.session.after_backward(loss, self.model)  # type: ignore[attr-defined]
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"  # type: ignore[attr-defined]
        self.session.extend_logs(logs, mode)
        super().log(logs, start_time)  # type: ignore[misc]

    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        """TRL's training loop; with checks, the trained model saved into ``output_dir``, then the checks run (report
        in ``<output_dir>/eval/``).

        ``resume_from_checkpoint``: a checkpoint folder, or ``True``/``"true"`` for the output folder's newest
        intact one (refused when the run changed since it was saved, unless ``resume_changed``). A signal
        (SIGTERM, SIGINT) saves a checkpoint, or during the checks stops them, and raises ``Preempted``.
        """
        with self.session.training(resume_from_checkpoint) as checkpoint:
            output = super().train(checkpoint, *args, **kwargs)  # type: ignore[misc]
        return output

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """TRL's save, of finite weights only, into ``output_dir`` through its manifest; PiSSA/OLoRA converted to
        plain LoRA; ``merge_adapter``: a merged model too."""

        def save(folder: str) -> None:  # TRL's save without its push (pushed below, once the files are in place)
            super(SessionHooks, self).save_model(folder, True)  # type: ignore[misc]

        self.session.save_model(save, output_dir, _internal_call)
        if not _internal_call and self.args.push_to_hub:  # type: ignore[attr-defined]
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)  # type: ignore[attr-defined]

    @property
    def check_report(self) -> dict[str, Any] | None:
        """The report of the post-training checks (None before they ran, or without checks)."""
        return self.session.check_report

    def run_checks(self) -> dict[str, Any] | None:
        """Run the configured checks now on the current policy and return their report."""
        return self.session.run_checks()

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """TRL's ``evaluate``; a dataset given here under a precomputing reference gets its reference log-probs first.

        TRL refuses that case after training under full fine-tuning (its reference is gone); ours
        scores the split with the reference strategy (reloading the initial model if it must), then
        lets TRL evaluate the prepared split. A streaming split under ``reference: auto`` (which chose
        to precompute) is scored batch by batch with the reference instead; with ``reference:
        precomputed`` asked for, TRL's refusal of a streaming split stands.
        """
        strategy = self.session.reference_strategy
        if eval_dataset is None or isinstance(eval_dataset, str) or not strategy.precomputes:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
        if streams(eval_dataset) and strategy.name == "auto":  # chosen for the user: score its batches as they come
            self.precompute_ref_logps = False
            try:
                with strategy.batch_by_batch(metric_key_prefix):
                    return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
            finally:
                self.precompute_ref_logps = True
        named = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
        prepared = {
            name: self._precompute_ref_logps(
                self._prepare_dataset(split, self.processing_class, self.args, name),  # type: ignore[attr-defined]
                name,
                0,
            )
            for name, split in named.items()
        }
        self.precompute_ref_logps = False  # the columns are there: TRL must not precompute (nor refuse) again
        try:
            return super().evaluate(  # type: ignore[misc]
                prepared if isinstance(eval_dataset, dict) else prepared["eval"], ignore_keys, metric_key_prefix
            )
        finally:
            self.precompute_ref_logps = True

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """TRL's precompute hook: the reference strategy's log-probs of ``dataset`` as TRL's two columns."""
        from datasets import IterableDataset

        strategy = self.session.reference_strategy
        if not strategy.precomputes:
            return dataset  # TRL was shown precompute only so that it would not reload a reference
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                "`precompute_ref_log_probs=True` is not supported with IterableDataset. "  # TRL's own sentence first
                f"reference: {strategy.name} needs a map-style Dataset to score once before training, but the {name} "
                "split is an IterableDataset (streaming). Load it without streaming, or use reference: copy or "
                "adapter, which score each batch as it comes."
            )
        scores = self.session.prepared_reference().score(dataset)
        dataset = dataset.remove_columns([c for c in REFERENCE_COLUMNS if c in dataset.column_names])
        dataset = dataset.add_column(REFERENCE_COLUMNS[0], scores.chosen.tolist())
        return dataset.add_column(REFERENCE_COLUMNS[1], scores.rejected.tolist())
