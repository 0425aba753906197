"""The forward: the one module that knows TRL's internals and the batch layout.

It turns a collated batch into per-sequence log-probabilities: the batch layout (TRL's padded
``[chosen; rejected]`` rows, or a packed row built by :mod:`.packing`, chosen once per run by
:func:`choose_layout`), the call through TRL's fused LM head (no ``[batch, seq, vocab]`` logits),
LD-DPO's weighted sums and WPO's pair weights; and it implements the
:class:`~dpo_plugin.forward.interface.PairScorer` everything else uses, over a trainer or over a bare model.
When TRL changes, this file and ``tests/test_trl_parity.py`` are what change.

TRL's and transformers' private names the package relies on (used here, or only in the module
named beside one; ``tests/test_boundaries.py`` fails on any other, and on any use elsewhere):

- ``DPOTrainer._precompute_ref_logps(dataset, name, batch_size)``: overridden by :class:`TrlHooks`.
  TRL calls it for each split at the end of ``__init__`` and in ``evaluate()`` for a new dataset
  when ``precompute_ref_log_probs`` is on; ours attaches the reference strategy's log-probs.
- ``DPOTrainer._prepare_dataset(dataset, processing_class, args, name)``: TRL's tokenisation,
  called unbound by :func:`prepare_pairs` (it reads only ``self._tokenizer`` and three ``args``
  fields) so that data checks and ``dpo-plugin evaluate`` tokenise exactly as training does, and
  by :meth:`TrlHooks.evaluate` for a dataset given to ``evaluate()``.
- The instance attribute ``forward`` that ``trl.trainer.utils.add_fused_lm_head`` sets (a
  ``_fused_forward`` closure over the original forward): detected and removed by
  :func:`strip_fused_head` (a deep copy of a patched model would still run the original).
- ``PretrainedConfig._attn_implementation`` (in ``forward/packing.py``): which attention a model runs,
  read to switch it to the segment attention and to check that the switch took.
- ``PreTrainedModel._supports_attention_backend`` (in ``forward/packing.py``): whether a model class
  calls registered attention functions at all (Falcon and StableLM do not).
- ``TrainingArguments._VALID_DICT_FIELDS`` (in ``hosts/trl/config.py``): the fields whose JSON strings
  transformers parses into dicts; ours adds the plugin's dict fields.

Copies of TRL 1.16 code, each covered by the parity test: :func:`forward_pairs` mirrors the
log-prob, LD-DPO and WPO parts of ``DPOTrainer._compute_loss`` (and ``compute_ref_log_probs``);
:func:`load_policy` mirrors the model loading of ``DPOTrainer.__init__``. TRL's public API used:
``add_fused_lm_head``, ``use_adapter``, ``create_model_from_path``, ``disable_gradient_checkpointing``,
``DataCollatorForPreference`` and the ``DPOConfig`` fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ContextManager

import numpy as np
import torch
import trl
from accelerate.utils import is_peft_model
from torch import Tensor
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, use_adapter

from ...errors import ConfigError
from ...forward.interface import PairScorer, PairScores
from ...types import PairLogps
from ...forward.packing import (
    PACKED_KEYS,
    PLAN,
    SEGMENTED,
    PackedCollator,
    support,
    use_segment_attention,
)

logger = logging.getLogger(__name__)

#: Columns of a collated batch that are not model inputs.
NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})
#: TRL's tokenised columns, and the precomputed reference columns its collator passes through.
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
#: Per-token fields the training forward asks the fused head for (TRL's; WPO adds ``log_sum_sq_probs``).
TRAINING_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


@dataclass(frozen=True)
class ForwardSettings:
    """What changes the log-probabilities of a batch besides the weights: LD-DPO's α, truncation, precision."""

    ld_alpha: float | None = None
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    precision: str = "float32"

    @classmethod
    def of(cls, args: Any) -> ForwardSettings:
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "float32"
        return cls(args.ld_alpha, args.max_length, args.truncation_mode, precision)


