"""Faults the tests inject into real runs: a small filesystem that fills up (a tmpfs, where the test may mount one),
a file-size limit (where it may not), a read-only folder; and `dpo-plugin train` as a real process."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_YAML = str(REPO / "dpo_plugin" / "testing" / "tiny.yaml")
TINY_MODEL = REPO / "dpo_plugin" / "testing" / "tiny-model"
DEMO_DATA = str(REPO / "dpo_plugin" / "demo" / "data")


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def can_mount() -> bool:
    """Whether this test process may mount a tmpfs (root with CAP_SYS_ADMIN, as in the project's containers)."""
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/dpo-plugin-mount-probe-{uuid.uuid4().hex}")
    probe.mkdir()
    try:
        if not _mount("-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)):
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_filesystem(folder: Path, size: int, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted on ``folder`` (created) for the ``with`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    assert _mount("-t", "tmpfs", "-o", options, "tmpfs", str(folder)), f"cannot mount a tmpfs on {folder}"
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def resize(folder: Path, size: int) -> None:
    """Give the tmpfs on ``folder`` ``size`` bytes (the disk freed, as a user would free it)."""
    assert _mount("-o", f"remount,size={size}", str(folder))


def file_size_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: files the process writes stop at ``limit`` bytes with EFBIG (SIGXFSZ ignored, as a
    full quota or a small disk makes a write fail rather than kill the writer)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def train_command(*flags: str) -> list[str]:
    """``dpo-plugin train`` on the tiny YAML (DPO only, no checks unless the flags ask)."""
    base = [sys.executable, "-m", "dpo_plugin", "train", "--config", TINY_YAML, "--loss_type", "sigmoid"]
    return [*base, "--loss_weights", "1.0", *flags]


def environment(**extra: str) -> dict[str, str]:
    """The environment of a run: this checkout's code, one thread, unbuffered output."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def run(cwd: Path, *flags: str, preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """A whole ``dpo-plugin train`` run."""
    return subprocess.run(
        train_command(*flags),
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec_fn,
    )


def start(cwd: Path, *flags: str, command: list[str] | None = None) -> subprocess.Popen:
    """A ``dpo-plugin train`` run (or ``command``) in the background, its stdout and stderr written to
    ``process.log`` (a file: a pipe nobody reads would fill and stop the process)."""
    log = Path(cwd) / f"output-{uuid.uuid4().hex[:8]}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            command or train_command(*flags), cwd=cwd, env=environment(), stdout=handle, stderr=subprocess.STDOUT
        )
    process.log = log  # type: ignore[attr-defined]
    return process


def output(process: subprocess.Popen) -> str:
    """What a process started by :func:`start` printed so far."""
    return process.log.read_text(errors="replace")  # type: ignore[attr-defined]


def read_until(process: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    """What ``process`` printed, once ``marker`` appears in it (a progress bar's text counts)."""
    deadline = time.monotonic() + timeout
    while marker not in (seen := output(process)):
        assert process.poll() is None, f"the process ended before printing {marker!r}:\n{seen[-3000:]}"
        assert time.monotonic() < deadline, f"no {marker!r} after {timeout} s:\n{seen[-3000:]}"
        time.sleep(0.05)
    return seen
