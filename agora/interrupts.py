"""Ctrl-C and `kill PID` (SIGTERM) stop a run between store writes, never in the middle of one,
and never stop the end-of-run logging that keeps what was done.

A KeyboardInterrupt raised inside an MLflow write to the sqlite store leaves its transaction open
and the database locked, so the run could not then be logged and marked KILLED (seen in 2 of 25
SIGTERMs sent to `agora run` at random moments). The CLI installs `interrupt` for SIGINT and
SIGTERM; the tracker makes each store call `uninterrupted()`: a signal that arrives inside one
raises its KeyboardInterrupt when the call has returned.

The end of a run (its summary, transcripts and trajectories written, its status set) runs
`finishing(message)`: a signal there does not interrupt it. The first is answered with `message`
(e.g. "finishing: logging 40 episodes...") and the clean-up goes on; another one quits at once
with exit code 130 and a line saying what was not kept, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

FORCED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a Ctrl-C

_depth = 0  # nesting of uninterrupted() blocks in progress
_pending = False  # a signal arrived inside one
_finishing: str | None = None  # what the finishing() block in progress does, told on a signal
_noted = 0  # signals received during the finishing() block in progress


def interrupt(signum, frame) -> None:
    """Signal handler: KeyboardInterrupt now, or when the current uninterrupted() block ends;
    inside finishing(): a note, then (on a second signal) an immediate exit."""
    global _pending
    if _finishing is not None:
        note()
    elif _depth:
        _pending = True
    else:
        raise KeyboardInterrupt


def note() -> None:
    """A signal during finishing(): the first is told what is being finished; the next quits now."""
    global _noted
    _noted += 1
    if _noted == 1:
        say(f"{_finishing} (interrupt again to quit now without it)")
        return
    say("interrupted again: quitting now; the end-of-run logging was not completed (the run may stay RUNNING)")
    os._exit(FORCED_EXIT_CODE)


def say(line: str) -> None:
    """One line on stderr, written at once (from a signal handler: no rich console, no buffering)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.write(f"\n{line}\n")
        sys.stderr.flush()


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
def finishing(message: str):
    """Run a clean-up that must complete (end-of-run logging, the run's final status): signals never
    interrupt it; the first is answered with `message`, a second quits the process (exit 130).
    A signal still held when it starts (by an enclosing uninterrupted() block) counts as its
    first. Reusable by anything that ends an MLflow run (`agora run`,
    `agora train`): `with interruptible(), finishing("finishing: ..."): log...; tracker.end(status)`."""
    global _finishing, _noted, _pending
    outer, outer_noted = _finishing, _noted
    _finishing, _noted = message, 0
    if _pending:
        _pending = False
        note()
    try:
        yield
    finally:
        _finishing, _noted = outer, outer_noted


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
