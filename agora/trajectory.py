"""Trajectory records: what the rollout engine produces and the trainers consume.

One `Step` per decision an agent made (per agent, per turn), one `Episode` per game. Both are
plain dataclasses that round-trip through JSON lines (`write_jsonl` / `read_jsonl`; a run logs them
gzip-compressed as `trajectories.jsonl.gz`).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np


@dataclass
class Step:
    agent: str  # seat that acted
    turn: int  # index of this decision in the episode (all agents counted)
    prompt: str  # the prompt as the policy saw it (chat template applied for LLMs)
    text: str  # the reply the action was taken from (rendered by the world for scripted policies)
    action: Any  # the action the world executed, as JSON
    reward: float = 0.0  # reward received after this decision, until the agent's next one
    prompt_ids: list[int] | None = None  # learnable policies: token ids sampled from ...
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None  # ... and log pi_old of each completion token
    failed_attempts: list[dict[str, str]] = field(default_factory=list)  # {"text", "error"} per unparseable reply
    fallback: bool = False  # True when `action` is the world's fallback, not the agent's choice
    observation: Any = None  # the world's structured observation (JSON), e.g. for anchor-state grouping
    temperature: float | None = (
        None  # the sampling temperature of `logprobs` (learnable policies): trainers recompute at it
    )
    grammar: str | None = None  # the Lark grammar the completion was decoded under (`ActResponse.grammar`)
    # When the policy was first asked for this decision (epoch seconds) and how long until its reply was
    # applied: the batched call it shared with other turns, and any re-asks after parse failures. Wall
    # clock, so not part of a step's equality (runs under one seed play the same steps at any speed).
    started: float | None = field(default=None, compare=False)
    seconds: float | None = field(default=None, compare=False)
    # The chat messages the agent was shown for this decision, without chat-template tokens: the
    # world's prompt, then each unparseable reply and the re-prompt that followed it. None: no text
    # (a policy acting on the observation) or a trajectory recorded before this field.
    messages: list[dict[str, str]] | None = None
    # What the policy showed before those messages: its system prompt and the world's worked example
    # (`ActResponse.preamble`); None when it showed nothing else.
    preamble: list[dict[str, str]] | None = None
    # The policy's own record of the decision beside its action (`ActResponse.info`, JSON), e.g. a plan-execute
    # agent's {"switch": ..., "subgoal": ..., "reply": ...}; None for policies that record nothing.
    info: dict[str, Any] | None = None


@dataclass
class Episode:
    index: int
    seed: int
    policies: dict[str, str]  # seat -> policy id
    steps: list[Step] = field(default_factory=list)
    returns: dict[str, float] = field(default_factory=dict)  # seat -> sum of rewards
    metrics: dict[str, float] = field(default_factory=dict)  # the world's episode metrics
    info: dict[str, Any] = field(default_factory=dict)  # the world's structured episode facts (JSON)
    # The weight version of the learning policy the episode was drawn with (updates applied before it),
    # set by a training rollout; None: no learner played, or a trajectory recorded before this field.
    version: int | None = None


def chat_messages(step: Step) -> list[dict[str, str]]:
    """Every chat message the agent was shown for this decision, without template tokens: the policy's
    preamble, then the world's conversation (`Step.messages`); for a trajectory recorded before those
    fields, its prompt as one user message."""
    if step.messages is not None:
        return [*(step.preamble or []), *step.messages]
    return [{"role": "user", "content": step.prompt}] if step.prompt else []


def reply_text(step: Step) -> str:
    """Everything the policy wrote for this decision: `Step.info["reply"]` where the policy records a reply larger
    than the part the world parsed (a plan-execute agent's plan + action), else `Step.text`."""
    reply = (step.info or {}).get("reply")
    return reply if isinstance(reply, str) else step.text


def world_prompt(step: Step) -> str:
    """The world's prompt for this decision as the agent read it (no template tokens, no preamble);
    for a trajectory recorded before `Step.messages`, its prompt."""
    if step.messages is not None:
        return next((m["content"] for m in step.messages if m["role"] == "user"), "")
    return step.prompt


def jsonable(value: Any, shared: dict | None = None) -> Any:
    """Numpy arrays and scalars (and containers of them) -> plain JSON types. With `shared` (a dict kept
    by the caller), equal arrays become one list object: an episode's observations repeat most of their
    arrays from one turn to the next (werewolf's vote matrices), so the recorded episode holds each once,
    and pickling it (to and from rollout workers) writes and rebuilds each once. Treat the lists as
    read-only."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, shared) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, shared) for v in value]
    if isinstance(value, np.ndarray):
        if shared is None:
            return value.tolist()
        key = (value.dtype.str, value.shape, value.tobytes())
        found = shared.get(key)
        if found is None:  # rows of a matrix are shared too (a vote matrix changes one row at a time)
            found = shared[key] = [jsonable(row, shared) for row in value] if value.ndim > 1 else value.tolist()
        return found
    if isinstance(value, np.generic):
        return value.item()
    return value


TRAJECTORIES = "trajectories.jsonl.gz"  # a run's artifact: every episode, gzip-compressed JSON lines
GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: str | Path, mode: str) -> IO[str]:
    """`path` as UTF-8 text: gzip-compressed when it ends in `.gz` (writing) or starts with gzip's magic
    bytes (reading), so a reader takes old plain files and new compressed ones alike."""
    if mode == "r":
        with open(path, "rb") as fh:
            zipped = fh.read(2) == GZIP_MAGIC
    else:
        zipped = str(path).endswith(".gz")
    if zipped:  # level 6: 1,000 scripted werewolf games, 99 MB of JSON, in 3.5 MB
        return gzip.open(path, mode + "t", encoding="utf-8", compresslevel=6)
    return open(path, mode, encoding="utf-8")


def write_jsonl(episodes: Iterable[Episode], path: str | Path) -> None:
    """One episode per line; gzip-compressed when `path` ends in `.gz` (as `TRAJECTORIES` does)."""
    with open_text(path, "w") as fh:
        for episode in episodes:
            # Fields already hold plain JSON values; a shallow dict avoids asdict's deep copy.
            record = {**vars(episode), "steps": [vars(step) for step in episode.steps]}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> Iterator[Episode]:
    """The episodes of a trajectories file, plain or gzip-compressed, one at a time."""
    with open_text(path, "r") as fh:
        for line in fh:
            data = json.loads(line)
            data["steps"] = [Step(**s) for s in data["steps"]]
            data.setdefault("info", {})
            yield Episode(**data)
