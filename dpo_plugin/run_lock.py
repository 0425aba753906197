"""One run per output folder: a lock held for the run's whole life.

A run (``dpo-plugin train``, ``dpo-plugin evaluate``, a ``DPOTrainer``) takes the lock of its output
folder before it writes anything there, and holds it until it ends. A second process on the same
folder is refused at once, with the holder's pid, host, command and start time. The lock is an
``fcntl.flock`` on :data:`LOCK_FILE` in the folder (the kernel releases it when its process dies);
the file also records who holds it. A lock file left by a run that was killed (its flock gone) is
named in a warning and taken over, never silently. Processes of one run (torchrun ranks) lock once,
on the global rank 0; the runs of one process (two trainers in a notebook) share the lock.

Taking the lock is also the first write into the folder: a folder that cannot be created or written
(a file of that name, a read-only mount, no permission) is a ConfigError here, before any model loads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: The lock file in an output folder (never listed as one of the folder's entries).
LOCK_FILE = ".dpo_plugin.lock"


@dataclass
class _Held:
    fd: int
    count: int
    created_folder: bool


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def _holder(path: Path) -> dict[str, str]:
    """What a lock file says about its holder (empty when it says nothing readable)."""
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}


def describe_holder(record: dict[str, str]) -> str:
    """``pid 123 on host h, started 2026-12-01 14:03:22 (dpo-plugin train …)``, from a lock file's record."""
    if not record:
        return "a run that left no details"
    text = f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, started {record.get('started', '?')}"
    return text + (f" ({record['command']})" if record.get("command") else "")


def _not_writable(folder: Path, error: OSError) -> ConfigError:
    if error.errno == errno.EEXIST or error.errno == errno.ENOTDIR:
        return ConfigError(
            f"output_dir {str(folder)!r} (or a folder above it) is a file, not a folder: choose another output_dir."
        )
    reason = os.strerror(error.errno) if error.errno else str(error)
    return ConfigError(
        f"output_dir {str(folder)!r} cannot be written ({reason}): choose a folder you can write, or fix its "
        "permissions. Nothing was trained."
    )


def _open_locked(folder: Path) -> int:
    """An fd of the folder's lock file, flock-ed; a ConfigError naming the holder when another process has it."""
    path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _not_writable(folder, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"output_dir {str(folder)!r} is in use by another run: {describe_holder(_holder(path))}. Two runs "
                "in one folder would overwrite each other's files: wait for it to end, or choose another output_dir."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: lock the new one


def acquire(folder: str | Path, command: str | None = None) -> Path:
    """Take the lock of ``folder`` (created if missing) for this process; released by :func:`release`."""
    folder = Path(folder).expanduser().absolute()
    if int(os.environ.get("RANK", "0") or 0) != 0:  # one process of a distributed run locks for all
        return folder
    with _guard:
        key = str(folder)
        if key in _held:
            _held[key].count += 1
            return folder
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"output_dir {key!r} is a file, not a folder: choose another output_dir.")
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _not_writable(folder, error) from None
        fd = _open_locked(folder)
        stale = _holder(folder / LOCK_FILE)
        if stale:
            logger.warning(
                "output_dir %s holds the lock of a run that did not end cleanly (%s): it was killed or crashed. "
                "This run takes the lock over; that run's files stay as they are.",
                folder,
                describe_holder(stale),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command or " ".join(["dpo-plugin", *sys.argv[1:]])[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        _held[key] = _Held(fd, 1, created)
    return folder


def release(folder: str | Path) -> None:
    """Give back one hold of ``folder``'s lock; the last removes the lock file (and the folder, if this run
    created it and left it empty)."""
    folder = Path(folder).expanduser().absolute()
    with _guard:
        held = _held.get(str(folder))
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[str(folder)]
        try:
            (folder / LOCK_FILE).unlink()
        except OSError:
            pass
        os.close(held.fd)
        if held.created_folder:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass


def holds(folder: str | Path) -> bool:
    """Whether this process holds the lock of ``folder``."""
    return str(Path(folder).expanduser().absolute()) in _held


@contextlib.contextmanager
def holding(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """The lock of ``folder`` held for the ``with`` block (:func:`acquire`, :func:`release`)."""
    path = acquire(folder, command)
    try:
        yield path
    finally:
        release(folder)
