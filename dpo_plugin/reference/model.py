"""Strategies that hold a reference model: ``copy``, ``path`` and ``sync`` (TR-DPO)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

from ..distributed import gathered, is_partitioned, partitioned_copy, whole_state
from ..errors import ConfigError
from ..hookspecs import Register, hookimpl
from .base import ReferenceStrategy, RunFacts, parameter_bytes

logger = logging.getLogger(__name__)


def _torch_dtype(dtype: str | None) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        return None
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ConfigError(f"Unknown dtype {dtype!r} in reference_params; use e.g. float32, bfloat16 or float16.")
    return resolved


def frozen_copy(model: Any, dtype: str | None = None, *, initial_copy: Any = None) -> Any:
    """A frozen, eval-mode deep copy of ``model`` (optionally cast to ``dtype``); ``initial_copy`` instead when the
    host already loaded one (:class:`~.base.RunFacts`).

    Strategies copy in ``prepare``, before the trainer patches the policy (the trainer hands them a
    plain model), so the copy runs its own weights. A ZeRO-3 policy (partitioned as it loaded) is copied
    partitioned: no process holds a second whole model.
    """
    if initial_copy is not None:
        clone = initial_copy
    elif any(is_partitioned(p) for p in model.parameters()):
        clone = partitioned_copy(model)
    else:
        clone = copy.deepcopy(model)
    target = _torch_dtype(dtype)
    if target is not None:
        clone.to(target)
    clone.eval()
    clone.requires_grad_(False)
    return clone


class ModelReference(ReferenceStrategy):
    """A strategy whose reference is a separate model: the one ``prepare`` returns, placed on the device."""

    def logps(self, batch: Any) -> tuple[Any, Any]:
        return self.scorer.logps(batch, self.model)

    @contextlib.contextmanager
    def generation_model(self) -> Iterator[Any]:
        yield self.scorer.unwrap(self.model)

    def memory_bytes(self) -> int:
        return parameter_bytes(self.model) if self.model is not None else 0


class CopyReference(ModelReference):
    """A frozen in-memory copy of the policy at step 0 (TRL reloads it from disk instead)."""

    name = "copy"

    def __init__(self, *, dtype: str | None = None):
        super().__init__()
        _torch_dtype(dtype)
        self.dtype = dtype

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        super().prepare(policy, run, ref_model=ref_model)
        return frozen_copy(policy, self.dtype, initial_copy=run.initial_copy)

    def describe(self) -> str:
        return f"copy (frozen in-memory copy of the initial policy{', ' + self.dtype if self.dtype else ''})"


def _looks_local(source: str) -> bool:
    """A path rather than a hub id (``org/name``): starts with ``.``, ``/`` or ``~``, or has two slashes."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1


def load_reference_model(source: str, *, policy: Any, dtype: str | None = None, **kwargs: Any) -> Any:
    """Load a causal LM from a hub id or local path as a frozen reference, checking it fits the policy first."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if _looks_local(source) and not os.path.exists(os.path.expanduser(source)):
        raise ConfigError(f"The reference model path {source!r} does not exist.")
    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(source), **kwargs)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot load the reference model {source!r}: {error}") from None
    check_vocabulary(config, policy, source)
    target = _torch_dtype(dtype) or getattr(policy, "dtype", None)
    model = AutoModelForCausalLM.from_pretrained(os.path.expanduser(source), dtype=target, **kwargs)
    model.eval()
    model.requires_grad_(False)
    return model


def check_vocabulary(config: Any, policy: Any, source: str) -> None:
    """The reference must score the policy's token ids: same vocabulary size."""
    ref_vocab = config.get_text_config().vocab_size
    policy_vocab = policy.config.get_text_config().vocab_size
    if ref_vocab != policy_vocab:
        raise ConfigError(
            f"The reference model {source!r} has a vocabulary of {ref_vocab} tokens, the policy {policy_vocab}: "
            "their log-probabilities are not comparable. Use a reference with the policy's tokenizer."
        )


