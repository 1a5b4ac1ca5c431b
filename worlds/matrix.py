"""Repeated normal-form games: the ground truth for regret, exploitability and Nash-solver tests.

A PettingZoo `ParallelEnv`: two players pick one action each per round, simultaneously, for
`rounds` rounds; each gets its payoff from the table. Games: `rock_paper_scissors`,
`matching_pennies`, `prisoners_dilemma`, or a `custom` payoff table. Each player observes the round
number and the full public history of joint actions. A text reply is one line, `ACTION: <action name>`
(letter case and markdown tolerated); the reply grammar (`reply_grammar`) is that line with the names as written.

Each episode reports each seat's external regret over the repeated game (solvers/regret.py):
Reg_T = Σ_t u(a*, b_t) − Σ_t u(a_t, b_t) for the best fixed action a* in hindsight against the
opponent's actual plays b_t (`regret/<seat>`), and Reg_T / T (`regret_per_round/<seat>`). The run
report adds the mean regret curve Reg_t per seat (the metric history `regret_curve/<seat>` over
rounds and the figure `figures/regret_curve.png`). Scripted players (a fixed mixed strategy, a
learnable tabular softmax strategy, tit-for-tat, Hedge on the known table) are in
agents/scripted/matrix.py.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.compat import NumericWorld
from agora.grammar import Grammar, one_of, seq
from agora.world import ParseError, Report, cached_per_agent, check_reply
from solvers.regret import episode_history, repeated_game_regret_curve

# payoffs[i][j] = (payoff of player 0, payoff of player 1) when player 0 plays i and player 1 plays j
GAMES: dict[str, tuple[list[str], list[list[tuple[float, float]]]]] = {
    "rock_paper_scissors": (
        ["rock", "paper", "scissors"],
        [[(0, 0), (-1, 1), (1, -1)], [(1, -1), (0, 0), (-1, 1)], [(-1, 1), (1, -1), (0, 0)]],
    ),
    "matching_pennies": (["heads", "tails"], [[(1, -1), (-1, 1)], [(-1, 1), (1, -1)]]),
    "prisoners_dilemma": (["cooperate", "defect"], [[(3, 3), (0, 5)], [(5, 0), (1, 1)]]),
}


class MatrixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    game: Literal["rock_paper_scissors", "matching_pennies", "prisoners_dilemma", "custom"] = Field(
        "rock_paper_scissors", description="a named game, or custom (then give actions and payoffs)"
    )
    rounds: int = Field(10, ge=1, le=10_000, description="rounds of the stage game per episode")
    actions: list[str] | None = Field(None, description="custom game: the action names (shared by both players)")
    payoffs: list[list[tuple[float, float]]] | None = Field(
        None, description="custom game: payoffs[i][j] = [p0, p1] when player 0 plays i and player 1 plays j"
    )
    agent_names: list[str] = Field(["player_0", "player_1"], min_length=2, max_length=2, description="the two seats")

    @model_validator(mode="after")
    def _check_table(self) -> MatrixConfig:
        if self.game == "custom":
            if not self.actions or not self.payoffs:
                raise ValueError("a custom game needs `actions` and `payoffs`")
            n = len(self.actions)
            if len(set(self.actions)) != n or not all(re.fullmatch(r"[a-z][a-z_]*", a) for a in self.actions):
                raise ValueError("actions must be unique lowercase words")
            if len(self.payoffs) != n or any(len(row) != n for row in self.payoffs):
                raise ValueError(f"payoffs must be a {n}x{n} table of [p0, p1] pairs")
            if not np.isfinite(np.asarray(self.payoffs, dtype=np.float64)).all():
                raise ValueError("payoffs must be finite numbers (no .nan or .inf)")
        elif self.actions or self.payoffs:
            raise ValueError("`actions` and `payoffs` are only for game: custom")
        if len(set(self.agent_names)) != 2:
            raise ValueError("agent_names must be two different names")
        return self

    def table(self) -> tuple[list[str], np.ndarray]:
        actions, payoffs = (self.actions, self.payoffs) if self.game == "custom" else GAMES[self.game]
        return list(actions), np.asarray(payoffs, dtype=np.float64)  # shape (n, n, 2)


ACTION_LABEL = "ACTION: "  # a reply is this label and one action name (prompt, render_action and grammar)
ACTION_LINE = re.compile(r"^[ \t>#*_`-]*action[ \t*_`]*:(.*)", re.IGNORECASE | re.MULTILINE)


def action_word(body: str) -> str:
    """What follows 'ACTION:', normalized: ' **Rock**.' -> 'rock' (words inside stay: 'rock paper' is no action)."""
    word = " ".join(body.replace("*", " ").replace("`", " ").split()).strip(" .!").lower()
    return word if re.fullmatch(r"[a-z][a-z_]*", word) else word.strip("_")


@functools.lru_cache(maxsize=64)
def action_grammar(action_names: tuple[str, ...]) -> Grammar:
    """The reply grammar of a game with these actions (built once per game: its regex compiles once)."""
    return Grammar(seq(ACTION_LABEL, one_of(action_names)))


class parallel_env(NumericWorld, ParallelEnv):
    metadata = {"name": "matrix_v0", "render_modes": ["ansi"], "is_parallelizable": True}
    Config = MatrixConfig

    def __init__(self, config: MatrixConfig | None = None, render_mode: str | None = None, **kwargs):
        self.config = config or MatrixConfig(**kwargs)
        self.action_names, self.payoffs = self.config.table()
        self.possible_agents = list(self.config.agent_names)
        self.render_mode = render_mode
        self.agents: list[str] = []
        self.history: list[tuple[int, int]] = []
        self.totals = {a: 0.0 for a in self.possible_agents}

    @cached_per_agent
    def observation_space(self, agent: str) -> spaces.Space:
        n, rounds = len(self.action_names), self.config.rounds
        # history[k] = (own action, opponent action) of round k; -1 for rounds not played yet
        return spaces.Dict(
            {"round": spaces.Discrete(rounds + 1), "history": spaces.Box(-1, n - 1, (rounds, 2), dtype=np.int64)}
        )

    @cached_per_agent
    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(len(self.action_names))

    def _observe(self, agent: str) -> dict:
        seat = self.possible_agents.index(agent)
        history = np.full((self.config.rounds, 2), -1, dtype=np.int64)
        for k, joint in enumerate(self.history):
            history[k] = (joint[seat], joint[1 - seat])
        return {"round": len(self.history), "history": history}

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        self.history = []
        self.totals = {a: 0.0 for a in self.possible_agents}
        return {a: self._observe(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]):
        a0, a1 = (self._action_index(a, actions) for a in self.possible_agents)
        self.history.append((a0, a1))
        payoff = self.payoffs[a0, a1]
        rewards = {agent: float(payoff[i]) for i, agent in enumerate(self.possible_agents)}
        for agent, r in rewards.items():
            self.totals[agent] += r
        over = len(self.history) >= self.config.rounds
        observations = {a: self._observe(a) for a in self.agents}
        terminations = {a: False for a in self.agents}
        truncations = {a: over for a in self.agents}
        infos = {a: {} for a in self.agents}
        if over:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _action_index(self, agent: str, actions: dict[str, int]) -> int:
        """`agent`'s action in `actions` if it lies in its action space (an action index); else a ValueError."""
        if agent not in actions:
            raise ValueError(f"no action for {agent}: step needs one action per player")
        action, n = actions[agent], len(self.action_names)
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if isinstance(action, bool) or not isinstance(action, (int, np.integer)) or not 0 <= action < n:
            raise ValueError(f"{agent}'s action {action!r} is outside its action space: an integer from 0 to {n - 1}")
        return int(action)

    # --- numeric view (agora.compat) ----------------------------------------------------

    def action_table(self) -> list[str]:
        """The stage game's actions; every one is legal every round."""
        return list(self.action_names)

    def table_action(self, agent: str, index: int) -> int:
        return int(index)

    def action_mask(self, agent: str) -> np.ndarray:
        return np.ones(len(self.action_names), dtype=np.int8)

    @property
    def state_space(self) -> spaces.Box:
        """The round and the joint actions so far, seen from the first seat (-1 for rounds not played yet): both
        players see all of it, so it is the observation of the first seat, flattened."""
        n, rounds = len(self.action_names), self.config.rounds
        low, high = np.full(1 + 2 * rounds, -1, np.float32), np.full(1 + 2 * rounds, n - 1, np.float32)
        low[0], high[0] = 0, rounds
        return spaces.Box(low, high, dtype=np.float32)

    def state(self) -> np.ndarray:
        history = self._observe(self.possible_agents[0])["history"].reshape(-1)
        return np.concatenate([[len(self.history)], history]).astype(np.float32)

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "\n".join(" vs ".join(self.action_names[i] for i in joint) for joint in self.history)
        return None

    # --- text interface ---------------------------------------------------------------

    def prompt(self, agent: str, observation: dict) -> str:
        seat = self.possible_agents.index(agent)
        lines = [
            f"You play a repeated game of {self.config.game.replace('_', ' ')} for {self.config.rounds} rounds.",
            "Each round both players choose at the same time. Your payoff for (your action, their action):",
        ]
        for i, mine in enumerate(self.action_names):
            for j, theirs in enumerate(self.action_names):
                lines.append(f"  {mine} vs {theirs}: {self.payoffs[i, j, seat]:g}")
        played = [(int(m), int(t)) for m, t in observation["history"] if m >= 0]
        if played:
            lines.append(
                "History (you, them): " + "; ".join(f"{self.action_names[m]}/{self.action_names[t]}" for m, t in played)
            )
        lines.append(f"This is round {int(observation['round']) + 1}. Choose one of: {', '.join(self.action_names)}.")
        lines.append(f"Reply with one line:\n{ACTION_LABEL}<action>")
        return "\n".join(lines)

    def parse(self, agent: str, text: str) -> int:
        """The action of the `ACTION: <action>` line (a line that starts with the label).

        Tolerated: letter case, markdown emphasis around the label and the action, a trailing '.', the same
        line twice. Not guessed: no such line, two different actions, anything but one action name after the
        label ('ACTION: rock paper'). Reads lines with one regex pass, in time linear in the length.
        """
        bodies = {action_word(b) for b in set(ACTION_LINE.findall(check_reply(text)))}
        if not bodies:
            raise ParseError(f"no 'ACTION: <action>' line; write e.g. 'ACTION: {self.action_names[0]}'")
        if len(bodies) > 1:
            raise ParseError("more than one ACTION; give exactly one")
        body = bodies.pop()
        if body not in self.action_names:
            raise ParseError(f"'{body[:30]}' is not one action; choose one of: {', '.join(self.action_names)}")
        return self.action_names.index(body)

    def render_action(self, agent: str, action: int) -> str:
        return ACTION_LABEL + self.action_names[int(action)]

    def reply_grammar(self, agent: str, observation: dict) -> Grammar:
        """`ACTION: <one of the action names>`, the line `render_action` writes (every action is legal every round)."""
        return action_grammar(tuple(self.action_names))

    def fallback_action(self, agent: str, rng: np.random.Generator) -> int:
        return int(rng.integers(len(self.action_names)))

    def episode_metrics(self) -> dict[str, float]:
        counts = np.bincount(
            [j[0] for j in self.history] + [j[1] for j in self.history], minlength=len(self.action_names)
        )
        metrics = {f"score/{a}": total for a, total in self.totals.items()}
        metrics.update({f"freq/{name}": count / max(1, counts.sum()) for name, count in zip(self.action_names, counts)})
        joint = np.asarray(self.history, dtype=int).reshape(-1, 2)
        for seat, agent in enumerate(self.possible_agents):
            # Reg_T = max_a Σ_t u(a, b_t) − Σ_t u(a_t, b_t) = max_a (own · counts of b)_a − the seat's total
            own = self.payoffs[..., 0] if seat == 0 else self.payoffs[..., 1].T  # own[mine, theirs]
            theirs = np.bincount(joint[:, 1 - seat], minlength=len(self.action_names))
            regret = float(np.max(own @ theirs) - self.totals[agent]) if self.history else 0.0
            metrics[f"regret/{agent}"] = regret
            metrics[f"regret_per_round/{agent}"] = regret / max(1, len(self.history))
        return metrics

    def regret_curve(self, history: list[tuple[int, int]], seat: int) -> np.ndarray:
        """Reg_t of `seat` for t = 1..T over the joint actions `history` (ℓ_t(a) = −u(a, b_t))."""
        return repeated_game_regret_curve(self.payoffs, history, seat)

    def run_report(self, episodes: list) -> Report:
        """The mean regret curve Reg_t (t = 1..rounds) of each seat over the run's episodes, as a series and a
        figure."""
        from matplotlib.figure import Figure

        report = Report()
        histories = [h for h in (episode_history(e, self.possible_agents) for e in episodes) if h]
        if not histories:
            return report
        figure = Figure(figsize=(7, 4), layout="constrained")
        ax = figure.subplots()
        for seat, agent in enumerate(self.possible_agents):
            curves = [self.regret_curve(h, seat) for h in histories]
            length = min(len(c) for c in curves)
            mean = np.mean([c[:length] for c in curves], axis=0)
            report.series[f"regret_curve/{agent}"] = [(t + 1, float(v)) for t, v in enumerate(mean)]
            ax.plot(np.arange(1, length + 1), mean, label=agent)
        ax.set(title="external regret over the repeated game (mean over episodes)", xlabel="round t", ylabel="Reg_t")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend()
        report.figures["figures/regret_curve.png"] = figure
        return report
