"""The deferral world as a PettingZoo AECEnv: its config, spaces, and the rounds (team decisions,
the expert's turn, the team's answer and rewards).

The world is told in the package docstring (worlds/deferral/__init__.py); the text interface is
`DeferralText` (text.py), the metrics and run report `DeferralRecords` (report.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agora.world import PRINTABLE, cached_per_agent, sanitize, world_config
from worlds.deferral.numeric import DeferralNumeric
from worlds.deferral.problems import (
    Problem,
    arithmetic_problem,
    closed_world_problem,
    fact_table,
    load_problems,
    word_problem,
)
from worlds.deferral.report import DeferralRecords
from worlds.deferral.rules import (
    ACTION_NAMES,
    CREATE,
    DEFER,
    EVAL,
    EXPERT,
    EXPLAINS,
    KINDS,
    MAX_ANSWER_CHARS,
    MAX_EXPLANATION_CHARS,
    MAX_NOTE_CHARS,
    majority_answer,
    normalize_answer,
    team_would_be_right,
)
from worlds.deferral.text import DeferralText


class DeferralConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team_size: int = Field(
        3, ge=2, le=9, description="agents in the team (seats agent_0 ...); the expert is one more seat"
    )
    rounds: int = Field(
        3, ge=1, le=10, description="round 0 (everyone answers) plus rounds-1 rounds of EVAL/CREATE/DEFER"
    )
    defer_cost: float = Field(0.3, ge=0.0, le=10.0, description="reward paid for each DEFER")
    create_cost: float = Field(0.1, ge=0.0, le=10.0, description="reward paid for each CREATE after round 0")
    kinds: dict[str, float] = Field(
        {"arithmetic": 0.4, "word": 0.3, "closed": 0.3},
        description="generated problem kinds (arithmetic, word, closed) -> weight",
    )
    difficulties: list[int] = Field([1, 2, 3], min_length=1, description="difficulty levels drawn uniformly (1-3)")
    facts_seed: int = Field(
        0, ge=0, description="seed of the closed world's private fact table (fixed across episodes)"
    )
    companies: int = Field(8, ge=2, le=100, description="fictional companies in the fact table")
    problems_file: str | None = Field(
        None,
        description="JSONL problems (question, answer, optional note/difficulty/explanation) used instead of "
        "generated ones; "
        "the path is relative to the working directory",
    )
    oracle_observations: bool = Field(
        False, description="add the true answer to team observations (only for the `oracle` baseline)"
    )

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: dict[str, float]) -> dict[str, float]:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown problem kinds {sorted(unknown)}; allowed: {', '.join(KINDS)}")
        if any(w < 0 for w in kinds.values()) or sum(kinds.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return kinds

    @field_validator("difficulties")
    @classmethod
    def _difficulties(cls, levels: list[int]) -> list[int]:
        if any(d not in (1, 2, 3) for d in levels):
            raise ValueError("difficulty levels are 1, 2 and 3")
        return levels

    @model_validator(mode="after")
    def _file(self) -> DeferralConfig:
        if self.problems_file is not None:
            if not Path(self.problems_file).is_file():
                raise ValueError(f"problems_file {self.problems_file!r} is not a file")
            load_problems(self.problems_file)
        return self


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(DeferralText, DeferralRecords, DeferralNumeric, AECEnv):
    metadata = {"name": "deferral_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    Config = DeferralConfig

    def __init__(self, config: DeferralConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__()
        self.config = world_config(DeferralConfig, config, kwargs)
        self.team = [f"agent_{i}" for i in range(self.config.team_size)]
        self.possible_agents = [*self.team, EXPERT]
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.facts = fact_table(self.config.facts_seed, self.config.companies)
        self.bank = load_problems(self.config.problems_file) if self.config.problems_file else None
        self.agents = []
        self.log: list[str] = []

    # --- spaces -------------------------------------------------------------------------

    def _text(self, limit: int, lines: bool = False) -> spaces.Text:
        return spaces.Text(max_length=limit, min_length=0, charset=PRINTABLE + ("\n" if lines else ""))

    def _history_chars(self) -> int:
        return self.config.rounds * (self.config.team_size * (MAX_ANSWER_CHARS + 40) + MAX_EXPLANATION_CHARS + 80)

    @cached_per_agent
    def observation_space(self, agent: str) -> spaces.Space:
        n, c = self.config.team_size, self.config
        answers = spaces.Tuple([self._text(MAX_ANSWER_CHARS)] * n)
        common = {
            "round": spaces.Discrete(c.rounds),
            "question": self._text(1000),
            "difficulty": spaces.Discrete(4),
            "answers": answers,  # every agent's answer as the round began ('' before round 1)
            "from_expert": spaces.MultiBinary(n),  # which of those answers the expert gave
            "history": self._text(self._history_chars(), lines=True),
        }
        if agent == EXPERT:
            return spaces.Dict(
                {
                    **common,
                    "deferred": spaces.MultiBinary(n),  # who asked this round
                    "note": self._text(MAX_NOTE_CHARS),
                    "reference": self._text(MAX_ANSWER_CHARS),
                    "solution": self._text(MAX_NOTE_CHARS),
                }
            )
        extra = {"reference": self._text(MAX_ANSWER_CHARS)} if c.oracle_observations else {}
        return spaces.Dict({**common, "self": spaces.Discrete(n), "formula": self._text(300), **extra})

    @cached_per_agent
    def action_space(self, agent: str) -> spaces.Space:
        if agent == EXPERT:
            return spaces.Dict(
                {"answer": self._text(MAX_ANSWER_CHARS), "explanation": self._text(MAX_EXPLANATION_CHARS)}
            )
        return spaces.Dict(
            {
                "type": spaces.Discrete(3),
                "target": spaces.Discrete(self.config.team_size),
                "answer": self._text(MAX_ANSWER_CHARS),
            }
        )

    # --- AEC API ------------------------------------------------------------------------

    def draw_problem(self) -> Problem:
        rng = self.np_random
        if self.bank is not None:
            return self.bank[int(rng.integers(len(self.bank)))]
        kinds = [k for k in KINDS if self.config.kinds.get(k, 0) > 0]
        weights = np.array([self.config.kinds[k] for k in kinds], dtype=float)
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        difficulty = int(rng.choice(self.config.difficulties))
        if kind == "arithmetic":
            return arithmetic_problem(rng, difficulty)
        if kind == "word":
            return word_problem(rng, difficulty)
        return closed_world_problem(rng, difficulty, self.facts)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.problem = self.draw_problem()
        n = self.config.team_size
        self.agents = list(self.possible_agents)
        self.round = 0
        self.answers = [""] * n  # as the round began
        self.from_expert = [0] * n
        self.next_answers = [""] * n  # as they will be when the round ends
        self.next_from_expert = [0] * n
        self.deferred: list[int] = []
        self.round_actions: list[str] = [""] * n
        self.log = []
        self.explanations: list[str] = []
        self.answer_history: list[list[str]] = []  # answers after each round
        self.decisions: list[dict[str, Any]] = []  # one per team decision in rounds >= 1
        self.expert_answers: list[str] = []
        self.costs = {a: 0.0 for a in self.team}
        self.illegal = 0
        self.team_answer: str | None = None
        self.correct = False
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = self.team[0]

    def observe(self, agent: str) -> dict[str, Any]:
        obs = {
            "round": self.round,
            "question": self.problem.question,
            "difficulty": self.problem.difficulty,
            "answers": tuple(self.answers),
            "from_expert": np.array(self.from_expert, dtype=np.int8),
            "history": "\n".join(self.log),
        }
        if agent == EXPERT:
            deferred = np.zeros(self.config.team_size, dtype=np.int8)
            deferred[self.deferred] = 1
            obs.update(
                deferred=deferred, note=self.problem.note, reference=self.problem.answer, solution=self.problem.solution
            )
            return obs
        obs.update({"self": self.team.index(agent), "formula": self.problem.formula})
        if self.config.oracle_observations:
            obs["reference"] = self.problem.answer
        return obs

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if agent == EXPERT:
            self._expert_step(action)
        else:
            self._team_step(agent, action)
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def _team_step(self, agent: str, action: Any) -> None:
        i = self.team.index(agent)
        kind, target, answer = self._decode(action)
        c = self.config
        if self.round == 0:
            legal = kind == CREATE
            self.next_answers[i] = answer if legal else ""
            self.round_actions[i] = f"answered {answer or '(nothing)'}" if legal else "ILLEGAL"
        else:
            legal = kind == CREATE or kind == DEFER or (kind == EVAL and target is not None and target != i)
            self.decisions.append(
                {
                    "round": self.round,
                    "agent": agent,
                    "action": ACTION_NAMES[kind] if legal else "ILLEGAL",
                    "team_right_before": team_would_be_right(self.answers, self.problem.answer),
                    "own_right_before": self.answers[i] == self.problem.answer,
                }
            )
            if not legal:
                self.round_actions[i] = "ILLEGAL (kept its answer)"
            elif kind == EVAL:
                self.next_answers[i], self.next_from_expert[i] = self.answers[target], self.from_expert[target]
                self.round_actions[i] = f"EVAL agent {target} -> {self.answers[target] or '(nothing)'}"
            elif kind == CREATE:
                self.next_answers[i], self.next_from_expert[i] = answer, 0
                self.rewards[agent] -= c.create_cost
                self.round_actions[i] = f"CREATE {answer or '(nothing)'}"
            else:
                self.deferred.append(i)
                self.rewards[agent] -= c.defer_cost
                self.round_actions[i] = "DEFER"
        if not legal:
            self.illegal += 1
            self.infos[agent]["illegal_action"] = True
        self.costs[agent] -= self.rewards[agent]
        if i + 1 < len(self.team):
            self.agent_selection = self.team[i + 1]
        elif self.deferred:
            self.agent_selection = EXPERT
        else:
            self._end_round()

    def _expert_step(self, action: Any) -> None:
        if isinstance(action, dict):
            answer = normalize_answer(action.get("answer", ""))
            explanation = sanitize(action.get("explanation", ""), MAX_EXPLANATION_CHARS)
        else:
            answer, explanation = "", ""
        for i in self.deferred:
            self.next_answers[i], self.next_from_expert[i] = answer, 1
            self.round_actions[i] = f"DEFER -> expert: {answer or '(nothing)'}"
        self.expert_answers.append(answer)
        if explanation:
            self.explanations.append(explanation)
        self._end_round(explanation)

    def _end_round(self, explanation: str = "") -> None:
        self.answers, self.from_expert = list(self.next_answers), list(self.next_from_expert)
        self.answer_history.append(list(self.answers))
        actions = "; ".join(f"agent {i} {a}" for i, a in enumerate(self.round_actions))
        self.log.append(f"round {self.round}: {actions}" + (f"{EXPLAINS}{explanation}" if explanation else ""))
        self.deferred, self.round_actions = [], [""] * len(self.team)
        self.round += 1
        if self.round < self.config.rounds:
            self.agent_selection = self.team[0]
            return
        self.round = self.config.rounds - 1  # stays a valid observation
        self.team_answer = majority_answer(self.answers, self.np_random)
        self.correct = bool(self.team_answer) and self.team_answer == self.problem.answer
        for agent in self.team:
            self.rewards[agent] += float(self.correct)
        self.terminations = {a: True for a in self.agents}
        self.agent_selection = self.team[0]

    def _decode(self, action: Any) -> tuple[int | None, int | None, str]:
        """(kind, target or None if out of range, normalized answer) of a team action dict."""
        if not isinstance(action, dict):
            return None, None, ""
        try:
            kind = int(action.get("type"))
        except (TypeError, ValueError, OverflowError):
            kind = None
        try:
            target = int(action.get("target", -1))
        except (TypeError, ValueError, OverflowError):
            target = None
        if kind not in (EVAL, CREATE, DEFER):
            kind = None
        if target is not None and not 0 <= target < len(self.team):
            target = None
        return kind, target, normalize_answer(action.get("answer", ""))

    def render(self) -> str | None:
        if self.render_mode is None or not hasattr(self, "problem"):
            return None
        lines = [
            f"question ({self.problem.kind}, difficulty {self.problem.difficulty}): {self.problem.question}",
            *self.log,
        ]
        if self.team_answer is not None:
            lines.append(
                f"team answer: {self.team_answer or '(none)'}, true answer: {self.problem.answer}, correct: "
                f"{self.correct}"
            )
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass
