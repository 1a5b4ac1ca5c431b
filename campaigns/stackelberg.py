"""The `stackelberg` campaign kind: the economy's tax planner (the leader) trained by group-relative policy gradient
on the social welfare its schedules produce, the workers (the followers) responding in the inner loop ("LLM
Economist", arXiv 2507.15815; GRPO: "DeepSeekMath", arXiv 2402.03300).

    for iteration in 0 .. iterations-1:
        every `evaluation.every` iterations (and before the first): the held-out populations (eval/*)
        play `groups_per_iteration` worker populations x `group_size` episodes each: a group shares the
            population and the seed, so only the planner's sampling differs within it
        the planner's return = its social welfare per step after the warm-up (`planner_swf`)
        trainer.update(episodes, [planner]) -> the LoRA weights change (train/*, leader/*, follower/*)
        checkpoint
    a final evaluation; the welfare comparison table, the per-population table and a figure per level.

It is a train campaign underneath (campaigns/train.py): the learner plays the `planner` seat, `workers` every
`worker_*` seat; rollouts, updates, checkpoints and `--resume` into the same MLflow run are the train kind's. What
differs: the return, the metrics per level, and the evaluation (campaigns/stackelberg_welfare.py), which puts the
planner next to Saez, US federal, flat and the numerical Stackelberg optimum on the same held-out populations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agora.campaign import CampaignConfig, CampaignResult, Summary
from agora.errors import ScenarioError
from agora.scenario import AgentSpec, WorldSpec
from agora.trajectory import Episode
from campaigns.evaluation import evaluate, is_interval_bound
from campaigns.learner import LearnerKeys
from campaigns.stackelberg_figures import follower_figure, leader_figure, welfare_steps_figure
from campaigns.stackelberg_welfare import (
    TABLE_ONLY,
    Baselines,
    comparison_table,
    population_table,
    welfare_metrics,
)
from campaigns.train import TrainCampaign, TrainRunner
from campaigns.train_spec import CheckpointSpec, TrainConfig, TrainerSpec, relabel
from worlds.economy import PLANNER

WORKERS = "worker_*"  # the followers' seats
LEADER_KEYS = ("planner_swf", "swf", "tax_revenue")  # the leader's episode metrics (and its rates, rate/b<j>)


class EconomySpec(WorldSpec):
    """`world: {<economy parameter>: <value>, ...}` (`id` may be left out: the economy is the only world)."""

    id: str = Field("economy", description="the economy world (the only one with a Stackelberg leader)")


class WelfareEvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    populations: int = Field(8, ge=2, le=100_000, description="held-out worker populations (seeds)")
    every: int = Field(
        0,
        ge=0,
        le=100_000,
        description="evaluate before every N-th iteration (0: only before the first and after the last)",
    )
    seed: int = Field(1_000_003, ge=0, description="root seed of the held-out populations (never a training seed)")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="the planner's sampling temperature (0: greedy)")


class StackelbergConfig(CampaignConfig):
    """A stackelberg campaign file (`kind: stackelberg`)."""

    world: EconomySpec = EconomySpec()
    learner: LearnerKeys = Field(LearnerKeys(), description="the LLM that plays the planner, with LoRA")
    workers: AgentSpec = Field(
        AgentSpec(policy="best_response"), description="the policy of every worker: best_response, or an LLM/server"
    )
    trainer: TrainerSpec = TrainerSpec(id="grpo")
    iterations: int = Field(ge=1, le=1_000_000, description="training iterations (one update each)")
    groups_per_iteration: int = Field(2, ge=1, le=100_000, description="worker populations per iteration")
    group_size: int = Field(4, ge=2, le=4096, description="episodes per population: the GRPO group")
    evaluation: WelfareEvaluationSpec = WelfareEvaluationSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    concurrency: int = Field(16, ge=1, le=4096, description="episodes stepped together (LLM turns batched across them)")
    max_retries: int = Field(1, ge=0, le=10, description="re-prompts after unparseable text, before a fallback action")
    max_staleness: ClassVar[int] = 0  # rollouts play the current weights (in this process)


class StackelbergCampaign(TrainCampaign):
    """The economy's planner trained by GRPO on the welfare of its schedules, workers best-responding (or LLMs)."""

    Config = StackelbergConfig
    learner_policies = ("llm",)  # the planner's replies are schedules: no plan-execute planner (yet)
    ray_workers = False  # rollouts play in this process

    def __init__(self, spec: StackelbergConfig, *, source: str | None = None, text: str | None = None):
        if spec.world.id != "economy":
            raise ScenarioError(
                f"a stackelberg campaign trains the economy's planner, not a {spec.world.id!r} world",
                file=source,
                path="world.id",
                hint="remove world.id (or set it to economy)",
            )
        world = spec.world.model_extra or {}
        if world.get("democratic"):
            raise ScenarioError(
                "in democratic mode the workers elect the schedule and the planner is passive: nothing to train",
                file=source,
                path="world.democratic",
                hint="remove democratic (or set it to false)",
            )
        train = TrainConfig.model_validate(
            {
                **spec.model_dump(include={"name", "description", "seed", "tracking", "execution", "iterations"}),
                **spec.model_dump(include={"groups_per_iteration", "group_size", "checkpoint", "concurrency"}),
                "max_retries": spec.max_retries,
                "world": spec.world.model_dump(),
                "learner": {"seats": [PLANNER], **spec.learner.model_dump()},
                "opponents": {WORKERS: spec.workers.model_dump()},
                "trainer": spec.trainer.model_dump(),
                "evaluation": {"episodes": spec.evaluation.populations, "seed": spec.evaluation.seed},
            }
        )
        try:
            super().__init__(train, source=source, text=text)
        except ScenarioError as exc:
            raise relabel(exc, f"opponents.{WORKERS}", "workers", source) from None
        self.spec = spec  # the file's keys; the train campaign's are `train_spec`
        self.train_spec = train
        self.evaluations = {"planner": self.train}
        self.world_config = self.train.world_config

    @classmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        return {
            "name": "example-stackelberg",
            "world": {"num_workers": 10, "steps": 3, "tax_period": 1, "warmup": 1, "brackets": "three"},
            "learner": {"model": model, "max_new_tokens": 12, "demonstrations": False, "lora": {"r": 4, "alpha": 8}},
            "iterations": 1,
            "groups_per_iteration": 1,
            "group_size": 2,
            "evaluation": {"populations": 2},
        }

    def resolved_config(self) -> dict[str, Any]:
        train = super().resolved_config()
        out = self.spec.model_dump(mode="json", exclude={"world", "learner", "workers", "trainer"})
        out["world"], out["trainer"] = train["world"], train["trainer"]
        out["learner"] = {k: v for k, v in train["learner"].items() if k != "seats"}
        out["workers"] = train["opponents"]["worker_0"]  # every worker plays the same policy
        return out

    def describe(self) -> str:
        c = self.world_config
        return (
            f"stackelberg campaign, economy of {c.num_workers} workers ({self.spec.workers.policy}), "
            f"{c.brackets} brackets, planner {self.learner_config.model} trained by {self.trainer_entry.name}, "
            f"{self.spec.iterations} iterations of {self.spec.groups_per_iteration} x {self.spec.group_size} episodes"
        )

    def start(
        self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None
    ) -> StackelbergRunner:
        return StackelbergRunner(self, resume=resume, tracking_uri=tracking_uri, track=track)


