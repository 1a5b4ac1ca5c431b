"""Scripted players of the deferral world: team baselines that differ in when they defer, and the simulated expert.

Team baselines answer with a noisy solver (`evaluate_formula` on the problem's formula, each
operation slipping with probability `slip`, private facts guessed), then decide each later round:

- `never_defer`: EVAL the lowest other agent holding the team's current plurality answer (ties: the
  smallest answer); CREATE (solve again) when only it holds that answer. Never DEFER.
- `always_defer`: DEFER every round.
- `defer_when_disagree`: DEFER unless the team's answers are unanimous, then EVAL (free).
- `oracle`: EVAL an agent whose answer is right; DEFER when no other agent has the right answer,
  i.e. exactly when adopting a teammate's answer cannot make it right (the upper bound; it reads
  the true answer, so the world needs `oracle_observations: true`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from agora.errors import AgoraError
from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig
from worlds.deferral.problems import evaluate_formula
from worlds.deferral.rules import CREATE, DEFER, EVAL, EXPERT, format_number, normalize_answer, number_value


def team_action(kind: int, target: int = 0, answer: str = "") -> dict[str, Any]:
    return {"type": kind, "target": target, "answer": answer}


class TeamBaseline(Policy):
    """Round 0: the noisy solver's answer. Later rounds: `decide(observation)`."""

    seats = "agent_*"  # the seats it plays

    class Config(PolicyConfig):
        slip: float = Field(
            0.1, ge=0.0, le=1.0, description="probability that each arithmetic step of the solver goes wrong"
        )

    def solve(self, observation: dict[str, Any], rng: np.random.Generator) -> str:
        """The solver's answer: the formula evaluated with slips drawn from `rng`; '' for a problem
        without a formula (JSONL)."""
        formula = observation["formula"]
        if not formula:
            return ""
        return format_number(evaluate_formula(formula, {}, slip=self.config.slip, rng=rng))

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            obs = request.observation
            if request.agent == EXPERT or "self" not in obs:
                raise AgoraError(
                    f"'{type(self).__name__}' plays team seats (agent_*), not the expert; use simulated, human or "
                    "llm there"
                )
            rng = self.rng_for(request)
            if int(obs["round"]) == 0:
                action = team_action(CREATE, answer=self.solve(obs, rng))
            else:
                action = self.decide(obs, rng)
            out.append(ActResponse("", action))
        return out

    def decide(self, observation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """This round's action; `rng` is the decision's generator (for solving again)."""
        raise NotImplementedError

    def follow_majority(self, observation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """EVAL the lowest other agent holding the plurality answer (ties: the smallest); CREATE if none does."""
        me, answers = int(observation["self"]), list(observation["answers"])
        counts = Counter(a for a in answers if a)
        if counts:
            top = max(counts.values())
            majority = min(a for a, c in counts.items() if c == top)
            holders = [i for i, a in enumerate(answers) if a == majority and i != me]
            if holders:
                return team_action(EVAL, holders[0])
        return team_action(CREATE, answer=self.solve(observation, rng))


class NeverDefer(TeamBaseline):
    def decide(self, observation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return self.follow_majority(observation, rng)


class AlwaysDefer(TeamBaseline):
    def decide(self, observation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return team_action(DEFER)


class DeferWhenDisagree(TeamBaseline):
    def decide(self, observation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        me, answers = int(observation["self"]), list(observation["answers"])
        if len(set(answers)) == 1 and answers[0]:
            return team_action(EVAL, (me + 1) % len(answers))
        return team_action(DEFER)


class Oracle(TeamBaseline):
    def decide(self, observation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if "reference" not in observation:
            raise AgoraError(
                "the 'oracle' baseline reads the true answer: set `world.oracle_observations: true` in the scenario"
            )
        me, answers = int(observation["self"]), list(observation["answers"])
        right = [i for i, a in enumerate(answers) if a == observation["reference"] and i != me]
        return team_action(EVAL, right[0]) if right else team_action(DEFER)


class SimulatedExpert(Policy):
    """Answers right with probability `accuracy[difficulty]`, else gives a plausible wrong answer
    (a number off by 1..max(9, 10%), or 'unknown'); when right it may add the worked solution."""

    seats = "expert"  # the seats it plays

    class Config(PolicyConfig):
        accuracy: dict[int, float] = Field(
            {1: 0.98, 2: 0.95, 3: 0.9}, description="probability of a right answer per difficulty (1-3)"
        )
        explain: bool = Field(
            True, description="add a short explanation (the facts used and the worked solution) to right answers"
        )

        @field_validator("accuracy")
        @classmethod
        def _levels(cls, accuracy: dict[int, float]) -> dict[int, float]:
            if set(accuracy) != {1, 2, 3} or not all(0.0 <= p <= 1.0 for p in accuracy.values()):
                raise ValueError(
                    "give a probability in [0, 1] for each difficulty 1, 2 and 3, e.g. {1: 0.98, 2: 0.95, 3: 0.9}"
                )
            return accuracy

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            obs = request.observation
            if request.agent != EXPERT or "reference" not in obs or "self" in obs:
                raise AgoraError(
                    "'simulated' plays the expert seat only; team seats take llm, human or a team baseline"
                )
            out.append(ActResponse("", self.answer(obs, self.rng_for(request))))
        return out

    def answer(self, obs: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, str]:
        """The expert's reply to `obs`, drawn from `rng` (the decision's generator; default the policy's own)."""
        rng = self.rng if rng is None else rng
        truth = obs["reference"]
        if rng.random() < self.config.accuracy[int(obs["difficulty"])]:
            explanation = (
                " ".join(p for p in (obs["note"], obs["solution"]) if p and p != truth) if self.config.explain else ""
            )
            return {"answer": truth, "explanation": explanation}
        value = number_value(truth)
        if value is None:
            return {"answer": "unknown", "explanation": ""}
        spread = max(9, int(abs(value) // 10))
        wrong = value + int(rng.choice([-1, 1])) * int(rng.integers(1, spread + 1))
        return {"answer": normalize_answer(format_number(wrong)), "explanation": ""}
