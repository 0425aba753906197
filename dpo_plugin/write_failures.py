"""A write that failed (disk full, a file-size limit, a read-only folder), told in one line with the bytes involved.

Savers report a failed write in their own words: Python's ``OSError`` (errno 28 ENOSPC), safetensors'
``SafetensorError`` ("No space left on device (os error 28)"), torch's ``[enforce fail at
inline_container.cc]`` RuntimeError. :func:`reported_write_failures` turns each of them into a
:class:`WriteFailed` saying what was being written, why it failed (disk full: how many bytes the
write needed and how many were free before it) and how to go on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import DpoPluginError

#: The exit code of ``dpo-plugin`` when a write failed (BSD's EX_IOERR).
WRITE_FAILED_EXIT_CODE = 74

_ERRNO_IN_TEXT = re.compile(r"os error (\d+)|\[Errno (\d+)\]")
_TORCH_WRITER = ("inline_container.cc", "PytorchStreamWriter", "file write failed")


class WriteFailed(DpoPluginError):
    """Writing into the output folder failed; what was written before stays usable (the message says how)."""

    exit_code = WRITE_FAILED_EXIT_CODE


def failure_errno(error: BaseException) -> int | None:
    """The OS error number behind a failed write (searching its causes and its text), or None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        match = _ERRNO_IN_TEXT.search(str(seen))
        if match:
            return int(match.group(1) or match.group(2))
        seen = seen.__cause__ or seen.__context__
    return None


def is_write_failure(error: BaseException) -> bool:
    """Whether ``error`` is a failed write (an OS error number, or torch's serializer failing to write)."""
    return failure_errno(error) is not None or any(marker in str(error) for marker in _TORCH_WRITER)


def size(count: float) -> str:
    """Bytes in binary units: ``1.5 MiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def free_bytes(folder: str | Path) -> int | None:
    """The bytes free for this user on the filesystem of ``folder`` (its nearest existing parent), or None."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def cause(error: BaseException, *, needed: int | None, free: int | None) -> str:
    """Why a write failed, in words: disk full with the bytes needed and free, a file-size limit, permissions …"""
    number = failure_errno(error)
    amounts = f"about {size(needed)} needed, {size(free)} free before the write" if needed and free is not None else ""
    if number in (errno.ENOSPC, errno.EDQUOT) or (number is None and needed and free is not None and free < needed):
        return "the disk is full" + (f" ({amounts})" if amounts else "")
    if number == errno.EFBIG:
        return "a file grew past the process's file-size limit (ulimit -f)" + (f"; {amounts}" if amounts else "")
    if number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"the folder cannot be written ({os.strerror(number)})"
    if number is not None:
        return os.strerror(number)
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")


@contextlib.contextmanager
def reported_write_failures(
    what: str | Callable[[], str],
    folder: str | Path,
    *,
    needed: Callable[[], int | None],
    advice: Callable[[], str],
    free: Callable[[], int | None] | None = None,
) -> Iterator[None]:
    """Run a write; a failed one becomes a :class:`WriteFailed`: ``Writing <what> to <folder> failed: <cause>.
    <advice>``. ``needed``: the bytes the write takes, estimated; ``advice``: how to go on; ``what``, ``free``:
    asked after the failure when they are callables (``free``: the bytes free before the write; by default
    measured when the block starts)."""
    free_before = free_bytes(folder) if free is None else None
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:
        if not is_write_failure(error):
            raise
        reason = cause(error, needed=needed(), free=free() if free is not None else free_before)
        written = what() if callable(what) else what
        raise WriteFailed(f"Writing {written} to {folder} failed: {reason}. {advice()}") from error


def state_bytes(model: Any, *, trainable_only: bool = False) -> int:
    """The bytes of a model's state dict as saved (tied tensors once), or of its trainable parameters only."""
    seen, total = set(), 0
    tensors = [p for p in model.parameters() if p.requires_grad] if trainable_only else model.state_dict().values()
    for tensor in tensors:
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total
