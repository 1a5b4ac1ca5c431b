"""Deferral's numeric view (agora.compat): the metacognitive decision as a table (EVAL each agent, CREATE, DEFER,
and the expert's answer), the answers encoded as who answered and who agrees, and the state a critic may see
(who is right)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from agora.compat import NumericWorld
from worlds.deferral.problems import evaluate_formula
from worlds.deferral.rules import CREATE, DEFER, EVAL, EXPERT, KINDS, format_number

PROBLEM_KINDS = (*KINDS, "file")  # generated kinds, and problems read from a JSONL file


class DeferralNumeric(NumericWorld):
    """Table: `EVAL agent_j` per team agent, `CREATE`, `DEFER`, then the expert's `ANSWER`.

    CREATE answers with the team agent's own attempt: the problem's formula computed exactly, with the private
    facts of a closed question guessed uniformly from the world's seeded generator (the scripted baselines'
    solver without slips); a problem without a formula (JSONL) gets an empty answer. ANSWER is the expert's true
    answer with the worked solution. Masks: round 0 only CREATE; later EVAL of another agent, CREATE or DEFER;
    the expert only ANSWER. The observation drops the text (question, answers, history) and adds the problem's
    kind, who has answered and which answers agree."""

    def action_table(self) -> list[str]:
        return [f"EVAL {agent}" for agent in self.team] + ["CREATE", "DEFER", "ANSWER (expert)"]

    def table_action(self, agent: str, index: int) -> dict[str, Any]:
        n = len(self.team)
        if agent == EXPERT:
            return {"answer": self.problem.answer, "explanation": self.problem.solution}
        if index < n:
            return {"type": EVAL, "target": index, "answer": ""}
        if index == n:
            return {"type": CREATE, "target": 0, "answer": self.own_attempt()}
        return {"type": DEFER, "target": 0, "answer": ""}

    def own_attempt(self) -> str:
        """The formula's value, private facts guessed; '' without a formula."""
        if not self.problem.formula:
            return ""
        try:
            return format_number(evaluate_formula(self.problem.formula, {}, rng=self.np_random))
        except (ValueError, ZeroDivisionError):  # a guessed fact can make a divisor zero
            return ""

    def action_mask(self, agent: str) -> np.ndarray:
        n = len(self.team)
        mask = np.zeros(n + 3, dtype=np.int8)
        if not self.agents or self.team_answer is not None:
            return mask
        if agent == EXPERT:
            mask[n + 2] = 1
        elif self.round == 0:
            mask[n] = 1
        else:
            mask[:n] = 1
            mask[self.team.index(agent)] = 0
            mask[n : n + 2] = 1
        return mask

    def numeric_observation_space(self, agent: str) -> spaces.Dict:
        n, c = len(self.team), self.config
        fields = {
            "round": spaces.Discrete(c.rounds),
            "difficulty": spaces.Discrete(4),
            "kind": spaces.Discrete(len(PROBLEM_KINDS)),
            "from_expert": spaces.MultiBinary(n),
            "answered": spaces.MultiBinary(n),  # a non-empty answer as the round began
            "agree": spaces.MultiBinary((n, n)),  # agents i and j hold the same non-empty answer
        }
        fields.update({"deferred": spaces.MultiBinary(n)} if agent == EXPERT else {"self": spaces.Discrete(n)})
        return spaces.Dict(fields)

    def numeric_observation(self, agent: str, observation: dict[str, Any]) -> dict[str, Any]:
        answers = list(observation["answers"])
        answered = np.array([bool(a) for a in answers], dtype=np.int8)
        agree = np.array([[bool(a) and a == b for b in answers] for a in answers], dtype=np.int8)
        numeric = {
            "round": observation["round"],
            "difficulty": observation["difficulty"],
            "kind": PROBLEM_KINDS.index(self.problem.kind),
            "from_expert": observation["from_expert"],
            "answered": answered,
            "agree": agree,
        }
        key = "deferred" if agent == EXPERT else "self"
        return {**numeric, key: observation[key]}

    @property
    def state_space(self) -> spaces.Box:
        """The round, difficulty and kind (one-hots), which answers are expert-given, given and right, who deferred
        this round, and the mover (one-hot over the seats): the team's answers judged against the true one."""
        n, c = len(self.team), self.config
        size = c.rounds + 4 + len(PROBLEM_KINDS) + 4 * n + n + 1
        return spaces.Box(0, 1, (size,), dtype=np.float32)

    def state(self) -> np.ndarray:
        n, c = len(self.team), self.config
        deferred, mover = np.zeros(n), np.zeros(n + 1)
        deferred[self.deferred] = 1
        if self.team_answer is None:
            mover[self.possible_agents.index(self.agent_selection)] = 1
        parts = [
            np.eye(c.rounds)[self.round],
            np.eye(4)[self.problem.difficulty],
            np.eye(len(PROBLEM_KINDS))[PROBLEM_KINDS.index(self.problem.kind)],
            self.from_expert,
            [bool(a) for a in self.answers],
            [a == self.problem.answer for a in self.answers],
            deferred,
            mover,
        ]
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
