"""Training under the engines users run — DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3 — with two real CPU processes (gloo).

Each engine trains a representative reference strategy and layout on the same global batch as one
process, and must end equal to it (|Δloss| ≤ 1e-5 every step, weights ≤ 1e-4), its checks run on the
whole models; benchmarks/engine_matrix.py runs every strategy × layout × engine (docs/multi-gpu.md).
The sharded engines also stop together on a divergence, save a checkpoint on SIGTERM and resume from it.
What cannot run is refused before anything loads. DeepSpeed's first run on a machine builds its CPU
communication op (about 80 s, once; cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
from engine_runs import REPO, Run, gaps, train, write_data
from safetensors.torch import load_file

from dpo_plugin.faults import DIVERGED_EXIT_CODE, PREEMPTED_EXIT_CODE

pytestmark = pytest.mark.slow

#: (engine, strategy, layout): every engine, every strategy and every layout at least once.
SUBSET = [
    ("ddp", "sync", "padding_free"),
    ("fsdp2", "copy", "prefix_sharing"),
    ("fsdp2", "none", "padding_free"),
    ("zero2", "path", "none"),
    ("zero3", "copy", "none"),
    ("zero3", "precomputed", "padding_free"),
    ("zero3", "adapter", "prefix_sharing"),
]
ENGINE_NAMES = {"ddp": "DDP", "fsdp2": "FSDP2", "zero2": "DeepSpeed ZeRO-2", "zero3": "DeepSpeed ZeRO-3"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"), train=32, test=8)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data):
    """The one-process run of a strategy and layout (each trained once for the module)."""
    runs: dict[tuple[str, str], Run] = {}

    def run(strategy: str, layout: str) -> Run:
        if (strategy, layout) not in runs:
            folder = tmp_path_factory.mktemp(f"single-{strategy}-{layout}")
            runs[strategy, layout] = train(folder, "single", strategy, layout, data=data)
            assert runs[strategy, layout].returncode == 0, runs[strategy, layout].stderr[-3000:]
        return runs[strategy, layout]

    return run


def _margin(run: Run) -> float:
    return run.report()["checks"]["reward_margin"]["metrics"]["margin_mean"]


@pytest.mark.parametrize(("engine", "strategy", "layout"), SUBSET, ids=["-".join(case) for case in SUBSET])
def test_two_processes_train_like_one(tmp_path, data, one_process, engine, strategy, layout):
    run = train(tmp_path, engine, strategy, layout, data=data)
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"Engine: {ENGINE_NAMES[engine]}, 2 process(es)." in run.stderr
    one = one_process(strategy, layout)
    loss_gap, weight_gap = gaps(one, run)
    assert loss_gap <= 1e-5 and weight_gap <= 1e-4, (loss_gap, weight_gap)
    # the checks ran once, on the main process, with the whole policy and reference
    assert run.stdout.count("Overall:") == 1
    assert _margin(run) == pytest.approx(_margin(one), abs=1e-4)
    assert len(run.peak_rss_mib()) == 2
    if strategy == "precomputed":  # each process scored its half; the cache is one process's, file for file
        names = sorted(p.name for p in (one.folder / "cache").iterdir())
        assert names == sorted(p.name for p in (run.folder / "cache").iterdir()) and len(names) == 2
        for name in names:
            expected, got = load_file(str(one.folder / "cache" / name)), load_file(str(run.folder / "cache" / name))
            torch.testing.assert_close(got["chosen"], expected["chosen"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_sharded_engines_stop_together_on_divergence(tmp_path, data, engine):
    """Both processes stop at the same step naming the cause; nothing non-finite is saved."""
    run = train(tmp_path, engine, "copy", "none", data=data, extra={"learning_rate": 1e4, "max_steps": 4})
    assert run.returncode != 0 and not (run.output / "model.safetensors").exists()
    assert run.stderr.count("error: Training stopped at step 2: the gradients became non-finite") == 2, run.stderr[
        -3000:
    ]
    assert f"(exitcode: {DIVERGED_EXIT_CODE})" in run.stderr


def _workers(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The training processes a launcher started (those running dpo-plugin's launcher script)."""
    children = psutil.Process(launcher.pid).children(recursive=True)
    return [p for p in children if any("engine_launcher.py" in part for part in p.cmdline())]


