"""The :class:`~.interface.PairScorer` everything uses: over a trainer's policy, or over a bare model.

A :class:`Scorer` runs :func:`~.logps.forward_pairs` without gradients in the run's layout (its
:attr:`Scorer.collator`: the host's padded collator, or a packed one once :func:`~.layout_choice.choose_layout`
picked it) through the host's head, on the run's engine. :func:`pair_scorer` builds one for a model
without a trainer, its splits tokenised as the host's trainer tokenises them.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..distributed import whole
from .backend import Collator, ForwardBackend, default_backend
from .engine import Engine, per_model
from .heads import TokenHead
from .interface import PairScorer, PairScores
from .logps import REFERENCE_COLUMNS, TOKEN_COLUMNS, ForwardSettings, SequenceStats, first_rows, forward_pairs


@contextlib.contextmanager
def gradient_checkpointing_off(model: Any, kwargs: dict[str, Any] | None) -> Iterator[None]:
    """Within the block, ``model`` runs without gradient checkpointing (restored after, with ``kwargs``)."""
    was_on = getattr(model, "is_gradient_checkpointing", False)
    if was_on:
        model.gradient_checkpointing_disable()
    try:
        yield
    finally:
        if was_on:
            model.gradient_checkpointing_enable(kwargs)


@contextlib.contextmanager
def active_adapter(model: Any, name: str | None) -> Iterator[None]:
    """Within the block, a PEFT model runs with adapter ``name`` only, or with its adapters disabled (None)."""
    if name is None:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)


@per_model
def _is_peft_model(model: Any) -> bool:
    from accelerate.utils import is_peft_model

    return bool(is_peft_model(model))


class Scorer(PairScorer):
    """:class:`~.interface.PairScorer` over a host's head and collator (see the module docstring).

    ``get_policy`` returns the policy as its owner holds it now (a trainer may rewrap it);
    ``splits`` is a mapping or a callable returning one (a trainer's datasets change while it
    builds); ``collator`` collates tokenised rows (:attr:`collator` is replaced once a packed layout
    is chosen); ``padded_collator`` makes the host's padded collator for other pad ids (the layout probe).
    """

    def __init__(
        self,
        get_policy: Callable[[], Any],
        tokenizer: Any,
        *,
        head: TokenHead,
        collator: Collator,
        splits: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        engine: Engine,
        settings: ForwardSettings,
        batch_size: int = 8,
        initial_source: str | None = None,
        gradient_checkpointing_kwargs: dict[str, Any] | None = None,
    ):
        self._get_policy, self.tokenizer, self.head, self.collator = get_policy, tokenizer, head, collator
        self._splits, self.engine, self.settings, self.batch_size = splits, engine, settings, batch_size
        self.initial_source, self.gradient_checkpointing_kwargs = initial_source, gradient_checkpointing_kwargs
        self.device, self.is_main_process = engine.device, engine.is_main_process
        self._ready: weakref.WeakSet[Any] = weakref.WeakSet()  # models the head is ready for

    @property
    def policy(self) -> Any:
        return self.engine.unwrap(self._get_policy())

    @property
    def dtype(self) -> torch.dtype:
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
        chosen, rejected = self._stats(batch, model, adapters_off).logps.chunk(2)
        return chosen, rejected

    def _stats(self, batch: Any, model: Any, adapters_off: bool) -> SequenceStats:
        """The no-grad forward of a batch under ``model`` (None: the policy), as training runs it."""
        if model is None:
            model = self._get_policy()
        elif model not in self._ready:
            self.head.ensure(self.engine.unwrap(model))
            self._ready.add(model)
        adapters = self.adapters_off() if adapters_off else contextlib.nullcontext()
        with (
            torch.no_grad(),
            gradient_checkpointing_off(self.policy, self.gradient_checkpointing_kwargs),
            adapters,
            self.engine.autocast(),
        ):
            return forward_pairs(model, batch, self.settings, self.head)

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
        with whole(self.policy if model is None else self.engine.unwrap(model)):  # ZeRO-3 before its engine
            for batch in tqdm(batches, desc=desc, leave=False, disable=not self.is_main_process):
                stats = self._stats(batch, model, adapters_off)
                for part, values in zip(parts, (*stats.logps.float().chunk(2), *stats.tokens.chunk(2)), strict=True):
                    part.append(self.engine.gather(values).cpu().numpy())
        return PairScores(*(np.concatenate(part) for part in parts))

    def batch_reference(self, batch: Any) -> tuple[Tensor, Tensor] | None:
        if REFERENCE_COLUMNS[0] not in batch:
            return None
        return batch[REFERENCE_COLUMNS[0]], batch[REFERENCE_COLUMNS[1]]

    @contextlib.contextmanager
    def adapters_off(self) -> Iterator[Any]:
        policy = self.policy
        with active_adapter(policy, self.reference_adapter):
            yield policy

    @property
    def reference_adapter(self) -> str | None:
        """TRL loads a copy of an existing adapter as "ref" when training it further."""
        policy = self.policy
        return "ref" if _is_peft_model(policy) and "ref" in policy.peft_config else None

    def place(self, model: Any) -> Any:
        self.head.ensure(model)
        model.requires_grad_(False)
        return model.to(self.device).eval()

    def unwrap(self, model: Any) -> Any:
        return self.engine.unwrap(model)

    def fingerprint(self, dataset: Any) -> str:
        # not the batch layout: every layout gives the same log-probs (the start-up probe checks it), and
        # ``packing: auto`` may pick another one next run, whose cache must still be found
        head = type(self.head).__name__  # TRL 1.16's fused head and the logits differ in the last digits
        digest = hashlib.blake2b(repr((self.settings, head)).encode(), digest_size=16)
        table = dataset.with_format("arrow")[:]
        for column in TOKEN_COLUMNS:
            array = table.column(column).combine_chunks()
            digest.update(column.encode())
            digest.update(array.offsets.to_numpy(zero_copy_only=False).tobytes())
            digest.update(array.values.to_numpy(zero_copy_only=False).tobytes())
        return digest.hexdigest()


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
    backend: ForwardBackend | None = None,
) -> Scorer:
    """A scorer for ``model`` without a trainer: each split (a ``Dataset`` or a list of rows) tokenised by the host.

    ``backend``: the host's tokenisation, collator and head (default: the default host's). The model
    goes to ``device`` (default: CUDA when available) in eval mode; scoring matches a trainer's with the
    same ``max_length``, ``truncation_mode``, ``ld_alpha`` and precision. ``packing`` as in training
    (:func:`~.layout_choice.choose_layout`). ``reloadable``: the model's ``name_or_path`` holds its
    initial weights (the checks' fallback reference); False when the model is the trained one.
    """
    from .layout_choice import ESTIMATE_BATCHES, Workload, choose_layout

    backend = backend or default_backend()
    engine = Engine.local(device, bf16)
    prepared = {
        name: _tokenised(backend, rows, tokenizer, max_length, truncation_mode, name) for name, rows in splits.items()
    }
    collator = backend.padded_collator(tokenizer.pad_token_id, max_length=max_length, truncation_mode=truncation_mode)
    settings = ForwardSettings(ld_alpha, max_length, truncation_mode, "bf16" if bf16 else "float32")
    source = (getattr(model.config, "name_or_path", None) or None) if reloadable else None
    placed = backend.head.ensure(model).to(engine.device).eval()
    scorer = Scorer(
        lambda: placed,
        tokenizer,
        head=backend.head,
        collator=collator,
        splits=prepared,
        engine=engine,
        settings=settings,
        batch_size=batch_size,
        initial_source=source,
    )
    rows = first_rows(next(iter(prepared.values()), None), batch_size * ESTIMATE_BATCHES)
    workload = Workload(rows, batch_size, training=False)
    choose_layout(scorer, packing, padded_collator=backend.padded_collator, workload=workload)
    return scorer


def _tokenised(
    backend: ForwardBackend, rows: Any, tokenizer: Any, max_length: int | None, truncation_mode: str, name: str
) -> Any:
    """A split (a ``Dataset`` or a list of rows) tokenised by the host."""
    from datasets import Dataset

    dataset = Dataset.from_list(rows) if isinstance(rows, list) else rows
    return backend.prepare_pairs(dataset, tokenizer, max_length=max_length, truncation_mode=truncation_mode, name=name)
