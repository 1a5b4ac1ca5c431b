"""A throwaway Agora plug-in, installed on the fly by tests/test_plugins.py: one unit of every extension point.

- `Guess`: a world (one player guesses a digit in a few tries);
- `AlwaysSeven`: an agent for it;
- `CountingTrainer`: a trainer that counts the learner's decisions (it changes no weight);
- `CountCampaign`: a campaign kind that plays the world and counts hits.

`AGORA_TOY_BROKEN=1` breaks the world's `render_action`, which the conformance test must catch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv
from pydantic import BaseModel, ConfigDict, Field

from agora.campaign import CampaignConfig, CampaignKind, CampaignResult, CampaignRunner, RunFolder
from agora.policy import ActRequest, ActResponse, Policy
from agora.rollout import Rollout
from agora.trainer import Trainer
from agora.world import ParseError

PLAYER = "player"


class GuessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tries: int = Field(3, ge=1, le=10, description="guesses per episode")


class Guess(AECEnv):
    """Guess the seeded digit in a few tries; reward 1 for the right one."""

    metadata = {"name": "guess_v0", "render_modes": ["ansi"], "is_parallelizable": True}
    Config = GuessConfig

    def __init__(self, config: GuessConfig | None = None, render_mode: str | None = None, **settings: Any):
        super().__init__()
        self.config = config or GuessConfig(**settings)
        self.render_mode = render_mode
        self.possible_agents = [PLAYER]
        self._observation_space = spaces.Discrete(self.config.tries + 1)
        self._action_space = spaces.Discrete(10)

    def observation_space(self, agent: str):
        return self._observation_space

    def action_space(self, agent: str):
        return self._action_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.target = int(np.random.default_rng(seed).integers(10))
        self.agents, self.left, self.hit = [PLAYER], self.config.tries, False
        self.rewards, self._cumulative_rewards = {PLAYER: 0.0}, {PLAYER: 0.0}
        self.terminations, self.truncations, self.infos = {PLAYER: False}, {PLAYER: False}, {PLAYER: {}}
        self.agent_selection = PLAYER

    def observe(self, agent: str) -> np.int64:
        return np.int64(self.left)

    def step(self, action: Any) -> None:
        if self.terminations[PLAYER] or self.truncations[PLAYER]:
            return self._was_dead_step(action)
        self._cumulative_rewards[PLAYER] = 0.0
        self.left -= 1
        hit = int(action) == self.target
        self.hit |= hit
        self.rewards = {PLAYER: float(hit)}
        self.terminations[PLAYER] = hit or self.left == 0
        self._accumulate_rewards()

    def render(self) -> str | None:
        return f"{self.left} tries left" if self.render_mode == "ansi" else None

    def close(self) -> None:
        pass

    # the text interface
    def prompt(self, agent: str, observation: Any) -> str:
        return f"Guess a digit from 0 to 9 ({observation} tries left). Reply: GUESS <digit>"

    def parse(self, agent: str, text: str) -> int:
        match = re.fullmatch(r"\s*GUESS\s+([0-9])\s*", text)
        if not match:
            raise ParseError("reply GUESS <digit>, e.g. GUESS 4")
        return int(match.group(1))

    def render_action(self, agent: str, action: Any) -> str:
        return f"GUESS {(int(action) + 1) % 10 if os.environ.get('AGORA_TOY_BROKEN') else int(action)}"

    def fallback_action(self, agent: str, rng: np.random.Generator) -> int:
        return int(rng.integers(10))

    def episode_metrics(self) -> dict[str, float]:
        return {"hit": float(self.hit)}


class AlwaysSeven(Policy):
    """Guesses 7, every time."""

    world = "guess"
    uses_text = True

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        return [ActResponse("GUESS 7") for _ in requests]


class CountingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, description="what each decision counts for")


class CountingTrainer(Trainer):
    """Counts the decisions the learner made (changes no weight)."""

    Config = CountingConfig

    def __init__(self, model: Any, config: CountingConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.seen = 0.0

    def update(self, episodes: list, seats: list[str]) -> dict[str, float]:
        self.seen += self.config.weight * sum(s.agent in seats for e in episodes for s in e.steps)
        return {"train/decisions_seen": self.seen}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str | None = None
    keep: int = 2


class CountConfig(CampaignConfig):  # name, description, seed, tracking
    iterations: int = Field(ge=1)
    episodes: int = Field(4, ge=1)
    checkpoint: CheckpointSpec = CheckpointSpec()


class CountCampaign(CampaignKind):
    """Plays the guess world with AlwaysSeven and counts the hits."""

    Config = CountConfig

    @classmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        return {"name": "count-example", "iterations": 1, "episodes": 3}

    def describe(self) -> str:
        return f"count campaign, {self.spec.iterations} iterations of {self.spec.episodes} guess games"

    def resolved_config(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    def start(self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None) -> CountRunner:
        return CountRunner(self, resume=resume, tracking_uri=tracking_uri, track=track)


class CountRunner(CampaignRunner):
    progress = {"toy/hits": "hits"}

    def __init__(self, campaign: CountCampaign, *, resume: bool, tracking_uri: str | None, track: bool | None):
        super().__init__(campaign, resume=resume)
        self.hits = 0.0
        if self.resumed_from:
            state = RunFolder.load(self.resumed_from)
            self.hits, self.first_iteration = state["hits"], state["iteration"] + 1
        self.open_run({"agora.kind": "count"}, tracking_uri=tracking_uri, track=track)

    def iterate(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        spec = self.campaign.spec
        for i in range(self.first_iteration, spec.iterations):
            player = AlwaysSeven(AlwaysSeven.Config(), seed=i)
            episodes = Rollout(Guess, {PLAYER: player}, {PLAYER: "seven"}, seed=spec.seed + i).run(spec.episodes)
            self.hits += sum(e.metrics["hit"] for e in episodes)
            metrics = {"toy/hits": self.hits}
            self.log(metrics, i)
            result.checkpoint = self.checkpoint(i, {"hits": self.hits})
            result.history[i], result.iterations_done = metrics, i + 1
            if on_iteration:
                on_iteration(i, metrics)


def install(folder: Path, extra_entry_points: str = "") -> Path:
    """Put this module on `folder` as the package `agora_toy` with its distribution metadata and entry points
    (`extra_entry_points`: more lines of entry_points.txt, e.g. a broken one)."""
    (folder / "agora_toy").mkdir(parents=True)
    (folder / "agora_toy" / "__init__.py").write_text(Path(__file__).read_text())
    info = folder / "agora_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agora-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[agora.worlds]\nguess = agora_toy:Guess\n\n[agora.agents]\nalways_seven = agora_toy:AlwaysSeven\n\n"
        "[agora.trainers]\ncounting = agora_toy:CountingTrainer\n\n[agora.campaigns]\ncount = agora_toy:CountCampaign\n"
        + extra_entry_points
    )
    return folder
