"""Ctrl-C and SIGTERM as a request to stop: the training loop finishes its step, saves what it has and says so.

The first SIGINT or SIGTERM sets a flag that the loop reads after every step; a second one, while the run is still
writing its records, raises KeyboardInterrupt as usual.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_requests(escalate: bool = True) -> Iterator[threading.Event]:
    """An Event set by the first SIGINT/SIGTERM while the block runs; the previous handlers come back after it.

    With escalate, a second signal raises KeyboardInterrupt; without (sweep workers, which get the terminal's SIGINT
    and their parent's SIGTERM for one Ctrl-C), later signals are ignored. Outside the main thread (where Python
    cannot install handlers) the event is returned but never set.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handle(signum, frame):  # noqa: ARG001 - signal handler signature
        if requested.is_set():
            if escalate:
                raise KeyboardInterrupt
            return
        requested.set()
        requested.signal = signal.Signals(signum).name  # type: ignore[attr-defined]

    for sig in SIGNALS:
        signal.signal(sig, handle)
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
