"""The agent side of a turn: batched requests in, responses out.

The rollout engine gathers every pending turn that belongs to one policy and calls `act` once
with all of them, so an LLM policy sends one batched `generate` per tick.

Randomness travels with the request: the engine gives each decision its own `seed`, derived from
(run seed, episode, policy seed, seat, decision, attempt), and a policy draws every random choice
of that decision from `rng_for(request)` (an LLM seeds one torch generator per prompt from it).
How the engine batches requests (`concurrency`, which episodes share a call, in what order) then
changes nothing a policy draws: the same file and seed give the same transcripts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


@dataclass
class ActRequest:
    episode: int  # index of the episode in the run
    agent: str  # the seat in the world (a PettingZoo agent name)
    observation: Any  # the world's structured observation for that seat
    messages: list[dict[str, str]]  # chat messages: the world's prompt, plus any failed attempts and their errors
    action_space: Any = None  # the seat's gymnasium action space
    demonstration: list[dict[str, str]] = field(default_factory=list)  # the world's worked example (chat messages)
    greedy: bool = False  # decode this turn greedily whatever the policy's temperature (e.g. ArenaRL's anchor rollout)
    # The randomness of this decision (set by the rollout engine, a 64-bit seed unique to the run,
    # episode, policy, seat, decision and attempt): every random draw answering it comes from
    # `Policy.rng_for(request)`. None (a request built by hand): the policy's own generator, in call order.
    seed: int | None = None
    # The language of a legal reply this turn (`agora.grammar.Grammar`, from the world's `reply_grammar`),
    # or None (free text). Policies that decode text constrain their reply to it where they can.
    grammar: Any = None
    # How many decisions this seat took earlier in this episode (0: its first). Policies that keep state across
    # an episode's turns (a plan-execute agent's current subgoal) start afresh at 0; a re-asked turn (after a
    # reply that did not parse) comes again with the same number.
    decision: int = 0


@dataclass
class ActResponse:
    text: str  # what the agent said, in the world's reply format
    action: Any = None  # set by policies that act on structure (scripted); None means "parse `text`"
    prompt_ids: list[int] | None = None  # learnable policies: the exact tokens sampled from
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None  # log pi(token) under the sampling distribution, one per completion token
    prompt_text: str | None = None  # the prompt as the model saw it (chat template applied)
    temperature: float | None = (
        None  # learnable policies: the sampling temperature `logprobs` are under (trainers read it)
    )
    # The Lark grammar (`Grammar.lark(...)`, as decoded) the completion was constrained by: `logprobs` are
    # under the distribution masked to it, and trainers recompute them under the same masks. None: unconstrained.
    grammar: str | None = None
    # Set when the policy could not reply at all (e.g. a server that failed after its retries): the
    # engine takes the world's seeded fallback action at once, counted in `unanswered`.
    error: str | None = None
    # The messages the policy showed before the world's conversation (`ActRequest.messages`): its system
    # prompt and the world's worked example, as chat messages without template tokens (`preamble`).
    preamble: list[dict[str, str]] | None = None
    # What the policy decided beside the action, JSON-able (a plan-execute agent's switch and subgoal, its whole
    # reply, the token spans of each part): recorded as `Step.info` for trainers and reviewers.
    info: dict[str, Any] | None = None


@dataclass
class PolicyStats:
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    calls: int = 0
    requests: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class PolicyConfig(BaseModel):
    """Base of every policy's parameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Policy(ABC):
    """Maps a batch of requests to a batch of responses, in order."""

    Config: ClassVar[type[PolicyConfig]] = PolicyConfig
    expensive: ClassVar[bool] = False  # model-backed: the engine calls it once per tick with every pending turn
    uses_text: ClassVar[bool] = False  # reads the world's prompt and answers in text (else acts on the observation)
    interactive: ClassVar[bool] = False  # reads the terminal (a person): the CLI draws no live progress bar
    world: ClassVar[str | None] = (
        None  # plug-ins: the one world this policy plays (scripted baselines), or None for any
    )
    seats: ClassVar[str] = (
        "*"  # glob of the seats it can play in its world (e.g. "planner"); scenario files are checked against it
    )

    def __init__(self, config: PolicyConfig, *, seed: int):
        self.config = config
        self.seed = seed
        self.stats = PolicyStats()
        self.rng = np.random.default_rng(seed)  # only for requests without a seed (see `rng_for`)

    def rng_for(self, request: ActRequest) -> np.random.Generator:
        """The generator every random draw answering `request` comes from: a fresh one seeded by
        `request.seed`, so a decision's draws do not depend on what else the policy was asked or
        in which order; for a hand-built request without a seed, the policy's own generator."""
        return np.random.default_rng(request.seed) if request.seed is not None else self.rng

    @abstractmethod
    def act(self, requests: list[ActRequest]) -> list[ActResponse]: ...

    def run_tags(self) -> dict[str, str]:
        """What a run must record to reproduce this policy's numbers (e.g. {"kernel": "wx"}), tagged
        `agora.<key>` as "seat=value" pairs; none by default."""
        return {}

    def close(self) -> None:
        """Release resources (models stay cached for other policies)."""


def preamble(
    system_prompt: str | None, demonstration: list[dict[str, str]], demonstrations: bool
) -> list[dict[str, str]]:
    """The messages a chat policy puts before the world's conversation: its system prompt (if any),
    then the world's worked example (when `demonstrations` is on)."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, *(demonstration if demonstrations else [])]


def policy_tags(seats: dict[str, Policy]) -> dict[str, str]:
    """The seats' policies' `run_tags` as run tags: {"agora.kernel": "alice=wx, bob=xw"}."""
    pairs: dict[str, list[str]] = {}
    for seat, policy in seats.items():
        for key, value in policy.run_tags().items():
            pairs.setdefault(f"agora.{key}", []).append(f"{seat}={value}")
    return {key: ", ".join(values) for key, values in pairs.items()}
