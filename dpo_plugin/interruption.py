"""SIGTERM and SIGINT outside the training steps: the work that cannot wait for a step's end.

During training :class:`~dpo_plugin.guard.PreemptionCallback` lets the step finish and saves a
checkpoint. Before and after it — the precomputed reference pass, the save of the trained model,
the post-training checks and their generations — a run takes the signals with
:func:`stopped_by_signals`: work that can be redone is stopped at once, work that must finish (a
save) first finishes; then :class:`~dpo_plugin.faults.Preempted` (exit code 75) says what was kept
and how to continue. A second signal acts at once, as the previous handler would.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .faults import Preempted

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stop(BaseException):
    """Raised by the handler inside the interrupted work: a BaseException, so no ``except Exception`` of a
    check, a judge or a plugin can take it for that work's own failure."""


@contextlib.contextmanager
def stopped_by_signals(activity: str, advice: Callable[[], str | None], *, finish: bool = False) -> Iterator[None]:
    """Run ``activity`` (``"the post-training checks"``); SIGTERM/SIGINT raise ``Preempted``: ``Stopped by SIGTERM
    during <activity>. <advice()>``. ``finish``: the work runs to its end first (a save), then the stop is raised,
    unless ``advice()`` is None (nothing was left to do: the run ends as it would have).

    Outside the main thread signals are not ours to take: the work runs unguarded.
    """
    received: list[str] = []
    previous: dict[int, Any] = {}

    def handle(number: int, frame: Any) -> None:
        received.append(signal.Signals(number).name)
        for signum, handler in previous.items():  # a second signal acts at once
            signal.signal(signum, handler)
        then = "finishing it first" if finish else "stopping"
        logger.warning("%s received during %s: %s.", received[0], activity, then)
        if not finish:
            raise _Stop

    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield
    except _Stop:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        told = advice()
        if told is not None:
            raise Preempted(f"Stopped by {received[0]} during {activity}. {told}")