class PathReference(ModelReference):
    """A separate model by hub id or local path (e.g. an SFT checkpoint), or the ``ref_model`` passed in."""

    name = "path"

    def __init__(
        self,
        *,
        model: Any = None,
        dtype: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        _torch_dtype(dtype)
        self.source, self.dtype = model, dtype
        self.load_kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        if self.source is not None and ref_model is not None:
            raise ConfigError(
                "Both reference_params.model and a ref_model object were given for reference: path; give one."
            )
        source = self.source if self.source is not None else ref_model
        if source is None:
            raise ConfigError("reference: path needs the model: reference_params: {model: HUB_ID_OR_PATH}.")
        if isinstance(source, str):
            return load_reference_model(source, policy=policy, dtype=self.dtype, **self.load_kwargs)
        check_vocabulary(source.config, policy, type(source).__name__)
        source.eval()
        source.requires_grad_(False)
        return source

    def describe(self) -> str:
        source = self.source if isinstance(self.source, str) else "the ref_model passed to the trainer"
        return f"path ({source})"


@contextlib.contextmanager
def effective_weights(model: Any) -> Iterator[dict[str, Any]]:
    """The policy's weights by the names of the plain model: PEFT adapters merged in for the duration."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield dict(model.named_parameters())
        return
    model.merge_adapter()
    try:
        prefix = model.base_model.prefix
        yield {
            name.replace(".base_layer", ""): param
            for name, param in model.get_base_model().named_parameters()
            if str(prefix) not in name
        }
    finally:
        model.unmerge_adapter()


class SyncReference(CopyReference):
    """TR-DPO: every ``sync_steps`` steps, ``ref ← α·policy + (1 − α)·ref`` (α = 1: hard update); PEFT included.

    Gorbatovski et al. 2024, "Learn Your Reference Model for Real Good Alignment", arXiv:2404.09656.
    With PEFT the adapters are merged into the policy's weights for the update. The post-training
    checks compare against the step-0 reference, kept on the main process's CPU when checks are
    requested. Under ZeRO-3 both models are gathered for the update (the main process's result is
    kept); FSDP2 updates each process's shards.
    """

    name = "sync"

    def __init__(self, *, sync_steps: int = 512, alpha: float = 0.6, dtype: str | None = None):
        super().__init__(dtype=dtype)
        if not isinstance(sync_steps, int) or isinstance(sync_steps, bool) or sync_steps < 1:
            raise ConfigError(f"reference: sync needs sync_steps >= 1 (an integer), got {sync_steps!r}.")
        if not 0 < alpha <= 1:
            raise ConfigError(f"reference: sync needs 0 < alpha <= 1, got {alpha!r}.")
        self.sync_steps, self.alpha = sync_steps, float(alpha)
        self.initial_state: dict[str, Any] | None = None
        self.keep_initial = False
        self.syncs = 0

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        self.keep_initial = run.checks
        return super().prepare(policy, run, ref_model=ref_model)

    def setup(self, scorer: Any, model: Any = None) -> None:
        super().setup(scorer, model)
        if self.keep_initial:  # the checks run on the main process
            self.initial_state = whole_state(scorer.unwrap(model), keep=scorer.is_main_process)

    def on_step_end(self, state: Any) -> None:
        if state.global_step % self.sync_steps == 0:
            self.sync()

    def sync(self) -> None:
        """``ref ← α·policy + (1 − α)·ref`` on every parameter the two share."""
        import torch

        ref, policy = self.scorer.unwrap(self.model), self.scorer.policy
        updated = 0
        with (
            torch.no_grad(),
            gathered(policy.parameters()),
            gathered(ref.parameters(), modifier_rank=0),
            effective_weights(policy) as weights,
        ):
            for name, param in ref.named_parameters():
                source = weights.get(name)
                if source is not None and source.shape == param.shape:
                    param.mul_(1 - self.alpha).add_(source.to(param.dtype), alpha=self.alpha)
                    updated += 1
        if not updated:
            raise RuntimeError("reference: sync found no parameter shared by the policy and the reference.")
        self.syncs += 1
        logger.info("TR-DPO: synced %d reference tensors (alpha=%s, sync #%d).", updated, self.alpha, self.syncs)

    @contextlib.contextmanager
    def generation_model(self) -> Iterator[Any]:
        """The reference at step 0 for the block (the model whole: the checks gather it under ZeRO-3 and FSDP2)."""
        ref = self.scorer.unwrap(self.model)
        if not self.initial_state:
            yield ref
            return
        tensors = dict([*ref.named_parameters(), *ref.named_buffers()])
        current = {name: tensor.detach().to("cpu", copy=True) for name, tensor in tensors.items()}
        _assign(tensors, self.initial_state)
        try:
            yield ref
        finally:
            _assign(tensors, current)

    def memory_bytes(self) -> int:
        snapshot = sum(t.numel() * t.element_size() for t in (self.initial_state or {}).values())
        return super().memory_bytes() + snapshot

    def describe(self) -> str:
        return f"sync (TR-DPO: every {self.sync_steps} steps, alpha={self.alpha}; checks use the step-0 reference)"


def _assign(tensors: dict[str, Any], values: dict[str, Any]) -> None:
    """Copy ``values`` into the tensors of the same names, in place."""
    import torch

    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(values[name])


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("copy", CopyReference)
    register("path", PathReference)
    register("sync", SyncReference)
