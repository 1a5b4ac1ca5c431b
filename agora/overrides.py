"""Command-line overrides (`key=value`) set into a scenario or campaign file's mapping before it is validated:
`apply_overrides` reaches into nested mappings (and into a seat of a pattern, as a copy of the pattern's settings),
`blamed` says which override an error comes from. Parsing the arguments is `agora.scenario.read_overrides`."""

from __future__ import annotations

import contextlib
import copy
import fnmatch
from typing import Any, Mapping, Sequence

from agora.errors import ScenarioError


def apply_overrides(
    data: dict[str, Any], overrides: Mapping[str, Any], *, file: str | None = None, seat_keys: Sequence[str] = ()
) -> dict[str, str]:
    """Set each dotted key of `overrides` in a file's mapping: `world.max_turns` reaches into `world:`, creating
    missing mappings on the way (the schema then says whether such a key is allowed). In a mapping named in
    `seat_keys` (keys are seat names or glob patterns, an exact name winning), a seat without a key of its own
    starts as a copy of the first pattern that matches it, so that `agents.seer_0.temperature=0` changes that
    seat alone. Returns each mapping created -> the override key that created it (for `blamed`)."""
    created: dict[str, str] = {}
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = data
        for depth, part in enumerate(parents):
            if node.get(part) is None:
                where = ".".join(parents[:depth])
                pattern = next((k for k in node if fnmatch.fnmatch(part, str(k))), None)
                matched = node[pattern] if where in seat_keys and pattern is not None else None
                node[part] = copy.deepcopy(matched) if isinstance(matched, dict) else {}
                created.setdefault(".".join(parents[: depth + 1]), key)
            node = node[part]
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ScenarioError(
                    f"cannot set `{key}`: `{where}` is a {type(node).__name__}, not a mapping",
                    file=file,
                    path=where,
                    hint=f"set the whole value, e.g. {where}=[a, b]" if isinstance(node, list) else None,
                )
        node[last] = value
    return created


@contextlib.contextmanager
def blamed(given: Sequence[str]):
    """A `ScenarioError` about a key that an override (`key=value`, as given) set, reached into or created
    says so in its hint. Yields a dict to fill with what `apply_overrides` returns: an error below a mapping
    that an override created (a seat's missing `policy`) blames that override too."""
    created: dict[str, str] = {}
    try:
        yield created
    except ScenarioError as exc:
        path = exc.path

        def related(arg: str) -> bool:  # the key, or one above or below it, or the mapping it created
            key = arg.partition("=")[0].strip()
            made = (c for c, k in created.items() if k == key)
            return (
                f"{key}.".startswith(f"{path}.")
                or path.startswith(f"{key}.")
                or any(f"{path}.".startswith(f"{c}.") for c in made)
            )

        # the last one given for a key is the one that took effect
        culprit = next((arg for arg in reversed(given) if related(arg)), None) if path else None
        if culprit is None:
            raise
        hint = f"from the override `{culprit}`" + (f"; {exc.hint}" if exc.hint else "")
        raise ScenarioError(exc.message, file=exc.file, path=exc.path, hint=hint) from None
