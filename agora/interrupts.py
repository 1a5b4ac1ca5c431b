"""Ctrl-C and `kill PID` (SIGTERM) stop a run between store writes, never in the middle of one.

A KeyboardInterrupt raised inside an MLflow write to the sqlite store leaves its transaction open
and the database locked, so the run could not then be logged and marked KILLED (seen in 2 of 25
SIGTERMs sent to `agora run` at random moments). The CLI installs `interrupt` for SIGINT and
SIGTERM; the tracker makes each store call `uninterrupted()`: a signal that arrives inside one
raises its KeyboardInterrupt when the call has returned.
"""

from __future__ import annotations

import contextlib
import signal

_depth = 0  # nesting of uninterrupted() blocks in progress
_pending = False  # a signal arrived inside one


def interrupt(signum, frame) -> None:
    """Signal handler: KeyboardInterrupt now, or when the current uninterrupted() block ends."""
    global _pending
    if _depth:
        _pending = True
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted():
    """Hold an `interrupt` until the block has finished. An exception from the block wins: it goes
    on, and the held signal is dropped with it."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    except BaseException:
        _pending = _pending and _depth > 1
        raise
    finally:
        _depth -= 1
    if not _depth and _pending:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible():
    """Within the block, SIGINT and SIGTERM go through `interrupt` (main thread only; elsewhere a no-op)."""
    try:
        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (e.g. an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
