"""The exceptions a user can cause. The CLI turns every `AgoraError` into a message and exit code 2."""

from __future__ import annotations

import contextlib


class AgoraError(Exception):
    """A mistake in the user's input or environment, explained well enough to fix it."""


class ScenarioError(AgoraError):
    """A scenario or campaign file that cannot be used: where, what is wrong, what is allowed."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None, hint: str | None = None):
        self.file, self.path, self.message, self.hint = file, path, message, hint
        where = ": ".join(p for p in (file, path) if p)
        text = f"{where}: {message}" if where else message
        super().__init__(f"{text}\n  hint: {hint}" if hint else text)


@contextlib.contextmanager
def in_file(source: str | None):
    """ScenarioErrors raised inside (e.g. by the registry, which knows no file) name `source` as their file."""
    try:
        yield
    except ScenarioError as exc:
        if exc.file is None and source is not None:
            raise ScenarioError(exc.message, file=source, path=exc.path, hint=exc.hint) from None
        raise


class ModelNotFoundError(AgoraError):
    """A model id or path that resolves to nothing on this machine (nothing is ever downloaded at run time)."""


class StoreError(AgoraError):
    """The MLflow store failed while a run was logged (a full disk, a read-only folder, a server gone);
    what it could not take was saved locally, and the message says where (agora/tracking.py)."""


def plural(count: int, word: str) -> str:
    """`1 episode`, `3 episodes`, `0 episodes`: a count and its noun (regular plurals only) for a message."""
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"