@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_sharded_engines_checkpoint_on_sigterm_and_resume_to_the_same_weights(tmp_path, data, engine):
    steps = {"max_steps": 6, "save_strategy": "no", "checks": []}
    whole = train(tmp_path / "whole", engine, "copy", "none", data=data, extra=steps)
    assert whole.returncode == 0, whole.stderr[-3000:]

    cut = tmp_path / "cut"
    launcher = train(cut, engine, "copy", "none", data=data, extra=steps, wait=False)
    for line in launcher.stdout:  # the first logged step: training is under way
        if "'loss'" in line:
            for worker in _workers(launcher):  # a job scheduler's SIGTERM reaches every process
                worker.send_signal(signal.SIGTERM)
            break
    stderr = launcher.communicate(timeout=300)[1]
    assert stderr.count("Stopped by SIGTERM after step") == 2 and f"(exitcode: {PREEMPTED_EXIT_CODE})" in stderr
    checkpoints = [p.name for p in (cut / "out").iterdir() if p.name.startswith("checkpoint-")]
    assert len(checkpoints) == 1 and 1 <= int(checkpoints[0].split("-")[1]) < 6, checkpoints

    resumed = train(cut, engine, "copy", "none", data=data, extra={**steps, "resume_from_checkpoint": True})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = whole.weights(), resumed.weights()
    assert expected.keys() == got.keys()
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) <= 1e-5
    assert "checkpoint-" in (cut / "out" / "dpo_plugin_run.json").read_text()  # the manifest lists what it wrote


def test_fsdp_asked_on_cpu_processes_says_accelerate_runs_ddp(tmp_path, data):
    """Without the test-only FSDP fixture, accelerate runs DDP on CPU processes: the run says so at start."""
    run = train(tmp_path, "fsdp2", "none", "none", data=data, fsdp_on_cpu=False, extra={"checks": []})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FSDP2 was asked for, but accelerate runs DDP (accelerate runs FSDP on GPUs only" in run.stderr
    assert "Engine: DDP, 2 process(es)." in run.stderr


def _cli(tmp_path: Path, *flags: str, code: str = "") -> subprocess.CompletedProcess:
    """``dpo-plugin train`` on the tiny config in one process, after ``code`` ran in it."""
    tiny = str(REPO / "dpo_plugin" / "testing" / "tiny.yaml")
    script = f"{code}\nimport sys\nfrom dpo_plugin.cli import main\nsys.exit(main())"
    argv = ["train", "--config", tiny, "--output_dir", str(tmp_path / "out"), "--max_steps", "1", *flags]
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, timeout=300)


def test_missing_deepspeed_is_one_line_naming_the_extra(tmp_path):
    hidden = "sys.modules['deepspeed'] = None  # not installed"
    done = _cli(tmp_path, "--deepspeed", '{"zero_optimization": {"stage": 3}}', code=f"import sys\n{hidden}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: DeepSpeed is asked for, but the deepspeed package is not installed: "
        "pip install 'dpo-plugin[deepspeed]'."
    )
    assert not (tmp_path / "out").exists()


def test_fsdp1_is_refused_before_the_model_loads(tmp_path):
    done = _cli(tmp_path, "--fsdp", "full_shard", "--fsdp_config", '{"version": 1}')
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: FSDP version 1 is not supported: dpo-plugin runs on FSDP2. Set fsdp_version: 2" in done.stderr
    assert "Loading" not in done.stderr and not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("flags", "expected", "alternative"),
    [
        (("--adapter", "pissa"), "error: A PiSSA/OLoRA adapter cannot train under FSDP2", "or adapter: lora."),
        (
            ("--adapter", "lora", "--merge_adapter", "true"),
            "error: merge_adapter: true cannot merge under FSDP2",
            "merge the saved adapter afterwards",
        ),
    ],
    ids=["pissa", "merge_adapter"],
)
def test_what_fsdp2_cannot_train_is_refused_before_the_model_loads(tmp_path, flags, expected, alternative):
    done = _cli(tmp_path, "--fsdp", "full_shard", "--fsdp_config", '{"version": 2}', *flags)
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in done.stderr and alternative in done.stderr
    assert "Loading" not in done.stderr and not (tmp_path / "out" / "model.safetensors").exists()
