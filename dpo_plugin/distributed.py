"""The distributed engine a run trains under — accelerate's DDP, FSDP2 or DeepSpeed ZeRO-2/3 — as the session meets it.

accelerate and DeepSpeed run the engines (never one of ours). This module asks them which engine a run
asks for and which one runs (:class:`DistributedEngine`), refuses what cannot work before anything loads
(:func:`check_engine`), says when accelerate runs another engine than the one asked for
(:func:`engine_note`), and gives the session what it needs where an engine shards the weights:

- ZeRO-3 partitions the weights as they load (``zero.Init``), before any engine drives them. A forward
  pass or a weight read before training — the layout probe, the precomputed pass, a fingerprint, a
  snapshot — runs inside :func:`whole`: the partitions are gathered for the block (DeepSpeed's
  ``GatheredParameters``) in every process, then partitioned again, unchanged. FSDP2 shards the policy
  only when training starts, so before that it is whole already.
- A frozen copy of a ZeRO-3 policy is built partitioned and filled one gathered tensor at a time
  (:func:`partitioned_copy`): no process ever holds a second full model.
- The main process working alone (the checks) needs whole models: every process unshards an FSDP2
  module (:func:`unsharded`) while it works; ZeRO-3's engine-driven models are gathered by the host.
- The divergence guard reads the full gradient norm (:func:`full_norm`) and each process's own part of
  every weight (:func:`local_part`), deciding together with the other processes.

Private names of other libraries used here:

- ``PreTrainedModel._from_config``: transformers' way to build a model from its config under ZeRO-3's
  ``zero.Init`` (:func:`partitioned_copy`).
- ``DeepSpeedZeRoOffload._remove_module_hooks``: DeepSpeed's own removal of ZeRO-3's fetch hooks, undone
  with its public ``setup_zero_stage3_hooks`` (:func:`for_one_process`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: What the one-line error says to install when the engine a run asks for is missing.
DEEPSPEED_EXTRA = "pip install 'dpo-plugin[deepspeed]'"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


@dataclass(frozen=True)
class DistributedEngine:
    """An engine: ``kind`` (``single``, ``ddp``, ``fsdp``, ``deepspeed``), ``level`` (FSDP's version, ZeRO's stage)."""

    kind: str = "single"
    level: int = 0

    @property
    def name(self) -> str:
        return {
            "single": "one process",
            "ddp": "DDP",
            "fsdp": f"FSDP{self.level}",
            "deepspeed": f"DeepSpeed ZeRO-{self.level}",
        }[self.kind]

    @property
    def shards_weights(self) -> bool:
        """Whether no process holds the whole model while training (FSDP, ZeRO-3)."""
        return self.kind == "fsdp" or (self.kind == "deepspeed" and self.level == 3)

    @classmethod
    def requested(cls, args: Any) -> DistributedEngine:
        """The engine a transformers ``TrainingArguments`` asks for (its fields, or ``accelerate launch``'s)."""
        plugin = getattr(args, "deepspeed_plugin", None)
        if plugin is not None:
            return cls("deepspeed", int(plugin.zero_stage))
        fsdp = getattr(args, "fsdp_plugin_args", None)
        if fsdp:
            return cls("fsdp", int(fsdp.get("fsdp_version", 1)))
        if _env_flag("ACCELERATE_USE_FSDP"):
            return cls("fsdp", int(os.environ.get("FSDP_VERSION", "1")))
        return cls("ddp" if args.world_size > 1 else "single")

    @classmethod
    def running(cls, accelerator: Any) -> DistributedEngine:
        """The engine an accelerate ``Accelerator`` runs."""
        from accelerate.utils import DistributedType

        state = accelerator.state
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            return cls("deepspeed", int(state.deepspeed_plugin.zero_stage))
        if accelerator.distributed_type == DistributedType.FSDP:
            return cls("fsdp", int(state.fsdp_plugin.fsdp_version))
        return cls("ddp" if accelerator.num_processes > 1 else "single")


def require_engine(deepspeed: bool) -> None:
    """Before the host's config builds the engine: the package the run asks for is installed (else one line)."""
    import importlib.util

    wanted = deepspeed or _env_flag("ACCELERATE_USE_DEEPSPEED")
    try:
        found = importlib.util.find_spec("deepspeed") is not None
    except ValueError:  # a module set to None in sys.modules: not importable
        found = False
    if wanted and not found:
        raise ConfigError(f"DeepSpeed is asked for, but the deepspeed package is not installed: {DEEPSPEED_EXTRA}.")


def check_engine(engine: DistributedEngine, *, merge_adapter: bool = False, base_weights_change: bool = False) -> None:
    """Refuse, before anything loads, an engine (or an engine and setting) that cannot train this run.

    ``base_weights_change``: the adapter rewrites the base weights (PiSSA, OLoRA); its conversion to a plain
    LoRA at save time loads the initial adapter into the live model, which FSDP2 holds sharded.
    """
    if engine.kind == "fsdp" and engine.level != 2:
        raise ConfigError(
            f"FSDP version {engine.level} is not supported: dpo-plugin runs on FSDP2. Set fsdp_version: 2 "
            "(docs/examples/accelerate/fsdp2.yaml), or use DeepSpeed ZeRO-3 (zero3.yaml)."
        )
    if base_weights_change and engine.kind == "fsdp":
        raise ConfigError(
            "A PiSSA/OLoRA adapter cannot train under FSDP2: converting it to a plain LoRA at save time loads the "
            "initial adapter into the model, which FSDP2 holds sharded. Use DeepSpeed ZeRO-3 (zero3.yaml), or "
            "adapter: lora."
        )
    if merge_adapter and engine.shards_weights:
        raise ConfigError(
            f"merge_adapter: true cannot merge under {engine.name}: no process holds the whole base model. Train "
            "without it and merge the saved adapter afterwards (peft's merge_and_unload), or use DDP or ZeRO-2."
        )


def engine_note(requested: DistributedEngine, running: DistributedEngine) -> str | None:
    """Why the engine accelerate runs is not the one asked for (None when it is)."""
    if requested == running or requested.kind in ("single", "ddp"):
        return None
    where = " (accelerate runs FSDP on GPUs only; these are CPU processes)" if requested.kind == "fsdp" else ""
    return (
        f"{requested.name} was asked for, but accelerate runs {running.name}{where}: every process holds the "
        "whole model, its gradients and its optimizer state."
    )


def ensure_deepspeed_comm(engine: DistributedEngine) -> None:
    """DeepSpeed's communication set up on the process group accelerate started (gloo on CPUs), before ZeRO-3
    partitions a model as it loads; on GPUs accelerate has done it already."""
    if engine.kind != "deepspeed" or not torch.distributed.is_initialized():
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


# -- ZeRO-3's partitions ---------------------------------------------------------------------------
def is_partitioned(tensor: Any) -> bool:
    """A ZeRO-3 parameter (its data lives in partitions, ``ds_tensor``)."""
    return hasattr(tensor, "ds_id")


def _absent(params: Iterable[Any]) -> list[Any]:
    """The ZeRO-3 parameters whose whole data is not in this process now."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return [p for p in params if is_partitioned(p) and p.ds_status == ZeroParamStatus.NOT_AVAILABLE]


@contextlib.contextmanager
def gathered(params: Iterable[Any], *, modifier_rank: int | None = None) -> Iterator[None]:
    """Within the block, ZeRO-3 parameters hold their whole data in every process (every process enters).

    After it they are partitioned again: unchanged, or with ``modifier_rank``'s changes. Parameters that
    are whole already (or not partitioned) are left alone, so blocks nest.
    """
    params = list(params)
    absent = _absent(params) if any(is_partitioned(p) for p in params) else []
    if not absent:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(absent, modifier_rank=modifier_rank):
        yield


@contextlib.contextmanager
def whole(model: Any) -> Iterator[None]:
    """Within the block, a ZeRO-3 model that no DeepSpeed engine drives yet runs forward passes (every process).

    An engine-driven model (its modules carry ``ds_id``) fetches its own partitions as it runs; a model
    partitioned as it loaded has nobody to fetch them, so they are gathered for the block.
    """
    if model is None or hasattr(model, "ds_id"):
        yield
        return
    with gathered(model.parameters()):
        yield


@contextlib.contextmanager
def plain_loading(accelerator: Any) -> Iterator[None]:
    """Within the block, models load whole (ZeRO-3's partitioning as they load is off): for one process alone.

    transformers partitions every model it loads while a ZeRO-3 config is registered; the block unregisters
    the run's (its DeepSpeed plugin's) and registers it again after.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled, set_hf_deepspeed_config, unset_hf_deepspeed_config

    config = getattr(getattr(accelerator.state, "deepspeed_plugin", None), "hf_ds_config", None)
    if config is None or not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def partitioned_copy(model: Any) -> Any:
    """A copy of a ZeRO-3 model, built partitioned and filled one gathered tensor at a time.

    transformers builds the empty copy as it builds any model from a config under ZeRO-3 (``zero.Init``,
    its weights initialised partition by partition); the copy then takes the model's weights.
    """
    clone = type(model)._from_config(model.config, dtype=model.dtype)
    sources = dict(model.named_parameters())
    for name, param in clone.named_parameters():
        with gathered([sources[name]]), gathered([param], modifier_rank=0), torch.no_grad():
            param.copy_(sources[name])
    buffers = dict(model.named_buffers())
    for name, buffer in clone.named_buffers():
        buffer.copy_(buffers[name])
    return clone


@contextlib.contextmanager
def _hooks_lifted(engine: Any) -> Iterator[None]:
    """Within the block, a ZeRO-3 engine's module runs without the engine's hooks (its weights gathered), so one
    process can run it alone; every process enters. DeepSpeed's own hook removal and set-up."""
    optimizer = getattr(engine, "optimizer", None)
    offload = getattr(optimizer, "parameter_offload", optimizer)  # a training engine's, or an inference engine
    if offload is None or not hasattr(offload, "setup_zero_stage3_hooks"):
        yield
        return
    with gathered(engine.module.parameters()):
        for param in engine.module.parameters():
            param.ds_active_sub_modules.clear()
        offload._remove_module_hooks()
        try:
            yield
        finally:
            offload.setup_zero_stage3_hooks()


@contextlib.contextmanager
def for_one_process(model: Any, accelerator: Any) -> Iterator[None]:
    """Within the block, a model the engine wraps holds its whole weights in every process and runs forwards
    without collectives, so one process may use it alone (every process enters; the others wait)."""
    engine = DistributedEngine.running(accelerator)
    if engine.kind == "deepspeed" and engine.level == 3:
        with _hooks_lifted(model):
            yield
    elif engine.kind == "fsdp":
        with unsharded(accelerator.unwrap_model(model), accelerator.state.fsdp_plugin.reshard_after_forward):
            yield
    else:
        yield


# -- FSDP2's DTensors -------------------------------------------------------------------------------
def _fsdp_modules(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)] if model is not None else []


@contextlib.contextmanager
def unsharded(model: Any, reshard_after_forward: bool = True) -> Iterator[None]:
    """Within the block, an FSDP2 model holds its whole weights in every process and runs forwards without
    collectives, so one process may use it alone; every process enters. After it, sharded again
    (``reshard_after_forward`` as configured)."""
    modules = _fsdp_modules(model)
    if not modules:
        yield
        return
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(reshard_after_forward, recurse=False)


def whole_state(model: Any, *, keep: bool) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of a model, whole, on the CPU, by name: gathered one at a time (every process
    calls it), kept only where ``keep`` (empty elsewhere)."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        with gathered([tensor]):
            value = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
            if keep:
                state[name] = value.detach().to("cpu", copy=True)
    return state


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm over every process: FSDP2's norm of sharded gradients (a DTensor) made whole."""
    from torch.distributed.tensor import DTensor

    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def local_part(tensor: Any) -> Any:
    """The part of a weight this process holds: an FSDP2 shard, a ZeRO-3 partition, else the whole tensor."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        return tensor.to_local()
    return tensor.ds_tensor if is_partitioned(tensor) else tensor
