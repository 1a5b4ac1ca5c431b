"""The economy as a PettingZoo ParallelEnv: spaces, the step (labor, taxes, rebate, utilities, the
planner's decisions or the workers' elections), observations, and the worked example.

The world is told in the package docstring (worlds/economy/__init__.py); the text interface is
`EconomyText` (text.py), the metrics and run report `EconomyRecords` (report.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from agora.world import world_config
from worlds.economy.numeric import EconomyNumeric
from worlds.economy.report import EconomyRecords
from worlds.economy.rules import (
    HISTORY,
    MAX_LABOR,
    PERSONAS,
    PLANNER,
    PLANNER_DELTAS,
    PLANNER_HISTORY,
    STAND,
    VOTE,
    WORK,
    EconomyConfig,
    action_field,
    action_labor,
    best_response_labor,
    draw_skills,
    gini,
    platform_deltas,
    plurality_winner,
    post_tax_incomes,
    social_welfare,
    utility,
)
from worlds.economy.text import DELTAS_PREFIX, SEPARATOR, EconomyText, planner_moves, signed


def env(config: EconomyConfig | None = None, **kwargs):
    """The AEC version (PettingZoo's parallel-to-AEC conversion)."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(parallel_env(config, **kwargs))


class parallel_env(EconomyText, EconomyRecords, EconomyNumeric, ParallelEnv):
    metadata = {"name": "economy_v0", "render_modes": ["ansi"], "is_parallelizable": True}
    Config = EconomyConfig
    small_config = {
        "num_workers": 5,
        "steps": 20,
        "tax_period": 5,
        "warmup": 3,
    }  # a quick instance (the conformance test)

    def __init__(self, config: EconomyConfig | None = None, render_mode: str | None = None, **kwargs):
        self.config = world_config(EconomyConfig, config, kwargs)
        self.cutoffs = self.config.cutoffs()
        self.workers = [f"worker_{i}" for i in range(self.config.num_workers)]
        self.possible_agents = [PLANNER, *self.workers]
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.agents: list[str] = []
        self.t = 0
        # Spaces are built once per env, not cached with functools.lru_cache on the methods: a
        # class-level cache keyed by `self` keeps every env of a run alive (N-sized arrays each).
        self._spaces = {
            "worker": (self._worker_observation_space(), self._worker_action_space()),
            PLANNER: (self._planner_observation_space(), self._planner_action_space()),
        }
        self._demonstrations: dict[str, list[tuple[str, str]]] = {}

    # --- spaces (one object per role, the same on every call) -------------------------------

    def observation_space(self, agent: str) -> spaces.Space:
        return self._spaces[PLANNER if agent == PLANNER else "worker"][0]

    def action_space(self, agent: str) -> spaces.Space:
        return self._spaces[PLANNER if agent == PLANNER else "worker"][1]

    def _worker_observation_space(self) -> spaces.Space:
        b, big = len(self.cutoffs), np.inf
        return spaces.Dict(
            {
                "step": spaces.Discrete(self.config.steps + 1),
                "skill": spaces.Box(0, big, (), dtype=np.float64),  # hourly wage v
                "cutoffs": spaces.Box(0, big, (b,), dtype=np.float64),
                "rates": spaces.Box(0, 100, (b,), dtype=np.float64),
                # (c, δ, 1/N): u = z̃ − c·l^δ, and the share of its own tax a worker gets back in the rebate
                "utility_params": spaces.Box(0, big, (3,), dtype=np.float64),
                # the last steps, most recent first, flat: (labor, income, tax, rebate, utility) per step; 0 beyond
                # `history_len`
                "history": spaces.Box(-big, big, (HISTORY * 5,), dtype=np.float64),
                "history_len": spaces.Discrete(HISTORY + 1),
                "persona": spaces.MultiDiscrete([len(v) for v in PERSONAS.values()]),
                **self._election_spaces(),
            }
        )

    def _election_spaces(self) -> dict[str, spaces.Space]:
        """Democratic mode: the phase (0 work, 1 stand, 2 vote), who stands, and their platforms
        (indices into PLANNER_DELTAS per bracket); the two arrays are shared by all workers."""
        if not self.config.democratic:
            return {}
        n, b = self.config.num_workers, len(self.cutoffs)
        return {
            "phase": spaces.Discrete(3),
            "candidates": spaces.MultiBinary(n),
            "platforms": spaces.MultiDiscrete(np.full((n, b), len(PLANNER_DELTAS))),
        }

    def _planner_observation_space(self) -> spaces.Space:
        b, n, big = len(self.cutoffs), self.config.num_workers, np.inf
        return spaces.Dict(
            {
                "step": spaces.Discrete(self.config.steps + 1),
                "cutoffs": spaces.Box(0, big, (b,), dtype=np.float64),
                "rates": spaces.Box(0, 100, (b,), dtype=np.float64),
                "skills": spaces.Box(0, big, (n,), dtype=np.float64),
                "incomes": spaces.Box(0, big, (n,), dtype=np.float64),  # last step
                "labor": spaces.Box(0, MAX_LABOR, (n,), dtype=np.float64),  # last step
                "period_swf": spaces.Box(
                    -big, big, (1,), dtype=np.float64
                ),  # mean SWF per step since the last decision
                # past decisions, most recent first: rates then the mean SWF per step of the period they governed
                "periods": spaces.Box(-big, big, (PLANNER_HISTORY, b + 1), dtype=np.float64),
                "periods_len": spaces.Discrete(PLANNER_HISTORY + 1),
            }
        )

    def _worker_action_space(self) -> spaces.Space:
        hours = spaces.Box(0, MAX_LABOR, (), dtype=np.float64)  # hours (a 0-d array: no list per step in the records)
        # persona scaling: 1 = satisfied with the tax policy (an action without it counts as satisfied)
        satisfied = {"satisfied": spaces.Discrete(2)} if self.config.persona_scaling else {}
        if not self.config.democratic:
            return spaces.Dict({"labor": hours, **satisfied}) if satisfied else hours
        # stand (1) with a platform (indices into PLANNER_DELTAS) on a stand step; vote for a worker index on a vote
        # step, -1 = no vote (every other step, or an abstention)
        n, b = self.config.num_workers, len(self.cutoffs)
        return spaces.Dict(
            {
                "labor": hours,
                "stand": spaces.Discrete(2),
                "platform": spaces.MultiDiscrete([len(PLANNER_DELTAS)] * b),
                "vote": spaces.Discrete(n + 1, start=-1),
                **satisfied,
            }
        )

    def _planner_action_space(self) -> spaces.Space:
        return spaces.Box(0, 100, (len(self.cutoffs),), dtype=np.float64)  # the schedule, percent per bracket

    # --- Parallel API ----------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        n, b = self.config.num_workers, len(self.cutoffs)
        self.skills = draw_skills(self.np_random, self.config)
        self.personas = np.stack([self.np_random.integers(len(v), size=n) for v in PERSONAS.values()], axis=1)
        self.rates = np.full(b, float(self.config.initial_rate))
        self.agents = list(self.possible_agents)
        self.t = 0
        self.history = np.zeros((n, HISTORY, 5))
        self.history_len = 0
        self.labor = np.zeros(n)
        self.incomes = np.zeros(n)
        self.period_swf: list[float] = []  # SWF of each step since the planner's last decision
        self.periods: list[tuple[np.ndarray, float]] = []  # (rates, mean SWF) of each finished period
        self.decisions: list[int] = []  # steps at which the planner acted
        self.candidates = np.zeros(n, dtype=np.int8)  # democratic: who stands in the coming vote
        self.platforms = np.zeros((n, b), dtype=np.int64)  # their platforms, indices into PLANNER_DELTAS
        self.elections: list[dict[str, Any]] = []
        self.log: dict[str, list] = {
            k: []
            for k in (
                "swf",
                "mean_utility",
                "total_income",
                "tax_revenue",
                "gini_pre",
                "gini_post",
                "mean_labor",
                "br_gap",
                "rates",
                *(("satisfied",) if self.config.persona_scaling else ()),
            )
        }
        observations = self._observations()
        return observations, {a: {} for a in self.agents}

    def is_planning_step(self, t: int | None = None) -> bool:
        """The planner decides at steps warmup, warmup + K, warmup + 2K, ..."""
        t = self.t if t is None else t
        return t >= self.config.warmup and (t - self.config.warmup) % self.config.tax_period == 0

    def phase(self, t: int | None = None) -> int:
        """Democratic mode: VOTE on each decision step, STAND on the step before it, else WORK."""
        t = self.t if t is None else t
        if not self.config.democratic:
            return WORK
        if self.is_planning_step(t):
            return VOTE
        return STAND if t + 1 < self.config.steps and self.is_planning_step(t + 1) else WORK

    def _hold_election(self, actions: dict[str, Any]) -> np.ndarray:
        """Tally the votes for the standing candidates; the plurality winner's platform (seeded
        tie-break) changes the schedule. No candidate: the schedule stays."""
        n = self.config.num_workers
        standing = np.flatnonzero(self.candidates)
        votes = np.array([action_field(actions.get(a), "vote", -1) for a in self.workers], dtype=np.int64)
        valid = np.isin(votes, standing)
        winner = plurality_winner(votes[valid], standing, self.np_random)
        deltas = platform_deltas(self.platforms[winner]) if winner is not None else np.zeros(len(self.cutoffs))
        self.elections.append(
            {
                "step": self.t,
                "candidates": standing.tolist(),
                "platforms": [platform_deltas(self.platforms[c]).tolist() for c in standing],
                "votes": [int((votes[valid] == c).sum()) for c in standing],
                "winner": winner,
                "platform": deltas.tolist(),
                "candidate_share": len(standing) / n,
                "turnout": float(valid.mean()),
            }
        )
        self.candidates[:] = 0
        return np.clip(self.rates + deltas, 0.0, 100.0)

    def _nominate(self, actions: dict[str, Any]) -> None:
        """Workers that stand (stand = 1 with a legal platform) become the next vote's candidates."""
        self.candidates[:] = 0
        for i, agent in enumerate(self.workers):
            action = actions.get(agent)
            if action_field(action, "stand", 0) != 1:
                continue
            try:
                platform = np.asarray(action["platform"], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError, KeyError, IndexError):
                continue
            if platform.shape == (len(self.cutoffs),) and np.all((platform >= 0) & (platform < len(PLANNER_DELTAS))):
                self.candidates[i], self.platforms[i] = 1, platform

    def step(self, actions: dict[str, Any]):
        """Workers' labor -> incomes, taxes under the schedule (the planner's new one on its steps), rebate,
        utilities."""
        c = self.config
        labor = np.fromiter((action_labor(actions.get(a)) for a in self.workers), dtype=np.float64, count=c.num_workers)
        seen = self.rates  # the schedule the workers saw when they chose
        phase = self.phase()
        if self.is_planning_step() and (PLANNER in actions or c.democratic):
            if self.period_swf:
                self.periods.insert(0, (seen.copy(), float(np.mean(self.period_swf))))
            self.period_swf = []
            self.rates = self._hold_election(actions) if c.democratic else _rates(actions[PLANNER], self.rates)
            self.decisions.append(self.t)
        elif phase == STAND:
            self._nominate(actions)
        z = self.skills * labor
        post, taxes, rebate = post_tax_incomes(z, self.cutoffs, self.rates)
        u = utility(post, labor, c.labor_cost, c.labor_exponent)
        if c.persona_scaling:  # u = r·ũ: r = 1 for a satisfied worker, dissatisfied_scale otherwise
            satisfied = np.array([action_field(actions.get(a), "satisfied", 1) == 1 for a in self.workers])
            u = np.where(satisfied, u, c.dissatisfied_scale * u)
            self.log["satisfied"].append(float(satisfied.mean()))
        swf = social_welfare(u, z, c.welfare)
        best = best_response_labor(self.skills, self.cutoffs, seen, c.labor_cost, c.labor_exponent, 1.0 / c.num_workers)
        self.period_swf.append(swf)
        for key, value in (
            ("swf", swf),
            ("mean_utility", float(u.mean())),
            ("total_income", float(z.sum())),
            ("tax_revenue", float(taxes.sum())),
            ("gini_pre", gini(z)),
            ("gini_post", gini(post)),
            ("mean_labor", float(labor.mean())),
            ("br_gap", float(np.abs(labor - best).mean())),
            ("rates", self.rates.tolist()),
        ):
            self.log[key].append(value)
        self.history[:, 1:] = self.history[:, :-1]
        self.history[:, 0] = np.stack([labor, z, taxes, np.full(len(z), rebate), u], axis=1)
        self.history_len = min(self.history_len + 1, HISTORY)
        self.labor, self.incomes = labor, z
        self.t += 1
        rewards = {PLANNER: swf, **{a: float(x) for a, x in zip(self.workers, u)}}
        over = self.t >= c.steps
        observations = self._observations()
        agents = self.agents
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, over)
        infos = {a: {} for a in agents}
        if over:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _observations(self) -> dict[str, dict]:
        step, rates, cutoffs = self.t, self.rates.copy(), self.cutoffs.copy()
        params = np.array([self.config.labor_cost, self.config.labor_exponent, 1.0 / self.config.num_workers])
        # Built for N up to 10^4 per step: one copy of the shared arrays, per-worker views of them,
        # and as few containers per observation as possible (each is a record in the trajectories).
        history = self.history.reshape(len(self.skills), -1).copy()
        election = {}
        if self.config.democratic:
            election = {"phase": self.phase(), "candidates": self.candidates.copy(), "platforms": self.platforms.copy()}
        observations = {
            name: {
                "step": step,
                "skill": self.skills[i, ...],  # a 0-d view
                "cutoffs": cutoffs,
                "rates": rates,
                "utility_params": params,
                "history": history[i],
                "history_len": self.history_len,
                "persona": self.personas[i],
                **election,
            }
            for i, name in enumerate(self.workers)
        }
        periods = np.zeros((PLANNER_HISTORY, len(self.cutoffs) + 1))
        for k, (r, s) in enumerate(self.periods[:PLANNER_HISTORY]):
            periods[k] = [*r, s]
        observations[PLANNER] = {
            "step": step,
            "cutoffs": cutoffs,
            "rates": rates,
            "skills": self.skills.copy(),
            "incomes": self.incomes.copy(),
            "labor": self.labor.copy(),
            "period_swf": np.array([np.mean(self.period_swf) if self.period_swf else 0.0]),
            "periods": periods,
            "periods_len": min(len(self.periods), PLANNER_HISTORY),
        }
        return observations

    def passive_action(self, agent: str) -> np.ndarray | None:
        """The planner keeps the schedule between its decisions without being asked."""
        if agent == PLANNER and (self.config.democratic or not self.is_planning_step()):
            return self.rates.copy()  # democratic mode: the voters decide, the planner is never asked
        return None

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rates = ", ".join(f"{r:.0f}%" for r in self.rates)
        return (
            f"step {self.t}: rates [{rates}], mean labor {self.labor.mean():.1f} h, SWF "
            f"{self.log['swf'][-1] if self.log['swf'] else 0:.3f}"
        )

    # --- the worked example (the rest of the text interface is EconomyText, text.py) -------------

    def _demonstration(self, role: str) -> list[tuple[str, str]]:
        if role not in self._demonstrations:
            self._demonstrations[role] = self._worked_turn(role)
        return self._demonstrations[role]

    def _worked_turn(self, role: str) -> list[tuple[str, str]]:
        # A plain work step (democratic: the election lines are explained by the prompt itself; a
        # stand-step example answered with LABOR alone would teach the wrong reply).
        example = parallel_env(self.config.model_copy(update={"num_workers": 4, "democratic": False}))
        example.reset(seed=2507)
        obs, _, _, _, _ = example.step({a: np.array(40.0) for a in example.workers})
        if role == PLANNER:  # a cut of the first bracket (a rise where its rate is already 0%)
            deltas = [0] * len(self.cutoffs)
            deltas[0] = -10 if -10 in planner_moves(example.rates[0]) else 10
            reply = DELTAS_PREFIX + SEPARATOR.join(signed(d) for d in deltas)
            return [("user", example.prompt(PLANNER, obs[PLANNER])), ("assistant", reply)]
        reply = example.render_action("worker_0", {"labor": np.array(40.0), "satisfied": 1})  # LABOR: 40 (+ SATISFIED)
        return [("user", example.prompt("worker_0", obs["worker_0"])), ("assistant", reply)]

    def demonstration(self, agent: str) -> list[dict[str, str]]:
        """A worked turn on a fixed 4-worker example economy (nothing about the real episode)."""
        role = PLANNER if agent == PLANNER else "worker"
        return [{"role": r, "content": c} for r, c in self._demonstration(role)]


raw_env = parallel_env  # PettingZoo's name for the unwrapped env


def _rates(action, current: np.ndarray) -> np.ndarray:
    """The planner's schedule from its action, clipped to [0, 100] (malformed: the current schedule)."""
    try:
        rates = np.asarray(action, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return current.copy()
    if rates.shape != current.shape or not np.all(np.isfinite(rates)):
        return current.copy()
    return np.clip(rates, 0.0, 100.0)