@dataclass
class SequenceStats:
    """Per-sequence results of one forward over ``2B`` sequences, chosen first (all ``[2B]``).

    ``logps``: summed completion log-probs (LD-DPO-weighted with ``ld_alpha``); ``plain``: the plain
    sums when they differ; ``tokens``: completion tokens; ``predicted``: completion tokens that have
    a log-prob (all but a completion's token at position 0); ``input_tokens``: the batch's tokens as
    TRL counts them (``attention_mask.sum()``). The metric sums (entropy, mean logits, top-1 hits,
    WPO's mean aligned log-prob) are set by the training forward only.
    """

    logps: Tensor
    plain: Tensor | None
    tokens: Tensor
    predicted: Tensor
    input_tokens: Tensor
    entropy: Tensor | None = None
    mean_logits: Tensor | None = None
    top1: Tensor | None = None
    wpo_mean: Tensor | None = None
    aux_loss: Tensor | None = None

    def pair_logps(self, ref_chosen: Tensor | None, ref_rejected: Tensor | None) -> PairLogps:
        chosen, rejected = self.logps.chunk(2)
        chosen_tokens, rejected_tokens = self.tokens.chunk(2)
        plain = self.plain.chunk(2) if self.plain is not None else (None, None)
        return PairLogps(chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens, *plain)

    def wpo_weights(self) -> Tensor:
        """WPO pair weights ``exp(mean_t(log p_t − log Σ_v p_v²))`` of chosen × rejected (arXiv:2406.11827, Eq. 2)."""
        chosen, rejected = torch.exp(self.wpo_mean).chunk(2)
        return chosen * rejected


@dataclass
class _Layout:
    """How one batch's per-token outputs map to its ``2B`` sequences: the reducer and the token counts.

    ``reduce`` sums a per-token field (shaped as the fused head's outputs) over each sequence's
    completion tokens; ``tail`` marks the completion tokens past the pair's shorter completion (LD-DPO).
    """

    reduce: Callable[[Tensor], Tensor]
    tail: Tensor
    tokens: Tensor
    predicted: Tensor
    input_tokens: Tensor


def _padded_layout(batch: Mapping[str, Any]) -> tuple[dict[str, Any], _Layout]:
    """TRL's padded ``[chosen; rejected]`` rows: the model inputs and the per-row reduction (as ``_compute_loss``)."""
    completion_mask = batch["completion_mask"]
    model_kwargs = {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}
    model_kwargs["labels"] = batch["input_ids"].masked_fill(completion_mask == 0, -100)
    mask = completion_mask[:, 1:]
    positions = mask.cumsum(dim=1)  # LD-DPO: a token's rank within its completion, as TRL 1.16 computes it
    chosen_lens, rejected_lens = mask.sum(dim=1).long().chunk(2)
    shared = torch.minimum(chosen_lens, rejected_lens).repeat(2).unsqueeze(1).to(mask.device)
    layout = _Layout(
        lambda values: (values * mask).sum(dim=1),
        positions > shared,
        completion_mask.sum(dim=1),
        mask.sum(dim=1),
        batch["attention_mask"].sum(),
    )
    return model_kwargs, layout


def _packed_layout(batch: Mapping[str, Any]) -> tuple[dict[str, Any], _Layout]:
    """A packed row (:mod:`.packing`): the model inputs with the segment plan, and the reduction by sequence index."""
    model_kwargs = {k: v for k, v in batch.items() if k not in PACKED_KEYS and k not in NON_MODEL_KEYS}
    model_kwargs |= {"labels": batch["packed_labels"], "attention_mask": SEGMENTED, PLAN: batch[PLAN]}
    targets = batch["completion_of"][0, 1:]
    counted = targets >= 0
    index = targets[counted]
    sequences = batch["tokens"].numel()

    def reduce(values: Tensor) -> Tensor:
        selected = values[0][counted]
        return torch.zeros(sequences, dtype=selected.dtype, device=selected.device).index_add(0, index, selected)

    layout = _Layout(reduce, batch["ld_tail"][:, 1:], batch["tokens"], batch["predicted"], batch["input_tokens"])
    return model_kwargs, layout


def forward_pairs(
    model: Any, batch: Mapping[str, Any], settings: ForwardSettings, *, training: bool = False, router: bool = False
) -> SequenceStats:
    """Per-sequence log-probs of a batch (TRL's padded rows, or a packed row) through TRL's fused LM head.

    ``training``: also the per-sequence metric sums TRL logs (and WPO's, when the head computes
    ``log_sum_sq_probs``); ``router``: ask a mixture-of-experts model for its load-balancing loss.
    Gradients flow unless the caller disables them. Mirrors TRL 1.16's ``_compute_loss`` (log-probs,
    LD-DPO sums, WPO weights, metric sums); a packed row gives the same values (tests/test_packing.py).
    """
    if PLAN in batch:
        use_segment_attention(model)
        model_kwargs, layout = _packed_layout(batch)
    else:
        model_kwargs, layout = _padded_layout(batch)
    model_kwargs["use_cache"] = False
    if router:
        model_kwargs["output_router_logits"] = True
    outputs = model(**model_kwargs, fused_lm_head=True)
    width = layout.tail.size(1)  # prompt-learning PEFT prepends virtual tokens: keep the real positions

    def per_token(field: str) -> Tensor:
        return getattr(outputs, field)[:, -width:]

    log_probs = per_token("log_probs")
    plain = layout.reduce(log_probs)
    ld_alpha = settings.ld_alpha
    logps = plain if ld_alpha is None else layout.reduce(log_probs * ~layout.tail) + ld_alpha * layout.reduce(log_probs * layout.tail)
    stats = SequenceStats(logps, None if ld_alpha is None else plain, layout.tokens, layout.predicted, layout.input_tokens)
    if training:
        stats.entropy = layout.reduce(per_token("entropy").detach())
        stats.mean_logits = layout.reduce(per_token("mean_logits").detach())
        stats.top1 = layout.reduce(per_token("is_top1").float())
        stats.aux_loss = getattr(outputs, "aux_loss", None)
        if outputs.log_sum_sq_probs is not None:
            with torch.no_grad():
                aligned = layout.reduce(log_probs - per_token("log_sum_sq_probs"))
            stats.wpo_mean = aligned / stats.predicted.clamp_min(1)
    return stats


def logits_outputs(model: Any, batch: Mapping[str, Any]) -> Any:
    """The model's plain outputs (with logits) for a batch, for ``compute_metrics``; an extra forward, as TRL does."""
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}, use_cache=False)


# -- TRL's fused-LM-head patch ------------------------------------------------------------------
def _patched_forward(model: Any) -> Any:
    forward = model.__dict__.get("forward")
    code = getattr(getattr(forward, "__func__", None), "__code__", None)
    return forward if code is not None and code.co_name == "_fused_forward" else None


def strip_fused_head(model: Any) -> Any:
    """``model`` without TRL's fused-LM-head patch (its class's own forward back); returns the model."""
    base = model.get_base_model() if is_peft_model(model) else model
    if _patched_forward(base) is not None:
        del base.__dict__["forward"]
    return model


def ensure_fused_head(model: Any, outputs: tuple[str, ...] = ("log_probs",)) -> Any:
    """Give a model TRL's fused log-prob head if it has none yet (e.g. a reference reloaded for the checks)."""
    base = model.get_base_model() if is_peft_model(model) else model
    if _patched_forward(base) is None:
        add_fused_lm_head(base, outputs=outputs)
    return model


