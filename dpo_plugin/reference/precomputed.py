"""The ``precomputed`` strategy: one reference pass before training, cached on disk (safetensors).

The cache file is named by a fingerprint of the reference weights, the tokenised data and the
settings that change log-probabilities (max_length, truncation, ld_alpha, precision); it stores a
checksum of its tensors. A second run with the same fingerprint loads it instead of recomputing; a
file whose metadata, row count or checksum does not match is reported and recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_root
from ..distributed import whole
from ..errors import ConfigError
from ..forward.interface import PairScores
from ..hookspecs import Register, hookimpl
from .base import ReferenceStrategy, RunFacts, parameter_bytes, release_memory
from .model import frozen_copy, load_reference_model

logger = logging.getLogger(__name__)

CACHED = ("chosen", "rejected", "chosen_tokens", "rejected_tokens")
PASSED = "the ref_model passed to the trainer"


def weights_fingerprint(model: Any, *, keep: Callable[[str], bool] | None = None) -> str:
    """BLAKE2b of a model's state dict in name order (only the names ``keep`` accepts, when given)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        if keep is not None and not keep(name):
            continue
        tensor = tensor.detach().cpu()
        digest.update(name.encode() + str(tensor.dtype).encode())
        if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            tensor = tensor.float()
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _checksum(scores: PairScores) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for values in (scores.chosen, scores.rejected, scores.chosen_tokens, scores.rejected_tokens):
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def write_cache(path: Path, fingerprint: str, scores: PairScores) -> None:
    """Write the reference log-probs and token counts atomically, with their fingerprint, row count and checksum."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    metadata = {"fingerprint": fingerprint, "rows": str(len(scores)), "checksum": _checksum(scores)}
    tensors = {name: np.ascontiguousarray(getattr(scores, name)) for name in CACHED}
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_cache(path: Path, fingerprint: str, rows: int) -> PairScores | None:
    """The cached scores, or None (with a warning saying why) when the file is missing, stale or corrupted."""
    from safetensors import safe_open

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            scores = PairScores(*(handle.get_tensor(name) for name in CACHED))
    except Exception as error:  # a truncated, garbled or older-format file raises from the safetensors parser
        logger.warning("Reference log-prob cache %s is unreadable (%s); recomputing.", path, error)
        return None
    problem = None
    if metadata.get("fingerprint") != fingerprint:
        problem = "its fingerprint does not match"
    elif metadata.get("rows") != str(rows) or any(len(getattr(scores, name)) != rows for name in CACHED):
        problem = f"it has {metadata.get('rows')} rows, the data {rows}"
    elif metadata.get("checksum") != _checksum(scores):
        problem = "its checksum does not match its contents"
    if problem:
        logger.warning("Reference log-prob cache %s is stale or corrupted (%s); recomputing.", path, problem)
        return None
    return scores


class PrecomputedReference(ReferenceStrategy):
    """One reference pass over train and eval data before training, cached on disk; no reference in memory after.

    A reference it loaded (``model``) or copied (PiSSA/OLoRA) is freed after the pass; a ``ref_model``
    passed to the trainer is kept (its owner holds it anyway), as TRL keeps it. A host's copy of the initial
    model (``RunFacts.initial_copy``, Axolotl's) is kept on the CPU when checks will need a reference, else let
    go. A split met later (``evaluate(eval_dataset=...)``) and the checks use what is left: that model, the
    policy with its adapters off, the kept copy, the untrained policy, or the initial model reloaded from its
    folder or hub id.
    """

    name = "precomputed"
    precomputes = True

    def __init__(
        self,
        *,
        cache_dir: str | None = None,
        batch_size: int | None = None,
        model: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__()
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"reference: precomputed needs batch_size >= 1, got {batch_size!r}.")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache_root() / "reference_logps"
        self.batch_size, self.source_path, self.dtype = batch_size, model, dtype
        self.source: Any = None
        self.source_name = "the initial policy"
        self.adapters_off = False
        self.policy_moved = False  # after a training step the policy is no longer the reference
        self.source_freed = False
        self.parked: Any = None  # a host's copy of the initial model, kept on the CPU for the checks
        self.computed_pairs = 0
        self.cache_files: list[Path] = []
        self._weights = ""
        self._scores: dict[str, PairScores] = {}
        self._live: tuple[Any] | None = None  # the reference scoring a streaming split's batches (batch_by_batch)

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        if ref_model is not None and self.source_path is not None:
            raise ConfigError("Both reference_params.model and a ref_model object were given; give one.")
        if ref_model is not None:
            self.source, self.source_name = ref_model, PASSED
        elif self.source_path is not None:
            self.source = load_reference_model(self.source_path, policy=policy, dtype=self.dtype)
            self.source_name = self.source_path
        elif run.peft and run.base_weights_change:
            self.source = frozen_copy(policy, self.dtype, initial_copy=run.initial_copy)
        else:
            self.adapters_off = run.peft
            if run.initial_copy is not None and run.checks and not run.peft:
                self.parked = frozen_copy(policy, self.dtype, initial_copy=run.initial_copy).to("cpu")
        return None

    def setup(self, scorer: Any, model: Any = None) -> None:
        """Score every split once (or load it from the cache), then free the reference model."""
        super().setup(scorer, model)
        if self.source is not None:
            self.source = scorer.place(self.source)
        reference = scorer.unwrap(self.source) if self.source is not None else scorer.policy
        with whole(reference):  # ZeRO-3: a reference partitioned as it loaded, gathered to be read
            self._weights = weights_fingerprint(reference, keep=self._reference_weights(reference))
        for split, dataset in scorer.splits().items():
            self.score(dataset, split)
        if self.source is not None and self.source_name != PASSED:  # ours, not needed any more: free it
            self.source, self.source_freed = None, True
            release_memory()

    def _reference_weights(self, reference: Any) -> Callable[[str], bool] | None:
        """Which weights make the reference: with the adapters off, all but the trained adapter's.

        When training an existing adapter, its frozen copy (TRL's "ref" adapter) is part of the reference.
        """
        if not self.adapters_off:
            return None
        prefix, frozen = reference.base_model.prefix, self.scorer.reference_adapter
        return lambda name: prefix not in name or (frozen is not None and f".{frozen}." in name)

    def _differs(self, model: Any) -> str | None:
        """Why a reloaded reference is not the one the cache was computed from (None when it is the same)."""
        reference = self.scorer.unwrap(model)
        with whole(reference):
            if weights_fingerprint(reference) == self._weights:
                return None
        return (
            "the reloaded model's weights differ from the reference the log-probs were computed from (was the policy "
            "changed in memory after it was loaded?); set reference_params: {model: PATH} to the true reference"
        )

    def score(self, dataset: Any, split: str = "eval") -> PairScores:
        """The reference log-probs of a split: computed once, kept, and cached on disk under their fingerprint."""
        fingerprint = hashlib.blake2b(
            (self._weights + self.scorer.fingerprint(dataset)).encode(), digest_size=16
        ).hexdigest()
        if fingerprint in self._scores:
            return self._scores[fingerprint]
        path = self.cache_dir / f"{fingerprint}.safetensors"
        scores = read_cache(path, fingerprint, len(dataset))
        if scores is None:
            scores = self._compute(dataset, split)
            if self.scorer.is_main_process:
                self._keep(path, fingerprint, scores, split)
        else:
            logger.info("Reference log-probs for %s loaded from the cache %s.", split, path)
        self.cache_files.append(path)
        self._scores[fingerprint] = scores
        return scores

    def _keep(self, path: Path, fingerprint: str, scores: PairScores, split: str) -> None:
        """Cache the scores; the cache is an optimisation, so a write that fails (disk full, ``cache_dir`` a file)
        is a warning, and the run goes on with the scores in memory."""
        from ..write_failures import cause, free_bytes, is_write_failure

        try:
            write_cache(path, fingerprint, scores)
        except Exception as error:
            if not is_write_failure(error):
                raise
            for leftover in path.parent.glob(f"{path.stem}.tmp*") if path.parent.is_dir() else ():
                leftover.unlink(missing_ok=True)  # what the failed write left
            needed = sum(getattr(scores, name).nbytes for name in CACHED)
            reason = (
                "it is a file, not a folder"
                if path.parent.exists() and not path.parent.is_dir()
                else cause(error, needed=needed, free=free_bytes(path.parent))
            )
            logger.warning(
                "The reference log-probs for %s could not be cached in %s (%s); training goes on with them in memory "
                "(a later run computes them again).",
                split,
                path.parent,
                reason,
            )
            return
        logger.info("Reference log-probs for %s (%d pairs) cached in %s.", split, len(scores), path)

    def _compute(self, dataset: Any, split: str) -> PairScores:
        """Score a split with the reference (:meth:`_reference`)."""
        with self._reference(split) as model:
            return self._score_with(model, dataset, split)

    @contextlib.contextmanager
    def _reference(self, split: str) -> Iterator[Any]:
        """The reference for a split met now: the model if it is still here, else the policy (adapters off, or
        untrained: None), else the kept copy, else reloaded for the block."""
        if self.source is not None or self.adapters_off or not (self.policy_moved or self.source_freed):
            yield self.source
            return
        if self.parked is not None:
            with self._unparked() as model:
                yield model
            return
        reloadable = self.source_path or self.scorer.initial_source
        if reloadable is None:
            raise ConfigError(
                f"reference: precomputed cannot score the {split} split now: its reference ({self.source_name}) is "
                "gone (freed after the first pass, or the policy has trained since) and cannot be reloaded. Pass "
                "every dataset you evaluate on to the trainer's constructor, or use reference: copy."
            )
        with self.initial_model(reloadable, self.dtype) as model:  # a split not seen at setup: reload the reference
            problem = self.unavailable if model is None else self._differs(model)
            if problem is not None:
                raise ConfigError(f"reference: precomputed cannot score the {split} split: {problem}.")
            yield model

    @contextlib.contextmanager
    def batch_by_batch(self, split: str) -> Iterator[None]:
        """Within the block, a batch without cached reference log-probs (a streaming split's) is scored with the
        reference (:meth:`_reference`, loaded once for the block) as it comes."""
        with self._reference(split) as model:
            self._live = (model,)
            try:
                yield
            finally:
                self._live = None

    def _score_with(self, model: Any, dataset: Any, split: str) -> PairScores:
        self.computed_pairs += len(dataset)
        return self.scorer.score(
            dataset,
            model,
            adapters_off=self.adapters_off,
            desc=f"Reference log-probs ({split})",
            batch_size=self.batch_size,
        )

    def logps(self, batch: Any) -> tuple[Any, Any]:
        cached = self.scorer.batch_reference(batch)
        if cached is None and self._live is not None:
            return self.scorer.logps(batch, self._live[0], adapters_off=self.adapters_off)
        if cached is None:
            raise ConfigError(
                "reference: precomputed has no cached reference log-probs for this batch: pass every dataset you "
                "evaluate on as train_dataset/eval_dataset to the trainer's constructor."
            )
        return cached

    def on_step_end(self, state: Any) -> None:
        self.policy_moved = True

    @contextlib.contextmanager
    def generation_model(self) -> Iterator[Any]:
        """The model the cache was computed from: the PEFT policy with adapters off, or reloaded
        (model or initial path)."""
        if self.adapters_off:
            with self.scorer.adapters_off() as model:
                yield model
            return
        if self.parked is not None:
            with self._unparked() as model:
                yield model
            return
        with self.initial_model(self.source_path, self.dtype) as model:
            problem = None if model is None else self._differs(model)
            if problem is not None:
                self._unavailable = problem
                logger.warning("%s", problem)
            yield None if problem else model

    @contextlib.contextmanager
    def _unparked(self) -> Iterator[Any]:
        """The kept copy of the initial model on the run's device for the block, back on the CPU after."""
        model = self.scorer.place(self.parked)
        try:
            yield model
        finally:
            self.parked = model.to("cpu")
            release_memory()

    def memory_bytes(self) -> int:
        return parameter_bytes(self.parked) if self.parked is not None else 0

    def describe(self) -> str:
        return f"precomputed (reference log-probs of {self.source_name}, cached in {self.cache_dir})"


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("precomputed", PrecomputedReference)
