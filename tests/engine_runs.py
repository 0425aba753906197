"""Training runs of ``dpo-plugin train`` under an engine, and what they left: per-step losses, weights, peak memory.

Shared by tests/test_engines.py (a representative subset per engine) and benchmarks/engine_matrix.py (every
reference strategy × layout × engine). A run trains the same global batch (4 pairs per step) on one
process or on two (2 pairs each, gloo), so its losses and weights must equal the one-process run's.
Engines: ``single``, ``ddp`` (torchrun), ``fsdp2``, ``zero2``, ``zero3`` (``accelerate launch`` with the
shipped configs in docs/examples/accelerate/; FSDP2 on CPU through the test-only tests/engine_launcher.py).
DeepSpeed's first run builds its CPU communication op (about 80 s), cached in ~/.cache/torch_extensions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LAUNCHER = REPO / "tests" / "engine_launcher.py"
CONFIGS = REPO / "docs" / "examples" / "accelerate"
TINY_MODEL = REPO / "dpo_plugin" / "testing" / "tiny-model"
DEMO_DATA = REPO / "dpo_plugin" / "demo" / "data"

ENGINES = ("ddp", "fsdp2", "zero2", "zero3")
LAYOUTS = ("none", "padding_free", "prefix_sharing")
STRATEGIES = ("copy", "path", "adapter", "precomputed", "none", "sync")
GLOBAL_BATCH = 4


def strategy_settings(strategy: str, model: Path, folder: Path) -> dict[str, Any]:
    """The YAML keys that select ``strategy`` (with the loss and adapter it needs)."""
    settings: dict[str, Any] = {"reference": strategy}
    if strategy == "path":
        settings["reference_params"] = {"model": str(model)}
    elif strategy == "adapter":
        settings.update(adapter="lora", adapter_params={"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})
    elif strategy == "precomputed":
        settings["reference_params"] = {"cache_dir": str(folder / "cache")}
    elif strategy == "none":
        settings["loss_type"] = "simpo"
    elif strategy == "sync":
        settings["reference_params"] = {"sync_steps": 1, "alpha": 0.5}
    return settings


def write_data(folder: Path, train: int, test: int) -> Path:
    """The first ``train`` and ``test`` pairs of the demo's data, as a dataset folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        lines = (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()[:rows]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def launcher(engine: str) -> list[str]:
    """The command that starts ``engine``'s processes on this machine's CPUs."""
    if engine == "single":
        return [sys.executable, str(LAUNCHER)]
    if engine == "ddp":
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", _free_port(), str(LAUNCHER)]
    config = str(CONFIGS / f"{engine}.yaml")
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        config,
        "--main_process_port",
        _free_port(),
        str(LAUNCHER),
    ]


@dataclass
class Run:
    """A finished run: its folder, exit code and output."""

    folder: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> Path:
        return self.folder / "out"

    def losses(self) -> list[float]:
        history = json.loads((self.output / "trainer_state.json").read_text())["log_history"]
        return [entry["loss"] for entry in history if "loss" in entry]

    def weights(self) -> dict[str, Any]:
        from safetensors.torch import load_file

        name = (
            "adapter_model.safetensors" if (self.output / "adapter_model.safetensors").exists() else "model.safetensors"
        )
        return load_file(str(self.output / name))

    def report(self) -> dict[str, Any]:
        return json.loads((self.output / "eval" / "report.json").read_text())

    def peak_rss_mib(self) -> list[float]:
        """Each process's peak resident memory, MiB."""
        return [int(path.read_text()) / 1024 for path in sorted((self.folder / "rss").iterdir())]


def train(
    folder: Path,
    engine: str,
    strategy: str,
    layout: str,
    *,
    model: Path = TINY_MODEL,
    data: Path,
    extra: dict[str, Any] | None = None,
    timeout: int = 300,
    wait: bool = True,
    fsdp_on_cpu: bool = True,
) -> Any:
    """Train 3 steps of :data:`GLOBAL_BATCH` pairs under ``engine`` with ``strategy`` and ``layout``, with the
    reward-margin check, in ``folder`` (its config, output and per-process peak memory); ``extra``: other YAML
    keys. Returns the :class:`Run`, or with ``wait=False`` the launcher's ``Popen`` (text pipes).
    ``fsdp_on_cpu=False``: accelerate as it is, which runs DDP on CPU processes whatever its config says."""
    processes = 1 if engine == "single" else 2
    config = {
        "model_name_or_path": str(model),
        "dataset_name": str(data),
        "output_dir": str(folder / "out"),
        "bf16": False,
        "report_to": "none",
        "per_device_train_batch_size": GLOBAL_BATCH // processes,
        "per_device_eval_batch_size": 4,
        "max_steps": 3,
        "learning_rate": 5.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "max_length": 128,
        "loss_type": "sigmoid",
        "seed": 0,
        "disable_tqdm": True,
        "packing": layout,
        "checks": ["reward_margin"],
        **strategy_settings(strategy, model, folder),
        **(extra or {}),
    }
    (folder / "rss").mkdir(parents=True, exist_ok=True)
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ENGINE_RSS_DIR": str(folder / "rss")}
    env["ENGINE_STACKS_AFTER"] = str(max(timeout - 30, 10))  # a process still running then prints its stacks
    env["ENGINE_FSDP_ON_CPU"] = "1" if fsdp_on_cpu else "0"
    process = subprocess.Popen(
        [*launcher(engine), "train", "--config", str(folder / "run.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=env,
    )
    if not wait:
        return process
    with process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # every process the launcher started (torch's own start new sessions)
            for child in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
                child.kill()
            stdout, stderr = process.communicate()
            stderr += f"\n[timed out after {timeout} s]"
    return Run(folder, process.returncode, stdout, stderr)


def gaps(one: Run, many: Run) -> tuple[float, float]:
    """The largest per-step loss gap and the largest weight gap between two runs."""
    loss = max(abs(a - b) for a, b in zip(one.losses(), many.losses(), strict=True))
    first, second = one.weights(), many.weights()
    assert first.keys() == second.keys(), sorted(set(first) ^ set(second))
    weight = max(float((first[k].float() - second[k].float()).abs().max()) for k in first)
    return loss, weight