# -- where the forwards run -------------------------------------------------------------------
@dataclass
class Engine:
    """Where and how scoring forwards run: device, precision, and the processes sharing the work."""

    device: torch.device
    autocast: Callable[[], ContextManager[Any]]
    shard: Callable[[Any], Iterable[Any]]  # a DataLoader → this process's batches, on the device
    gather: Callable[[Tensor], Tensor]  # a tensor of this process's rows → every process's, in dataset order
    unwrap: Callable[[Any], Any]
    is_main_process: bool = True

    @classmethod
    def of(cls, accelerator: Any) -> Engine:
        """The trainer's accelerator: its device, mixed precision and processes."""
        return cls(
            accelerator.device,
            accelerator.autocast,
            accelerator.prepare,
            accelerator.gather_for_metrics,
            accelerator.unwrap_model,
            accelerator.is_main_process,
        )

    @classmethod
    def local(cls, device: torch.device | str | None = None, bf16: bool = False) -> Engine:
        """One process on ``device`` (default: CUDA when available), bf16 autocast if asked."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        def autocast() -> ContextManager[Any]:
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

        return cls(device, autocast, _on_device(device), _same, _same)

    def alone(self) -> Engine:
        """The same device and precision for this process alone (no sharding, no gathering)."""
        return Engine(self.device, self.autocast, _on_device(self.device), _same, self.unwrap, True)


def _same(value: Any) -> Any:
    return value


def _on_device(device: torch.device) -> Callable[[Any], Iterator[Any]]:
    """A DataLoader's batches moved to ``device``, all of them (one process)."""

    def shard(loader: Any) -> Iterator[Any]:
        for batch in loader:
            yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    return shard


# -- the scorer ---------------------------------------------------------------------------------
class Scorer(PairScorer):
    """:class:`~dpo_plugin.forward.interface.PairScorer` over TRL's padded layout and fused LM head.

    ``get_policy`` returns the policy as its owner holds it now (a trainer may rewrap it);
    ``splits`` is a mapping or a callable returning one (the trainer's datasets change while it
    builds); ``collator`` collates tokenised rows: TRL's ``DataCollatorForPreference`` (padded) or a
    :class:`~.packing.PackedCollator` (:attr:`collator` may be replaced once the layout is chosen).
    """

    def __init__(
        self,
        get_policy: Callable[[], Any],
        tokenizer: Any,
        *,
        collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
        splits: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        engine: Engine,
        settings: ForwardSettings,
        batch_size: int = 8,
        initial_source: str | None = None,
        gradient_checkpointing_kwargs: dict[str, Any] | None = None,
    ):
        self._get_policy, self.tokenizer, self.collator = get_policy, tokenizer, collator
        self._splits, self.engine, self.settings, self.batch_size = splits, engine, settings, batch_size
        self.initial_source, self.gradient_checkpointing_kwargs = initial_source, gradient_checkpointing_kwargs
        self.device, self.is_main_process = engine.device, engine.is_main_process

    @property
    def policy(self) -> Any:  # type: ignore[override]
        return self.engine.unwrap(self._get_policy())

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.policy.dtype

    def splits(self) -> Mapping[str, Any]:
        return dict(self._splits() if callable(self._splits) else self._splits)

    @contextlib.contextmanager
    def alone(self) -> Iterator[Scorer]:
        """Within the block, this process scores whole splits by itself (the checks run in the main process only)."""
        engine = self.engine
        self.engine, self.is_main_process = engine.alone(), True
        try:
            yield self
        finally:
            self.engine, self.is_main_process = engine, engine.is_main_process

    def batches(self, dataset: Any, *, batch_size: int | None = None) -> Iterator[Any]:
        from torch.utils.data import DataLoader

        columns = [c for c in (*TOKEN_COLUMNS, *REFERENCE_COLUMNS) if c in dataset.column_names]
        loader = DataLoader(
            dataset.select_columns(columns), batch_size=batch_size or self.batch_size, collate_fn=self.collator
        )
        return iter(self.engine.shard(loader))

    def logps(self, batch: Any, model: Any = None, *, adapters_off: bool = False) -> tuple[Tensor, Tensor]:
        return self._stats(batch, model, adapters_off).logps.chunk(2)

    def _stats(self, batch: Any, model: Any, adapters_off: bool) -> SequenceStats:
        """The no-grad forward of a batch under ``model`` (None: the policy), as training runs it."""
        if model is None:
            model = self._get_policy()
        else:
            ensure_fused_head(self.engine.unwrap(model))
        adapters = self.adapters_off() if adapters_off else contextlib.nullcontext()
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.policy, self.gradient_checkpointing_kwargs),
            adapters,
            self.engine.autocast(),
        ):
            return forward_pairs(model, batch, self.settings)

    def score(
        self,
        dataset: Any,
        model: Any = None,
        *,
        adapters_off: bool = False,
        desc: str = "Scoring",
        batch_size: int | None = None,
    ) -> PairScores:
        from tqdm.auto import tqdm

        if len(dataset) == 0:
            return PairScores.empty()
        parts: list[list[np.ndarray]] = [[], [], [], []]
        batches = self.batches(dataset, batch_size=batch_size)
        for batch in tqdm(batches, desc=desc, leave=False, disable=not self.is_main_process):
            stats = self._stats(batch, model, adapters_off)
            for part, values in zip(parts, (*stats.logps.float().chunk(2), *stats.tokens.chunk(2))):
                part.append(self.engine.gather(values).cpu().numpy())
        return PairScores(*(np.concatenate(part) for part in parts))

    def batch_reference(self, batch: Any) -> tuple[Tensor, Tensor] | None:
        if REFERENCE_COLUMNS[0] not in batch:
            return None
        return batch[REFERENCE_COLUMNS[0]], batch[REFERENCE_COLUMNS[1]]

    @contextlib.contextmanager
    def adapters_off(self) -> Iterator[Any]:
        policy = self.policy
        with use_adapter(policy, adapter_name=self.reference_adapter):
            yield policy

    @property
    def reference_adapter(self) -> str | None:  # type: ignore[override]
        """TRL loads a copy of an existing adapter as "ref" when training it further."""
        policy = self.policy
        return "ref" if is_peft_model(policy) and "ref" in policy.peft_config else None

    def place(self, model: Any) -> Any:
        ensure_fused_head(model)
        model.requires_grad_(False)
        return model.to(self.device).eval()

    def unwrap(self, model: Any) -> Any:
        return self.engine.unwrap(model)

    def fingerprint(self, dataset: Any) -> str:
        layout = self.collator.mode if isinstance(self.collator, PackedCollator) else "padded"
        digest = hashlib.blake2b(repr((self.settings, layout)).encode(), digest_size=16)
        table = dataset.with_format("arrow")[:]
        for column in TOKEN_COLUMNS:
            array = table.column(column).combine_chunks()
            digest.update(column.encode())
            digest.update(array.offsets.to_numpy(zero_copy_only=False).tobytes())
            digest.update(array.values.to_numpy(zero_copy_only=False).tobytes())
        return digest.hexdigest()


