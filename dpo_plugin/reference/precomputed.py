"""The ``precomputed`` strategy: one reference pass before training, cached on disk (safetensors).

The cache file is named by a fingerprint of the reference weights, the tokenised data and the
settings that change log-probabilities (max_length, truncation, ld_alpha, precision); it stores a
checksum of its tensors. A second run with the same fingerprint loads it instead of recomputing; a
file whose metadata, row count or checksum does not match is reported and recomputed, never used.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..registry import Register
from .base import ReferenceStrategy, model_for_checks
from .model import frozen_copy, load_reference_model

logger = logging.getLogger(__name__)

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def default_cache_dir() -> Path:
    from ..smollm import cache_root

    return cache_root() / "reference_logps"


def weights_fingerprint(model: Any, *, skip: str | None = None) -> str:
    """BLAKE2b of a model's state dict in name order (names containing ``skip`` are left out)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        if skip and skip in name:
            continue
        tensor = tensor.detach().cpu()
        digest.update(name.encode() + str(tensor.dtype).encode())
        if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            tensor = tensor.float()
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def tokens_fingerprint(dataset: Any) -> str:
    """BLAKE2b of the tokenised columns (values and offsets), so any change of data or tokenisation shows."""
    digest = hashlib.blake2b(digest_size=16)
    table = dataset.with_format("arrow")[:]
    for column in TOKEN_COLUMNS:
        array = table.column(column).combine_chunks()
        digest.update(column.encode())
        digest.update(array.offsets.to_numpy(zero_copy_only=False).tobytes())
        digest.update(array.values.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def _checksum(chosen: Any, rejected: Any) -> str:
    return hashlib.blake2b(chosen.numpy().tobytes() + rejected.numpy().tobytes(), digest_size=16).hexdigest()


def write_cache(path: Path, fingerprint: str, chosen: Any, rejected: Any) -> None:
    """Write the reference log-probs atomically, with their fingerprint, row count and checksum."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    metadata = {"fingerprint": fingerprint, "rows": str(len(chosen)), "checksum": _checksum(chosen, rejected)}
    save_file({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_cache(path: Path, fingerprint: str, rows: int) -> tuple[Any, Any] | None:
    """The cached tensors, or None (with a warning saying why) when the file is missing, stale or corrupted."""
    from safetensors import safe_open

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            chosen, rejected = handle.get_tensor("chosen"), handle.get_tensor("rejected")
    except Exception as error:  # a truncated or garbled file raises from the safetensors parser
        logger.warning("Reference log-prob cache %s is unreadable (%s); recomputing.", path, error)
        return None
    problem = None
    if metadata.get("fingerprint") != fingerprint:
        problem = "its fingerprint does not match"
    elif metadata.get("rows") != str(rows) or len(chosen) != rows or len(rejected) != rows:
        problem = f"it has {metadata.get('rows')} rows, the data {rows}"
    elif metadata.get("checksum") != _checksum(chosen, rejected):
        problem = "its checksum does not match its contents"
    if problem:
        logger.warning("Reference log-prob cache %s is stale or corrupted (%s); recomputing.", path, problem)
        return None
    return chosen, rejected


class PrecomputedReference(ReferenceStrategy):
    """One reference pass over train and eval data before training, cached on disk; no reference in memory after."""

    name = "precomputed"

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
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.batch_size, self.model, self.dtype = batch_size, model, dtype
        self.source: Any = None
        self.source_name = "the initial policy"
        self.adapters_off = False
        self.computed_batches = 0
        self.cache_files: list[Path] = []

    def prepare(
        self, policy: Any, *, ref_model: Any = None, peft: bool = False, base_weights_change: bool = False, **kwargs: Any
    ) -> Any:
        if ref_model is not None and self.model is not None:
            raise ConfigError("Both reference_params.model and a ref_model object were given; give one.")
        if ref_model is not None:
            self.source, self.source_name = ref_model, "the ref_model passed to the trainer"
        elif self.model is not None:
            self.source = load_reference_model(self.model, policy=policy, dtype=self.dtype)
            self.source_name = self.model
        elif peft and base_weights_change:
            self.source = frozen_copy(policy, self.dtype)
        else:
            self.adapters_off = peft
        return None

    def setup(self, trainer: Any) -> None:
        super().setup(trainer)
        model = self.source if self.source is not None else trainer.model
        if self.source is not None:
            self.source.to(trainer.accelerator.device)
        skip = trainer.accelerator.unwrap_model(model).base_model.prefix if self.adapters_off else None
        weights = weights_fingerprint(trainer.accelerator.unwrap_model(model), skip=skip)
        settings = repr(
            (
                trainer.args.max_length,
                trainer.args.truncation_mode,
                trainer.args.ld_alpha,
                trainer.args.bf16,
                trainer.args.fp16,
                str(getattr(model, "dtype", "")),
            )
        )
        trainer.train_dataset = self._attach(trainer.train_dataset, model, weights, settings, "train")
        if isinstance(trainer.eval_dataset, dict):
            trainer.eval_dataset = {
                name: self._attach(ds, model, weights, settings, name) for name, ds in trainer.eval_dataset.items()
            }
        elif trainer.eval_dataset is not None:
            trainer.eval_dataset = self._attach(trainer.eval_dataset, model, weights, settings, "eval")
        if self.source is not None:  # the reference is not needed any more: free it
            self.source = None
            gc.collect()
            trainer.accelerator.free_memory()

    def _attach(self, dataset: Any, model: Any, weights: str, settings: str, split: str) -> Any:
        fingerprint = hashlib.blake2b(
            (weights + tokens_fingerprint(dataset) + settings).encode(), digest_size=16
        ).hexdigest()
        path = self.cache_dir / f"{fingerprint}.safetensors"
        cached = read_cache(path, fingerprint, len(dataset))
        if cached is None:
            chosen, rejected = self._compute(dataset, model, split)
            if self.trainer.accelerator.is_main_process:
                write_cache(path, fingerprint, chosen, rejected)
            self.trainer.accelerator.wait_for_everyone()
            logger.info("Reference log-probs for %s (%d pairs) cached in %s.", split, len(dataset), path)
        else:
            chosen, rejected = cached
            logger.info("Reference log-probs for %s loaded from the cache %s.", split, path)
        self.cache_files.append(path)
        dataset = dataset.remove_columns([c for c in COLUMNS if c in dataset.column_names])
        dataset = dataset.add_column(COLUMNS[0], chosen.tolist())
        return dataset.add_column(COLUMNS[1], rejected.tolist())

    def _compute(self, dataset: Any, model: Any, split: str) -> tuple[Any, Any]:
        import torch
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        trainer = self.trainer
        batch_size = self.batch_size or trainer.args.per_device_eval_batch_size
        loader = trainer.accelerator.prepare(
            DataLoader(
                dataset.select_columns(list(TOKEN_COLUMNS)),
                batch_size=batch_size,
                collate_fn=trainer.data_collator,
                shuffle=False,
            )
        )
        chosen, rejected = [], []
        for batch in tqdm(
            loader, desc=f"Reference log-probs ({split})", disable=not trainer.accelerator.is_local_main_process
        ):
            ref_chosen, ref_rejected = trainer.sequence_logps(model, batch, adapters_off=self.adapters_off)
            ref_chosen, ref_rejected = trainer.accelerator.gather_for_metrics((ref_chosen, ref_rejected))
            chosen.append(ref_chosen.float().cpu())
            rejected.append(ref_rejected.float().cpu())
            self.computed_batches += 1
        return torch.cat(chosen), torch.cat(rejected)

    def logps(self, inputs: Mapping[str, Any]) -> tuple[Any, Any]:
        if COLUMNS[0] not in inputs:
            raise ConfigError(
                "reference: precomputed has no cached reference log-probs for this batch: pass every dataset you "
                "evaluate on as train_dataset/eval_dataset when building the trainer."
            )
        return inputs[COLUMNS[0]], inputs[COLUMNS[1]]

    @contextlib.contextmanager
    def generation_model(self) -> Iterator[Any]:
        """The model the cache was computed from: the PEFT policy with adapters off, or reloaded (model or initial path)."""
        if self.adapters_off:
            with self.trainer.adapters_off() as model:
                yield model
            return
        with model_for_checks(self.trainer, self.model, self.dtype) as model:
            yield model

    def describe(self) -> str:
        return f"precomputed (reference log-probs of {self.source_name}, cached in {self.cache_dir})"


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("precomputed", PrecomputedReference)
