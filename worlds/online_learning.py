"""Online learning with full information, as in "Do LLM Agents Have Regret?" (arXiv 2403.16843).

One agent, `rounds` rounds. Each round it plays a distribution p_t over `n_actions` actions
(a pure action is a one-hot p_t), then the loss vector ℓ_t ∈ [0, 1]^n is revealed; it pays
⟨ℓ_t, p_t⟩ (reward −⟨ℓ_t, p_t⟩). The yardstick is the external regret (solvers/regret.py)

    Reg_T = Σ_t ⟨ℓ_t, p_t⟩ − min_a Σ_t ℓ_t(a),

sublinear (Reg_T / T → 0) for a no-regret learner such as Hedge. Loss sequences, drawn at reset
from the seed:

- `uniform`: ℓ_t(a) ~ U[0, 1] i.i.d. (stochastic);
- `gaussian`: ℓ_t(a) = clip(μ_a + noise·N(0, 1), 0, 1), μ_a ~ U[0.2, 0.8] per episode (stochastic);
- `alternating`: ℓ_1 = (1/2, 0, 1, ...), then (0, 1, 1, ...), (1, 0, 1, ...), ... — adversarial to
  follow-the-leader, which always picks the action about to lose (Reg_T ≈ T/2), while the best
  fixed action loses about T/2 (the other actions lose 1 every round);
- `trending`: each action's mean moves linearly from m0_a to m1_a (both ~ U[0.2, 0.8]) over the
  episode, plus noise·N(0, 1), clipped to [0, 1]: the best action changes along the way.

Reply format: the prompt shows the loss vectors of the last `show_rounds` rounds and each action's
total over all rounds, and asks for one line

    PLAY 0.20 0.50 0.30

with one probability per action written with two decimals, summing to exactly 1.00: the reply
grammar (`reply_grammar`, for constrained decoding) is that language, built as a DAG over the mass
left in hundredths, and `render_action` writes every distribution so (rounded to hundredths by
largest remainder). With `grid` below 100 the grammar allows only multiples of 1/grid (grid = 10:
0.00, 0.10, ..., 1.00), a finite reply set of C(grid + n − 1, n − 1) distributions that a trainer can
score one by one (trainers/regret_loss.py); the prompt and its worked example say so.
The parser is more lenient: any numbers in [0, 1] summing to 1 within 0.01
(then renormalised). A wrong count, a value out of range, a sum off by more, two PLAY lines or words
among the numbers are parse errors that say which.

Metrics per episode: `loss`, `best_fixed_loss`, `regret` (Reg_T), `regret_per_round` (Reg_T / T). The episode
info holds the loss vectors, the plays and the reply grid (`grid`).
The run report adds the mean regret curve over episodes (series `regret_curve`, and the figure
`figures/regret_curve.png` with the Hedge bound √(t ln n / 2)). Scripted players (Hedge,
follow-the-leader, uniform) are in agents/scripted/online_learning.py.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers
from pydantic import BaseModel, ConfigDict, Field

from agora.compat import NumericWorld
from agora.grammar import Grammar, alt, literal, seq
from agora.world import ParseError, Report, cached_per_agent, check_reply, world_config
from solvers.regret import cumulative_regret, simplex_grid

SUM_TOLERANCE = 0.01  # |Σ p − 1| allowed in text replies (then renormalised)
NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
PLAY_LINE = re.compile(r"^[ \t*_>#-]*play\b[ \t*]*(?::[ \t*]*)?(.*)", re.MULTILINE)  # of a lowercased text
PLAY_LABEL = "PLAY "  # how a reply starts (prompt, render_action and grammar)
MASS = 100  # replies write probabilities in hundredths: '0.25'; the whole mass is 1.00


def write_probability(hundredths: int) -> str:
    """25 -> '0.25', 100 -> '1.00': a probability as replies write it."""
    return f"{hundredths // MASS}.{hundredths % MASS:02d}"


def to_hundredths(p: np.ndarray, grid: int = MASS) -> np.ndarray:
    """A distribution as whole hundredths summing to exactly MASS, each a multiple of MASS / grid within 1 / grid
    of p_i: the floors of p * grid, plus one for the largest remainders (ties to the lower index), so the rounding
    never breaks the sum."""
    scaled = np.asarray(p, dtype=np.float64) * grid
    out = np.floor(scaled).astype(np.int64)
    short = int(np.clip(grid - out.sum(), 0, len(out)))
    out[np.argsort(out - scaled, kind="stable")[:short]] += 1
    return out * (MASS // grid)


@functools.lru_cache(maxsize=32)
def play_grammar(n_actions: int, grid: int = MASS) -> Grammar:
    """`PLAY p_0 ... p_{n-1}`: n two-decimal probabilities summing to exactly 1.00, each a multiple of 1 / grid
    (grid divides 100; 100: any hundredths).

    A DAG over the mass left: `rest(k, m)` writes the last k probabilities when m hundredths remain (k = 1:
    m itself); a probability below 1 is '0.', a tens digit d (at most m // 10), then `units(k, m - 10 d)`, a
    units digit u (at most what is left) and a space before `rest(k - 1, ...)`. Splitting the digits shares
    those nodes: about a third of the Lark text of one alternative per value (27k vs 75k characters at n = 3).
    On a coarser grid a units digit must complete a multiple of MASS / grid: `units(k, m, r)` allows u ≡ r.
    Built once per n (its regex, for `matches`, compiles once; at n >= 4 the regex is too large, GrammarTooLarge).
    """
    if grid < 1 or MASS % grid:
        raise ValueError(f"the grid must divide {MASS}, got {grid}")
    step = MASS // grid

    def digits(m: int, r: int) -> list[int]:
        return [u for u in range(min(9, m) + 1) if u % step == r]

    @functools.cache
    def rest(k: int, m: int):
        if k == 1:
            return literal(write_probability(m))
        tens = [d for d in range(min(9, m // 10) + 1) if digits(m - 10 * d, -10 * d % step)]
        below_one = [seq(f"0.{d}", units(k, m - 10 * d, -10 * d % step)) for d in tens]
        return alt(*below_one, *([seq(write_probability(MASS) + " ", rest(k - 1, 0))] if m == MASS else []))

    @functools.cache
    def units(k: int, m: int, r: int):
        return alt(*(seq(f"{u} ", rest(k - 1, m - u)) for u in digits(m, r)))

    return Grammar(seq(PLAY_LABEL, rest(n_actions, MASS)))


class OnlineLearningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_actions: int = Field(3, ge=2, le=20, description="number of actions (experts)")
    rounds: int = Field(20, ge=1, le=10_000, description="rounds T per episode")
    sequence: Literal["uniform", "gaussian", "alternating", "trending"] = Field(
        "uniform",
        description="loss sequence: uniform / gaussian (stochastic), alternating (adversarial to FTL), trending",
    )
    noise: float = Field(
        0.1, ge=0, le=1, description="std of the Gaussian noise of the gaussian and trending sequences"
    )
    show_rounds: int = Field(
        50,
        ge=1,
        le=10_000,
        description="text interface: the last N rounds' loss vectors shown in the prompt (totals cover all)",
    )
    agent_name: str = Field("learner", pattern=r"^[a-z][a-z0-9_]*$", description="the one seat")
    grid: Literal[1, 2, 4, 5, 10, 20, 25, 50, 100] = Field(
        MASS,
        description="replies write probabilities in multiples of 1/grid (a divisor of 100; 100: any hundredths); "
        "the reply grammar allows those only: a reply set a trainer can enumerate (regret_loss)",
    )


def loss_sequence(config: OnlineLearningConfig, rng: np.random.Generator) -> np.ndarray:
    """The (rounds, n_actions) loss vectors of one episode, in [0, 1]."""
    T, n = config.rounds, config.n_actions
    if config.sequence == "uniform":
        return rng.random((T, n))
    if config.sequence == "gaussian":
        means = rng.uniform(0.2, 0.8, n)
        return np.clip(means + config.noise * rng.standard_normal((T, n)), 0.0, 1.0)
    if config.sequence == "alternating":
        losses = np.ones((T, n))
        losses[:, 0] = np.arange(T) % 2 == 0  # rounds 1, 3, 5, ... punish action 0
        losses[:, 1] = np.arange(T) % 2 == 1
        losses[0, :2] = (0.5, 0.0)
        return losses
    start, end = rng.uniform(0.2, 0.8, n), rng.uniform(0.2, 0.8, n)
    fraction = np.arange(T)[:, None] / max(T - 1, 1)
    return np.clip(start + (end - start) * fraction + config.noise * rng.standard_normal((T, n)), 0.0, 1.0)


SIMPLEX_GRID = 4  # the numeric view's distributions have probabilities in quarters (`simplex_grid`)


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(NumericWorld, AECEnv):
    metadata = {"name": "online_learning_v0", "render_modes": ["ansi"], "is_parallelizable": True}
    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "regret": "external regret Reg_T",
        "regret_per_round": "regret per round Reg_T / T",
        "loss": "total loss",
        "best_fixed_loss": "best fixed action's total loss",
    }
    Config = OnlineLearningConfig

    def __init__(self, config: OnlineLearningConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__()
        self.config = world_config(OnlineLearningConfig, config, kwargs)
        self.possible_agents = [self.config.agent_name]
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.agents: list[str] = []
        self.losses = np.zeros((0, self.config.n_actions))
        self.plays: list[np.ndarray] = []

    @cached_per_agent
    def observation_space(self, agent: str) -> spaces.Space:
        T, n = self.config.rounds, self.config.n_actions
        # losses[t] = ℓ_t once revealed, −1 for rounds not played yet
        return spaces.Dict({"round": spaces.Discrete(T + 1), "losses": spaces.Box(-1.0, 1.0, (T, n), dtype=np.float64)})

    @cached_per_agent
    def action_space(self, agent: str) -> spaces.Space:
        # non-negative weights, played as p = w / Σw (uniform when Σw = 0)
        return spaces.Box(0.0, 1.0, (self.config.n_actions,), dtype=np.float64)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.losses = loss_sequence(self.config, self.np_random)
        self.plays = []
        self.agents = list(self.possible_agents)
        self.agent_selection = self.agents[0]
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}

    def observe(self, agent: str) -> dict[str, Any]:
        revealed = np.full((self.config.rounds, self.config.n_actions), -1.0)
        revealed[: len(self.plays)] = self.losses[: len(self.plays)]
        return {"round": len(self.plays), "losses": revealed}

    @staticmethod
    def distribution(action: Any) -> np.ndarray:
        """p = w / Σw of non-negative weights (negative entries count as 0; uniform when Σw = 0)."""
        w = np.clip(np.asarray(action, dtype=np.float64).ravel(), 0.0, None)
        return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        p = self.distribution(action)
        if len(p) != self.config.n_actions:
            raise ValueError(f"a play has {self.config.n_actions} weights, got {len(p)}")
        t = len(self.plays)
        self.plays.append(p)
        self.rewards = {agent: -float(self.losses[t] @ p)}
        if len(self.plays) >= self.config.rounds:
            self.truncations = {agent: True}
        self._accumulate_rewards()

    # --- numeric view (agora.compat) ----------------------------------------------------

    def action_table(self) -> list[str]:
        """The distributions whose probabilities are multiples of 1 / SIMPLEX_GRID (the pure actions among them),
        written as `PLAY` replies."""
        points = simplex_grid(self.config.n_actions, SIMPLEX_GRID)
        return [self.render_action(self.config.agent_name, p) for p in points]

    def table_action(self, agent: str, index: int) -> np.ndarray:
        return simplex_grid(self.config.n_actions, SIMPLEX_GRID)[index]

    def action_mask(self, agent: str) -> np.ndarray:
        return np.ones(len(simplex_grid(self.config.n_actions, SIMPLEX_GRID)), dtype=np.int8)

    @property
    def state_space(self) -> spaces.Box:
        """The round and the losses revealed so far (-1 for rounds to come): the learner's whole information."""
        T, n = self.config.rounds, self.config.n_actions
        high = np.ones(1 + T * n, np.float32)
        high[0] = T
        return spaces.Box(np.r_[0, -np.ones(T * n)].astype(np.float32), high, dtype=np.float32)

    def state(self) -> np.ndarray:
        observation = self.observe(self.config.agent_name)
        return np.r_[observation["round"], observation["losses"].reshape(-1)].astype(np.float32)

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "\n".join(
                f"round {t + 1}: p = {np.round(p, 3).tolist()}, loss = {self.losses[t] @ p:.3f}"
                for t, p in enumerate(self.plays)
            )
        return None

    def close(self) -> None:
        pass

    # --- regret -------------------------------------------------------------------------

    def regret_curve(self) -> np.ndarray:
        """Reg_t for t = 1..(rounds played)."""
        if not self.plays:
            return np.zeros(0)
        return cumulative_regret(self.losses[: len(self.plays)], np.asarray(self.plays))

    # --- text interface -----------------------------------------------------------------

    def prompt(self, agent: str, observation: dict[str, Any]) -> str:
        n, T = self.config.n_actions, self.config.rounds
        t = int(observation["round"])
        seen = np.asarray(observation["losses"])[:t]
        lines = [
            f"You choose among {n} actions (0 to {n - 1}) for {T} rounds. Each round you pick a probability for "
            "every action;",
            "then every action's loss (between 0 and 1) is revealed and you pay the expected loss of your "
            "probabilities.",
            "Goal: the smallest total loss.",
        ]
        if t:
            first = max(0, t - self.config.show_rounds)
            lines.append("Losses so far (round: " + ", ".join(f"action {a}" for a in range(n)) + "):")
            lines += [f"  {k + 1}: " + " ".join(f"{v:.2f}" for v in seen[k]) for k in range(first, t)]
            lines.append(
                "Total loss per action: "
                + ", ".join(f"action {a} {total:.2f}" for a, total in enumerate(seen.sum(axis=0)))
            )
        else:
            lines.append("No losses are known yet.")
        example = self.grid_reply(np.array([1.0, 1.0] + [0.0] * (n - 2)))
        grid = self.config.grid
        each = f" (each a multiple of {write_probability(MASS // grid)})" if grid < MASS else ""
        lines.append(
            f"This is round {t + 1} of {T}. Reply with one line: PLAY followed by {n} probabilities with two "
            f"decimals{each} that sum to 1.00, e.g.\n{example}"
        )
        return "\n".join(lines)

    @cached_per_agent
    def demonstration(self, agent: str) -> list[dict[str, str]]:
        """A worked first round (nothing about the real episode): no information yet, so uniform."""
        n = self.config.n_actions
        observation = {"round": 0, "losses": np.full((self.config.rounds, n), -1.0)}
        return [
            {"role": "user", "content": self.prompt(agent, observation)},
            {"role": "assistant", "content": self.grid_reply(np.full(n, 1.0 / n))},
        ]

    def grid_reply(self, p: np.ndarray) -> str:
        """The reply playing `p` rounded to the reply grid (multiples of 1 / grid, by largest remainder)."""
        return PLAY_LABEL + " ".join(map(write_probability, to_hundredths(self.distribution(p), self.config.grid)))

    def parse(self, agent: str, text: str) -> np.ndarray:
        """The distribution of exactly one `PLAY p_0 ... p_{n−1}` line.

        PLAY starts its line. Tolerated: letter case, markdown emphasis, a ':' after PLAY, commas
        between numbers, a sum off by at most 0.01 (renormalised). Not guessed: a missing line, two lines, a wrong
        count, a probability outside [0, 1], a sum that is not 1. Reads lines with one regex pass, in time linear
        in the text's length.
        """
        n = self.config.n_actions
        found = PLAY_LINE.findall(check_reply(text).lower())
        if not found:
            raise ParseError(f"no 'PLAY' line; write e.g. '{self.render_action(agent, np.ones(n))}'")
        if len(found) > 1:
            raise ParseError("more than one PLAY line; give exactly one")
        numbers = found[0].replace(",", " ").strip(" *.").split()
        leftover = next((x for x in numbers if len(x) > 32 or not NUMBER.fullmatch(x)), None)
        if leftover is not None:
            raise ParseError(f"PLAY must be followed by numbers only, found '{leftover[:30]}'")
        if len(numbers) != n:
            raise ParseError(f"PLAY needs exactly {n} probabilities (one per action 0..{n - 1}), got {len(numbers)}")
        p = np.array([float(x) for x in numbers])
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ParseError("every probability must be between 0 and 1")
        if abs(p.sum() - 1.0) > SUM_TOLERANCE:
            raise ParseError(f"the probabilities sum to {p.sum():.3g}; they must sum to 1")
        return p / p.sum()

    def render_action(self, agent: str, action: Any) -> str:
        """The distribution of `action` in hundredths (`to_hundredths`): exact for actions on that grid."""
        return PLAY_LABEL + " ".join(map(write_probability, to_hundredths(self.distribution(action))))

    def reply_grammar(self, agent: str, observation: dict[str, Any]) -> Grammar:
        """Two-decimal probabilities summing to exactly 1.00 (`play_grammar`): what the prompt asks for and
        `render_action` writes, a subset of what `parse` takes."""
        return play_grammar(self.config.n_actions, self.config.grid)

    def fallback_action(self, agent: str, rng: np.random.Generator) -> np.ndarray:
        """A Dirichlet(1, ..., 1) draw on the reply grid (so its text is exactly the action)."""
        return to_hundredths(rng.dirichlet(np.ones(self.config.n_actions)), self.config.grid) / MASS

    def episode_metrics(self) -> dict[str, float]:
        T = len(self.plays)
        curve = self.regret_curve()
        played = self.losses[:T]
        return {
            "loss": float(sum(played[t] @ p for t, p in enumerate(self.plays))),
            "best_fixed_loss": float(played.sum(axis=0).min()) if T else 0.0,
            "regret": float(curve[-1]) if T else 0.0,
            "regret_per_round": float(curve[-1] / T) if T else 0.0,
        }

    def episode_info(self) -> dict[str, Any]:
        return {
            "losses": self.losses[: len(self.plays)].tolist(),
            "plays": [p.tolist() for p in self.plays],
            "grid": self.config.grid,
        }

    def run_report(self, episodes: list) -> Report:
        """The mean regret curve Reg_t over the run's episodes (series `regret_curve`, figure), and Reg_T/T vs √T/T."""
        from matplotlib.figure import Figure

        report = Report()
        curves = [
            cumulative_regret(np.asarray(e.info["losses"]), np.asarray(e.info["plays"]))
            for e in episodes
            if e.info.get("plays")
        ]
        if not curves:
            return report
        length = min(len(c) for c in curves)
        mean = np.mean([c[:length] for c in curves], axis=0)
        t = np.arange(1, length + 1)
        report.series["regret_curve"] = [(int(k), float(v)) for k, v in zip(t, mean)]
        report.metrics["eval/hedge_bound_per_round"] = float(
            np.sqrt(length * np.log(self.config.n_actions) / 2) / length
        )
        figure = Figure(figsize=(7, 4), layout="constrained")
        ax = figure.subplots()
        ax.plot(t, mean, label="mean Reg_t")
        ax.plot(
            t, np.sqrt(t * np.log(self.config.n_actions) / 2), ls="--", color="grey", label="Hedge bound √(t ln n / 2)"
        )
        ax.set(title=f"external regret, {self.config.sequence} losses", xlabel="round t", ylabel="Reg_t")
        ax.legend()
        report.figures["figures/regret_curve.png"] = figure
        return report