def prepare_pairs(
    dataset: Any, tokenizer: Any, *, max_length: int | None = None, truncation_mode: str = "keep_start", name: str = "eval"
) -> Any:
    """A preference split tokenised exactly as TRL 1.16's ``DPOTrainer`` does (``prompt_ids``, ``chosen_ids``, …).

    TRL's own ``_prepare_dataset``: implicit prompts extracted, EOS added to plain-text completions,
    chat templates applied, pairs whose prompt alone fills ``max_length`` dropped (``keep_start``).
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer_view = types.SimpleNamespace(_tokenizer=tokenizer)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode=truncation_mode)
    return trl.DPOTrainer._prepare_dataset(trainer_view, dataset, tokenizer, args, name)


def pair_scorer(
    model: Any,
    tokenizer: Any,
    splits: Mapping[str, Any],
    *,
    max_length: int | None = 1024,
    truncation_mode: str = "keep_start",
    ld_alpha: float | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    bf16: bool = False,
    packing: str = "auto",
    reloadable: bool = True,
) -> Scorer:
    """A scorer for ``model`` without a trainer: each split (a ``Dataset`` or a list of rows) tokenised as TRL does.

    The model goes to ``device`` (default: CUDA when available) in eval mode, with TRL's fused LM head; scoring
    matches a trainer's with the same ``max_length``, ``truncation_mode``, ``ld_alpha`` and precision.
    ``packing`` as in training (:func:`choose_layout`). ``reloadable``: the model's ``name_or_path``
    holds its initial weights (the checks' fallback reference); False when the model is the trained one.
    """
    from datasets import Dataset

    engine = Engine.local(device, bf16)
    prepared = {
        name: prepare_pairs(
            Dataset.from_list(rows) if isinstance(rows, list) else rows,
            tokenizer,
            max_length=max_length,
            truncation_mode=truncation_mode,
            name=name,
        )
        for name, rows in splits.items()
    }
    collator = DataCollatorForPreference(
        pad_token_id=tokenizer.pad_token_id, max_length=max_length, truncation_mode=truncation_mode
    )
    settings = ForwardSettings(ld_alpha, max_length, truncation_mode, "bf16" if bf16 else "float32")
    source = (getattr(model.config, "name_or_path", None) or None) if reloadable else None
    placed = ensure_fused_head(model).to(engine.device).eval()
    scorer = Scorer(
        lambda: placed,
        tokenizer, collator=collator, splits=prepared, engine=engine, settings=settings, batch_size=batch_size, initial_source=source
    )  # fmt: skip
    choose_layout(scorer, packing)
    return scorer


# -- the layout ---------------------------------------------------------------------------------
#: Synthetic pairs of token ids for :func:`layout_matches`: two prompts, completions of unequal lengths.
PROBE_PAIRS = (
    {"prompt_ids": [3, 5, 7, 11, 13], "chosen_ids": [17, 19], "rejected_ids": [23, 29, 31]},
    {"prompt_ids": [37, 41, 43], "chosen_ids": [47, 53, 59, 61], "rejected_ids": [67]},
)


def layout_matches(scorer: Scorer, packed: PackedCollator) -> float:
    """The largest gap, in nats per token, between packed and padded log-probs of :data:`PROBE_PAIRS` under the policy."""
    vocab = scorer.policy.config.get_text_config().vocab_size
    pairs = [{key: [i % vocab for i in ids] for key, ids in pair.items()} for pair in PROBE_PAIRS]
    padded = DataCollatorForPreference(pad_token_id=0)(pairs)
    device = scorer.device
    to_device = {k: v.to(device) if torch.is_tensor(v) else v for k, v in padded.items()}
    reference = torch.cat(scorer.logps(to_device))
    got = torch.cat(scorer.logps({k: v.to(device) if torch.is_tensor(v) else v for k, v in packed(pairs).items()}))
    tokens = padded["completion_mask"].sum(dim=1).to(device)
    return ((got - reference).abs().float() / tokens).max().item()


def choose_layout(
    scorer: Scorer, requested: str, *, blocked: str | None = None, pad_to_multiple_of: int | None = None
) -> str:
    """Install the batch layout ``requested`` (``auto``: prefix sharing where the model takes it, on a CPU) on the scorer.

    ``blocked`` is a reason the run cannot take a packed layout (e.g. a custom data collator). A
    packed layout is checked once against the padded one on :data:`PROBE_PAIRS`; with ``auto`` any
    obstacle falls back to the padded layout with a log line, with an explicit mode it is an error.
    """
    if requested == "none":
        return "none"
    mode = "prefix_sharing" if requested == "auto" else requested
    reason = blocked or support(scorer.policy)
    if reason is None and requested == "auto" and scorer.device.type != "cpu":
        reason = f"the packed layouts are measured on CPUs only so far, not on {scorer.device.type}: set packing: {mode} to use them"
    settings = scorer.settings
    pad = scorer.tokenizer.pad_token_id or 0
    packed = PackedCollator(mode, pad, settings.max_length, settings.truncation_mode, pad_to_multiple_of)
    if reason is None:
        use_segment_attention(scorer.policy)
        gap = layout_matches(scorer, packed)
        tolerance = 1e-3 if scorer.dtype == torch.float32 and settings.precision == "float32" else 5e-2
        if not gap <= tolerance:
            reason = f"its packed log-probs differ from the padded ones by {gap:.3g} nats per token"
    if reason is not None:
        if requested != "auto":
            raise ConfigError(f"packing: {requested} cannot be used with this model: {reason}. Use packing: none.")
        logger.info("packing: auto → none (padded [chosen; rejected] rows, as TRL): %s.", reason)
        return "none"
    scorer.collator = packed
    logger.info("packing: %s → %s (%s).", requested, mode, LAYOUT_NOTES[mode])
    return mode


LAYOUT_NOTES = {
    "prefix_sharing": "each pair as one segment, its prompt computed once; attention per segment, no padding",
    "padding_free": "the batch's sequences in one row without padding; attention per sequence",
}


def load_policy(model_id: str, args: Any, pre_load: Callable[[dict[str, Any]], dict[str, Any]], quantization_config: Any) -> Any:
    """Load the policy as TRL's ``DPOTrainer.__init__`` would, after the adapter recipe's ``pre_load`` (e.g. QLoRA)."""
    kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        if "quantization_config" in kwargs:
            raise ConfigError("quantization_config is given both to the trainer and in model_init_kwargs; give one.")
        kwargs["quantization_config"] = quantization_config
    kwargs = pre_load(kwargs)
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return create_model_from_path(model_id, **kwargs)


@contextlib.contextmanager
def trl_init_view(args: Any, *, precompute: bool, loaded_here: bool) -> Iterator[None]:
    """Show TRL's ``__init__`` the field values it must act on, then restore the user's.

    ``loss_type``/``loss_weights``: the mix is ours, and TRL's name checks would refuse plugin
    losses (ours validate the same rules); ``precompute_ref_log_probs``: on for strategies that need
    no reference model in TRL's hands (``precomputed``, ``none``), so TRL neither reloads one from
    disk nor keeps one, and calls :meth:`TrlHooks._precompute_ref_logps`; ``sync_ref_model``: the
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


class TrlHooks:
    """The TRL-private hook our ``DPOTrainer`` overrides, and ``evaluate`` (mixed in before ``trl.DPOTrainer``)."""

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """TRL's ``evaluate``; a dataset given here under a precomputing reference gets its reference log-probs first.

        TRL refuses that case after training under full fine-tuning (its reference is gone); ours
        scores the split with the reference strategy (reloading the initial model if it must), then
        lets TRL evaluate the prepared split.
        """
        strategy = self.reference_strategy  # type: ignore[attr-defined]
        if eval_dataset is None or isinstance(eval_dataset, str) or not strategy.precomputes:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
        named = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
        prepared = {
            name: self._precompute_ref_logps(
                self._prepare_dataset(split, self.processing_class, self.args, name), name, 0  # type: ignore[attr-defined]
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

        strategy = self.reference_strategy  # type: ignore[attr-defined]
        if not strategy.precomputes:
            return dataset  # TRL was shown precompute only so that it would not reload a reference
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                f"reference: {strategy.name} (TRL's precompute_ref_log_probs) needs a map-style Dataset to score "
                f"once before training, but the {name} split is an IterableDataset (streaming). Load it without "
                "streaming, or use reference: copy or adapter, which score each batch as it comes."
            )
        scores = self.prepared_reference().score(dataset)  # type: ignore[attr-defined]
        dataset = dataset.remove_columns([c for c in REFERENCE_COLUMNS if c in dataset.column_names])
        dataset = dataset.add_column(REFERENCE_COLUMNS[0], scores.chosen.tolist())
        return dataset.add_column(REFERENCE_COLUMNS[1], scores.rejected.tolist())
