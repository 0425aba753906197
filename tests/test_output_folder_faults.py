"""The output folder under faults, on real tiny `dpo-plugin train` runs: two real processes on one folder, a run
killed with SIGKILL, a folder that is a file or read-only, and the disk filling up at the final save and while
saving a checkpoint (a small tmpfs where the test may mount one, else a file-size limit)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from fault_injection import (
    TINY_MODEL,
    can_mount,
    file_size_limit,
    read_until,
    resize,
    run,
    small_filesystem,
    start,
)
from safetensors import safe_open

from dpo_plugin.faults import PREEMPTED_EXIT_CODE
from dpo_plugin.output_folder import MANIFEST, STAGING
from dpo_plugin.run_lock import LOCK_FILE
from dpo_plugin.write_failures import WRITE_FAILED_EXIT_CODE

MOUNT = can_mount()
STEADY = ["--logging_steps", "1", "--save_strategy", "no"]


def _error(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("error: "))


def _listed(folder: Path) -> set[str]:
    return set(json.loads((folder / MANIFEST).read_text())["written"])


def _started(message: str) -> float:
    stamp = re.search(r"started (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", message).group(1)
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))


def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "out"
    launched = time.time()
    first = start(tmp_path, "--output_dir", str(out), "--max_steps", "2000", *STEADY)
    try:
        read_until(first, "'loss'")  # training: the first run holds the folder
        second = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY)
        message = _error(second)
        assert second.returncode == 2, second.stderr[-2000:]
        assert message.startswith(
            f"error: output_dir '{out}' is in use by another run: pid {first.pid} on host {socket.gethostname()}, "
            "started "
        )
        assert abs(_started(message) - launched) < 120
        assert "'loss'" not in second.stdout + second.stderr  # refused before it trained a step
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=300) == PREEMPTED_EXIT_CODE
    finally:
        first.kill()
    assert not (out / LOCK_FILE).exists()  # released when the run ended
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")), "the first run's checkpoint"


def test_a_killed_runs_lock_is_named_and_taken_over(tmp_path):
    out = tmp_path / "out"
    killed = start(tmp_path, "--output_dir", str(out), "--max_steps", "2000", *STEADY)
    read_until(killed, "'loss'")
    killed.kill()  # SIGKILL: no handler runs, the lock file stays behind
    killed.wait(timeout=60)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == killed.pid
    after = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY)
    assert after.returncode == 0, after.stderr[-2000:]
    assert f"holds the lock of a run that did not end cleanly (pid {killed.pid} on host" in after.stderr
    assert "it was killed or crashed. This run takes the lock over" in after.stderr
    assert (out / "model.safetensors").exists() and not (out / LOCK_FILE).exists()


def test_an_output_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path):
    out = tmp_path / "out"
    out.write_text("my notes")
    result = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY)
    assert result.returncode == 2
    assert _error(result) == f"error: output_dir '{out}' is a file, not a folder: choose another output_dir."
    assert out.read_text() == "my notes" and "'loss'" not in result.stdout


def test_a_read_only_output_dir_is_refused_before_the_model_loads(tmp_path):
    if MOUNT:
        context = small_filesystem(tmp_path / "ro", 1 << 20, read_only=True)
        reason = "Read-only file system"
    elif os.geteuid() == 0:
        pytest.skip("root without mount rights: no folder is read-only to it")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        context, reason = contextlib.nullcontext(tmp_path / "ro"), "Permission denied"
    with context as folder:
        out = folder / "out"
        result = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY)
    assert result.returncode == 2
    assert _error(result) == (
        f"error: output_dir '{out}' cannot be written ({reason}): choose a folder you can write, or fix its "
        "permissions. Nothing was trained."
    )


def _weights_bytes() -> int:
    """The tiny model's weights as safetensors stores them: what a save of it must write at least."""
    with safe_open(str(TINY_MODEL / "model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(k).get_shape()) * 4 for k in handle.keys())  # float32


def _kib(count: int) -> str:
    return f"{count / 1024:.1f} KiB"


@pytest.mark.skipif(not MOUNT, reason="needs to mount a tmpfs (root); the file-size-limit variant runs instead")
def test_disk_full_at_the_final_save_leaves_a_folder_the_next_run_accepts(tmp_path):
    with small_filesystem(tmp_path / "disk", 96 * 1024) as disk:
        out = disk / "run"
        full = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY)
        assert full.returncode == WRITE_FAILED_EXIT_CODE, full.stderr[-3000:]
        message = _error(full)
        needed = re.search(r"about ([\d.]+ KiB) needed, ([\d.]+) KiB free before the write", message)
        assert message.startswith(f"error: Writing the trained model to {out} failed: the disk is full (about ")
        assert needed.group(1) == _kib(_weights_bytes()) and 0 < float(needed.group(2)) < 96
        assert f"What was written is in {out / STAGING}, listed as this run's" in message
        assert "No intact checkpoint was saved before it: free space, then run again (with reuse_output_dir: true)" in (
            message
        )
        assert {p.name for p in out.iterdir()} - {MANIFEST} <= _listed(out)  # every entry is the run's
        again = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY)
        assert again.returncode == 2 and "already holds an earlier run" in again.stderr
        resize(disk, 16 << 20)  # space freed
        rerun = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY, "--reuse_output_dir", "true")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert (out / "model.safetensors").stat().st_size > _weights_bytes() and not (out / STAGING).exists()
        assert {p.name for p in out.iterdir()} - {MANIFEST} <= _listed(out)