def level_metrics(episodes: list[Episode]) -> dict[str, float]:
    """leader/* (the planner's welfare and final rates) and follower/* (the workers' hours, utility, gap to the
    best response), means over the episodes."""
    keys = {k for e in episodes for k in e.metrics}
    out = {}
    for key in sorted(keys):
        level = "leader" if key in LEADER_KEYS or key.startswith("rate/") else "follower"
        out[f"{level}/{key}"] = float(np.mean([e.metrics[key] for e in episodes if key in e.metrics]))
    return out


class StackelbergRunner(TrainRunner):
    """A train runner whose learner is the planner, rewarded with its social welfare, evaluated on held-out
    populations against the fixed schedules and the optimum."""

    progress = {
        "leader/planner_swf": "planner welfare",
        "train/loss": "loss",
        "train/kl": "kl",
        "train/zero_variance_groups": "zero-variance groups",
        "follower/br_gap": "followers' gap to best response",
    }
    table_only = TABLE_ONLY

    def __init__(self, campaign: StackelbergCampaign, **kwargs: Any):
        self.baselines = Baselines(campaign.world_config, campaign.world_config.cutoffs())
        self.played: list[Episode] = []  # the last iteration's training episodes
        super().__init__(campaign, **kwargs)

    def open_run(self, tags: dict[str, str], **kwargs: Any) -> None:
        super().open_run({**tags, "agora.kind": "stackelberg"}, **kwargs)

    def training_episodes(self, iteration: int, seats=None, policy_ids=None) -> list[Episode]:
        """The train kind's groups, with the planner's return its welfare per step after the warm-up."""
        episodes = super().training_episodes(iteration, seats, policy_ids)
        for episode in episodes:
            episode.returns[PLANNER] = episode.metrics["planner_swf"]
        self.played = episodes
        return episodes

    def iteration(self, i: int) -> dict[str, float]:
        metrics = super().iteration(i)
        for key in {k for e in self.played for k in e.metrics}:  # the world's means, by level instead of train/*
            metrics.pop(f"train/{key}", None)
        metrics.update(level_metrics(self.played))
        return metrics

    def evaluate(self, played: dict[str, list[Episode]] | None = None) -> dict[str, float]:
        """The held-out populations played greedily (or at `evaluation.temperature`): welfare against the fixed
        schedules and the optimum (campaigns/stackelberg_welfare.py) and the planner's parse rates."""
        spec, played = self.campaign.spec.evaluation, {} if played is None else played
        rates = evaluate(
            self.campaign, self.model, self.tokenizer, played, episodes=spec.populations, temperature=spec.temperature
        )
        out = welfare_metrics(played["planner"], self.baselines)
        out["eval/parse_failure_rate"] = rates["eval/planner/parse_failure_rate"]
        out["eval/fallback_rate"] = rates["eval/planner/fallback_rate"]
        return out

    def log_evaluation(self, result: CampaignResult, step: int) -> None:
        """The evaluation's metrics (not the interval bounds and per-population values: those are table columns),
        and the two tables rebuilt from every evaluation so far."""
        metrics = result.evaluations[step]
        self.log({k: v for k, v in metrics.items() if not is_interval_bound(k)}, step=step)
        if self.tracker:
            self.tracker.log_table(
                comparison_table(result.evaluations), "economy/welfare_comparison.json", replace=True
            )
            self.tracker.log_table(
                population_table(result.evaluations), "economy/welfare_populations.json", replace=True
            )

    def finish(self, result: CampaignResult) -> None:
        """The final evaluation (step `iterations`), the tables and a figure per level."""
        final = self.campaign.spec.iterations
        result.evaluations[final] = self.evaluate()
        self.log_evaluation(result, final)
        result.outputs["welfare_comparison"] = comparison_table(result.evaluations)
        if self.tracker:
            self.tracker.log_figure(leader_figure(result.history, result.evaluations), "figures/leader.png")
            self.tracker.log_figure(follower_figure(result.history), "figures/follower.png")
            self.tracker.log_figure(
                welfare_steps_figure(result.evaluations, self.campaign.world_config.warmup),
                "figures/welfare_over_steps.png",
            )

    def summary(self, result: CampaignResult) -> Summary:
        """Every policy's welfare on the held-out populations (95% CI), its paired difference to Saez and its share
        of the optimum."""
        table = comparison_table(result.evaluations)
        rows = [
            [
                name,
                f"{table['swf'][k]:.4g} [{table['swf_ci_low'][k]:.4g}, {table['swf_ci_high'][k]:.4g}]",
                f"{table['minus_saez'][k]:+.4g} [{table['minus_saez_ci_low'][k]:+.4g}, "
                f"{table['minus_saez_ci_high'][k]:+.4g}]",
                f"{table['share_of_optimum'][k]:.3f}",
            ]
            for k, name in enumerate(table["policy"])
        ]
        n = self.campaign.spec.evaluation.populations
        return Summary(
            f"{self.campaign.name}: social welfare per step on {n} held-out populations",
            ["policy", "welfare (95% CI)", "minus Saez (95% CI, paired)", "share of optimum"],
            rows,
        )