@pytest.mark.skipif(MOUNT, reason="the tmpfs variant runs where a tmpfs can be mounted")
def test_a_file_size_limit_at_the_final_save_leaves_a_folder_the_next_run_accepts(tmp_path):
    out = tmp_path / "run"
    limit = _weights_bytes() // 2
    full = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY, preexec_fn=file_size_limit(limit))
    assert full.returncode == WRITE_FAILED_EXIT_CODE, full.stderr[-3000:]
    assert _error(full).startswith(
        f"error: Writing the trained model to {out} failed: a file grew past the process's file-size limit"
    )
    assert {p.name for p in out.iterdir()} - {MANIFEST} <= _listed(out)
    rerun = run(tmp_path, "--output_dir", str(out), "--max_steps", "2", *STEADY, "--reuse_output_dir", "true")
    assert rerun.returncode == 0, rerun.stderr[-3000:]


@pytest.mark.skipif(not MOUNT, reason="needs to mount a tmpfs (root)")
def test_disk_full_while_saving_a_checkpoint_names_the_newest_intact_one(tmp_path):
    every_step = ["--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--max_steps", "3"]
    with small_filesystem(tmp_path / "disk", 720 * 1024) as disk:  # one checkpoint (about 470 KiB) fits, not two
        out = disk / "run"
        full = run(tmp_path, "--output_dir", str(out), *every_step)
        assert full.returncode == WRITE_FAILED_EXIT_CODE, full.stderr[-3000:]
        message = _error(full)
        assert message.startswith(f"error: Writing checkpoint-2 to {out} failed: the disk is full (about ")
        # the weights, and Adam's two moments of every (trained) weight
        assert f"about {_kib(3 * _weights_bytes())} needed" in message
        assert message.endswith(
            f"Training stopped at step 2. The newest intact checkpoint is {out / 'checkpoint-1'}: free space, then "
            "resume with --resume_from_checkpoint true (the checkpoint cut short is listed as this run's and skipped)."
        )
        assert "Traceback" not in full.stderr and {p.name for p in out.iterdir()} - {MANIFEST} <= _listed(out)
        resize(disk, 16 << 20)
        resumed = run(tmp_path, "--output_dir", str(out), *every_step, "--resume_from_checkpoint", "true")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
