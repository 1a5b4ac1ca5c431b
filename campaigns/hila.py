"""The `hila` campaign kind: HILA's dual loop on the deferral world ("Adaptive Collaboration with Humans:
Metacognitive Policy Optimization for Multi-Agent LLMs with Continual Learning", arXiv 2603.07972).

The learner (an LLM with LoRA) plays every team seat; the expert is simulated, a person at the terminal
(`policy: human`) or a server agent. The schedule:

    evaluate on held-out problems (before training)
    for loop in 0 .. loops-1:
        inner: `iterations` campaign steps, each: play `problems_per_iteration` problems; every decision of a
               round >= 1 -> a group of all its candidates replayed (`campaigns.hila_groups`) -> one GRPO
               update (inner/*)
        [evaluate (inner/eval/*), with evaluation.after_inner]
        outer, in the loop's last step: fine-tune on the expert's answers to the inner phase's deferred problems
               (`campaigns.hila_outer`, `trainers.sft`) (outer/*)
        evaluate (eval/*): the trained team against never-defer, always-defer, defer-when-disagree and the
               oracle (`campaigns.hila_eval`), 95% intervals, paired verdicts

Metric steps are campaign steps (loops x iterations); evaluations are logged at the step after the one they
follow. A checkpoint follows every `checkpoint.every` steps and the last; `--resume` continues from the newest
into the same MLflow run (a step cut short is played again whole).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agora.campaign import CampaignConfig, CampaignResult, CampaignRunner, Summary
from agora.checkpoint import RunFolder, restore_learner, save_learner, write_torch
from agora.errors import ScenarioError
from agora.policy import ActRequest
from agora.rollout import GroupRollout, Rollout, policy_seed
from agora.run import build_policies
from agora.scenario import AgentSpec, WorldSpec, resolve_scenario
from agora.trajectory import Episode
from agora.world import ParseError
from campaigns.hila_eval import (
    TEAMS,
    TRAINED,
    VERDICT_COLUMNS,
    evaluation_metrics,
    evaluations_figure,
    level_figure,
    team_worlds,
    verdict_rows,
)
from campaigns.hila_groups import decision_groups, group_samples, group_statistics, played_expert
from campaigns.hila_outer import sft_pairs
from campaigns.learner import LearnerCampaign, LearnerKeys
from campaigns.train_spec import CheckpointSpec, relabel
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.sft import SFTConfig, SFTPair, SFTTrainer
from worlds.deferral import tradeoff_figure
from worlds.deferral.replay import ExpertReply
from worlds.deferral.rules import EXPERT
from worlds.deferral.world import raw_env


class HILAEvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    problems: int = Field(12, ge=2, le=100_000, description="held-out problems per evaluation")
    seed: int = Field(1_000_003, ge=0, description="root seed of the held-out problems (never a training seed)")
    after_inner: bool = Field(True, description="evaluate after each inner phase too (always: before and after loops)")


class HILAConfig(CampaignConfig):
    """A HILA campaign file (`kind: hila`)."""

    world: WorldSpec
    learner: LearnerKeys = Field(LearnerKeys(), description="the LLM with LoRA playing every team seat")
    expert: AgentSpec = Field(
        AgentSpec(policy="simulated"), description="the expert seat: simulated, human (the terminal) or server"
    )
    loops: int = Field(2, ge=1, le=10_000, description="dual loops: an inner GRPO phase, then an outer SFT phase")
    iterations: int = Field(2, ge=1, le=100_000, description="GRPO updates per inner phase")
    problems_per_iteration: int = Field(8, ge=1, le=100_000, description="problems played per GRPO update")
    grpo: GRPOConfig = Field(GRPOConfig(learning_rate=5e-5), description="the inner loop's loss and optimiser")
    sft: SFTConfig = Field(SFTConfig(), description="the outer loop's fine-tuning")
    evaluation: HILAEvaluationSpec = HILAEvaluationSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    concurrency: int = Field(16, ge=1, le=4096, description="problems played together (LLM turns batched)")
    max_retries: int = Field(1, ge=0, le=10, description="re-prompts after unparseable text, before a fallback")


class HILACampaign(LearnerCampaign):
    """HILA's dual loop: GRPO on the team's metacognitive decisions, SFT on the expert's answers."""

    Config = HILAConfig

    def __init__(self, spec: HILAConfig, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        if spec.world.id != "deferral":
            raise ScenarioError(
                f"a hila campaign plays the deferral world, not {spec.world.id!r}",
                file=source,
                path="world.id",
                hint="world: {id: deferral, ...}",
            )
        base = {"name": spec.name, "world": spec.world.model_dump(), "episodes": 1, "seed": spec.seed}
        rounds = (spec.world.model_extra or {}).get("rounds", 3)
        team = [f"agent_{i}" for i in range((spec.world.model_extra or {}).get("team_size", 3))]
        try:
            self.scenario = resolve_scenario(
                {**base, "agents": {**{s: {"policy": "llm"} for s in team}, EXPERT: spec.expert.model_dump()}},
                source=source,
            )
        except ScenarioError as exc:
            raise relabel(relabel(exc, f"agents.{EXPERT}", "expert", source), "agents", "world", source) from None
        self.world_config = self.scenario.world_config
        self.team = [s for s in self.scenario.seats if s != EXPERT]
        if rounds < 2 or self.world_config.rounds < 2:
            raise ScenarioError(
                "the team decides (EVAL / CREATE / DEFER) only from round 1 on: one round leaves nothing to train",
                file=source,
                path="world.rounds",
                hint="use rounds: 3 (two decision rounds)",
            )

    @property
    def iterations(self) -> int:
        """Campaign steps: one per GRPO update; the last of each loop also runs its outer phase."""
        return self.spec.loops * self.spec.iterations

    def ends_loop(self, step: int) -> bool:
        """Whether step `step` is its loop's last GRPO update (the outer phase follows in the same step)."""
        return (step + 1) % self.spec.iterations == 0

    @classmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        return {
            "name": "example-hila",
            "world": {"id": "deferral", "rounds": 2, "kinds": {"arithmetic": 1.0}, "difficulties": [1]},
            "learner": {"model": model, "max_new_tokens": 8, "lora": {"r": 4, "alpha": 8}},
            "loops": 1,
            "iterations": 1,
            "problems_per_iteration": 2,
            "sft": {"epochs": 1},
            "evaluation": {"problems": 2, "after_inner": False},
        }

    def describe(self) -> str:
        s = self.spec
        return (
            f"hila on deferral ({len(self.team)} agents, {self.world_config.rounds} rounds, expert "
            f"{self.scenario.seats[EXPERT].entry.name}): {s.loops} loops x ({s.iterations} GRPO updates of "
            f"{s.problems_per_iteration} problems + SFT), {s.evaluation.problems} held-out problems"
        )

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(mode="json", exclude={"world", "learner", "expert"})
        out["world"] = self.scenario.world_json()
        out["learner"] = {"lora": self.spec.learner.lora.model_dump(), **self.learner_keys()}
        seat = self.scenario.seats[EXPERT]
        out["expert"] = {"policy": seat.entry.name, **seat.config.model_dump(mode="json")}
        return out

    def file_config(self) -> dict[str, Any]:
        out = super().file_config()
        out["world"] = self.scenario.world_json()
        # a judge's keys depend on its kind (filled in, the outcome judge's would not validate): as written
        grpo = self.spec.grpo
        out["grpo"] = grpo.model_dump(mode="json", exclude={"judge"})
        if "judge" in grpo.model_fields_set:
            out["grpo"]["judge"] = grpo.judge.model_dump(mode="json", exclude_unset=True)
        return out

    def start(self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None):
        return HILARunner(self, resume=resume, tracking_uri=tracking_uri, track=track)


class HILARunner(CampaignRunner):
    """The learner, its two trainers, the expert and the MLflow run of one HILA campaign."""

    progress = {
        "inner/reward_played": "reward",
        "inner/deferral_rate": "deferral rate",
        "inner/loss": "loss",
        "outer/loss": "sft loss",
    }

    def __init__(self, campaign: HILACampaign, *, resume: bool = False, tracking_uri=None, track=None):
        super().__init__(campaign, resume=resume)
        spec = campaign.spec
        self.model, self.tokenizer, self.learner = campaign.load_learner()
        self.expert = build_policies(campaign.scenario, skip=campaign.team, seed=spec.seed)[EXPERT]
        pad = self.tokenizer.pad_token_id
        self.grpo = GRPOTrainer(self.model, spec.grpo, pad_id=pad, seed=policy_seed(spec.seed, "trainer"))
        self.grpo.tokenizer = self.tokenizer  # the decisions' grammar masks are replayed with it
        self.sft = SFTTrainer(self.model, spec.sft, pad_id=pad, seed=policy_seed(spec.seed, "sft"))
        self.evaluations: list[dict[str, Any]] = []  # every evaluation: {step, after, metrics}, in order
        self.pairs: list[SFTPair] = []  # the current inner phase's expert answers, for the next outer phase
        self.result = CampaignResult(None, None)
        if self.resumed_from:
            self.restore(self.resumed_from)
        self.open_run(
            {
                "agora.kind": "hila",
                "agora.world": "deferral",
                "agora.expert": campaign.scenario.seats[EXPERT].entry.name,
            },
            tracking_uri=tracking_uri,
            track=track,
        )

    # checkpoints
    def save(self, step: int) -> Path:
        state = {"history": self.result.history, "evaluations": self.result.evaluations, "all": self.evaluations}

        def write(folder: Path) -> None:
            save_learner(folder, self.model, self.grpo, {"learner": self.learner, EXPERT: self.expert})
            write_torch(self.sft.state_dict(), folder / "sft.pt")
            write_torch([(p.prompt_ids, p.answer_ids) for p in self.pairs], folder / "pairs.pt")

        return self.checkpoint(step, state, write, keep=self.campaign.spec.checkpoint.keep)

    def restore(self, folder: Path) -> None:
        import torch

        state = RunFolder.load(folder)
        self.result.history = {int(k): v for k, v in state["history"].items()}
        self.result.evaluations = {int(k): v for k, v in state["evaluations"].items()}
        self.evaluations = state["all"]
        restore_learner(folder, self.model, self.grpo, {"learner": self.learner, EXPERT: self.expert})
        self.sft.load_state_dict(torch.load(folder / "sft.pt", weights_only=False))
        self.pairs = [SFTPair(p, a) for p, a in torch.load(folder / "pairs.pt", weights_only=False)]
        self.first_iteration = int(state["iteration"]) + 1

    # the expert
    def expert_for(self, episode: Episode) -> ExpertReply:
        """The expert's reply to `episode`'s problem in every replay: the one it gave in play, else (nobody
        deferred) asked once, as in play (prompt, grammar, a seed of the problem's)."""
        given = [played_expert(episode)]

        def reply(observation: dict[str, Any], world: raw_env) -> Any:
            if given[0] is None:
                given[0] = self.ask_expert(episode, observation, world)
            return given[0]

        return reply

    def ask_expert(self, episode: Episode, observation: dict[str, Any], world: raw_env) -> Any:
        request = ActRequest(
            episode=episode.index,
            agent=EXPERT,
            observation=observation,
            messages=[{"role": "user", "content": world.prompt(EXPERT, observation)}],
            action_space=world.action_space(EXPERT),
            seed=policy_seed(episode.seed, "expert"),
            grammar=world.reply_grammar(EXPERT),
        )
        response = self.expert.act([request])[0]
        if response.action is not None:
            return response.action
        try:
            return world.parse(EXPERT, response.text)
        except ParseError:
            return world.fallback_action(EXPERT, np.random.default_rng(episode.seed))

    # playing
    def play(self, learner, seeds: list[int] | None, *, seed: int, count: int) -> list[Episode]:
        spec, campaign = self.campaign.spec, self.campaign
        seats = {**{s: learner for s in campaign.team}, EXPERT: self.expert}
        ids = {**{s: "learner" for s in campaign.team}, EXPERT: campaign.scenario.seats[EXPERT].entry.name}
        options = {"seed": seed, "concurrency": spec.concurrency, "max_retries": spec.max_retries}
        self.model.eval()
        if seeds is None:
            return Rollout(campaign.scenario.make_world, seats, ids, **options).run(count)
        return GroupRollout(campaign.scenario.make_world, seats, ids, seeds=seeds, group_size=1, **options).run(count)

    def evaluate(self) -> dict[str, float]:
        """The held-out problems played by the learner's team (a sampler reseeded alike every time), then every
        team's metrics (`campaigns.hila_eval`)."""
        spec, campaign = self.campaign.spec, self.campaign
        learner = campaign.learner_for(
            seed=policy_seed(spec.evaluation.seed, "learner"),
            model=self.model,
            tokenizer=self.tokenizer,
        )
        episodes = self.play(learner, None, seed=spec.evaluation.seed, count=spec.evaluation.problems)
        return evaluation_metrics(team_worlds(episodes, campaign.world_config, self.expert_for))

    def inner(self, step: int) -> dict[str, float]:
        """One GRPO update on the groups of `problems_per_iteration` freshly played problems."""
        from agora.rollout import episode_seed

        spec, campaign, start = self.campaign.spec, self.campaign, time.perf_counter()
        n = spec.problems_per_iteration
        seeds = [episode_seed(spec.seed, step * n + g) for g in range(n)]
        episodes = self.play(self.learner, seeds, seed=spec.seed, count=n)
        played_seconds = time.perf_counter() - start
        groups = decision_groups(episodes, campaign.world_config, campaign.team, self.expert_for)
        samples = group_samples(groups, self.model, self.tokenizer, self.grpo.scoring_masks())
        metrics = {
            f"inner/{k.removeprefix('train/')}" if k.startswith("train/") else k: v
            for k, v in self.grpo.step(samples).items()
        }
        metrics.update(group_statistics(groups))
        metrics["inner/accuracy"] = float(np.mean([e.metrics["correct"] for e in episodes]))
        metrics["inner/expert_answered"] = float(np.mean([played_expert(e) is not None for e in episodes]))
        self.pairs += sft_pairs(episodes, campaign.world_config, campaign.team, self.tokenizer)
        metrics["perf/rollout_seconds"] = played_seconds
        metrics["perf/step_seconds"] = time.perf_counter() - start
        return metrics

    def outer(self) -> dict[str, float]:
        """Fine-tuning on the inner phase's expert answers; the pairs are used once."""
        metrics = {
            f"outer/{k.removeprefix('sft/')}" if k.startswith("sft/") else k: v
            for k, v in self.sft.step(self.pairs).items()
        }
        self.pairs = []
        return metrics

    def new_result(self) -> CampaignResult:
        result = self.result
        result.run_id, result.tracking_uri = (self.tracker.run_id, self.tracker.uri) if self.tracker else (None, None)
        result.iterations_done, result.checkpoint = self.first_iteration, self.resumed_from
        return result

    def iterate(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        campaign = self.campaign
        if not self.evaluations:
            self.evaluation(result, "before", 0)
        for step in range(self.first_iteration, campaign.iterations):
            loop, evaluated = step // campaign.spec.iterations, {}
            metrics = {"loop": float(loop), **self.inner(step)}
            if campaign.ends_loop(step):
                if campaign.spec.evaluation.after_inner:
                    evaluated.update(self.evaluation(result, f"loop {loop} inner", step + 1))
                metrics.update(self.outer())
            self.log(metrics, step=step)
            result.iterations_done, result.history[step] = step + 1, metrics
            if campaign.ends_loop(step):
                evaluated.update(self.evaluation(result, f"loop {loop} outer", step + 1))
            if (step + 1) % campaign.spec.checkpoint.every == 0 or step + 1 == campaign.iterations:
                result.checkpoint = self.save(step)
            if on_iteration:
                on_iteration(step, {**metrics, **evaluated})

    def evaluation(self, result: CampaignResult, after: str, step: int) -> dict[str, float]:
        """Evaluate on the held-out problems and log it at `step`: as eval/<team>/* (before training, after an
        outer phase; `result.evaluations`) or as inner/eval/<team>/* (after an inner phase). The table
        `hila/evaluations.json` holds every evaluation so far, intervals included."""
        metrics = self.evaluate()
        self.evaluations.append({"step": step, "after": after, "metrics": metrics})
        if after.endswith("inner"):
            metrics = {f"inner/{k}": v for k, v in metrics.items()}
        else:
            result.evaluations[step] = metrics
        self.log({k: v for k, v in metrics.items() if not k.endswith(("_ci_low", "_ci_high"))}, step=step)
        if self.tracker:
            rows = [
                {"step": e["step"], "after": e["after"], "team": team, **team_row(e["metrics"], team)}
                for e in self.evaluations
                for team in TEAMS
            ]
            keys = list(dict.fromkeys(k for row in rows for k in row))
            table = {k: [row.get(k) for row in rows] for k in keys}
            self.tracker.log_table(table, "hila/evaluations.json", replace=True)
        return metrics

    def finish(self, result: CampaignResult) -> None:
        """The figures (per level, evaluations and calibration, accuracy vs cost) and the verdict table."""
        if not self.tracker or not self.evaluations:
            return
        last = self.evaluations[-1]["metrics"]
        rows = verdict_rows(last)
        table = {c: [r[k] for r in rows] for k, c in enumerate(VERDICT_COLUMNS)}
        self.tracker.log_table(table, "hila/verdict.json", replace=True)
        self.tracker.log_figure(evaluations_figure(self.evaluations), "figures/evaluations.png")
        points = [{"name": t, "accuracy": last[f"eval/{t}/accuracy"], "cost": last[f"eval/{t}/cost"]} for t in TEAMS]
        self.tracker.log_figure(tradeoff_figure(points), "figures/accuracy_vs_cost.png")
        for level in ("inner", "outer"):
            self.tracker.log_figure(level_figure(result.history, level), f"figures/{level}.png")

    def summary(self, result: CampaignResult) -> Summary:
        """The last held-out evaluation: every team with 95% intervals and the paired verdicts."""
        last = self.evaluations[-1]
        return Summary(
            f"{self.campaign.name}: held-out problems after {last['after']} "
            f"({int(last['metrics'][f'eval/{TRAINED}/problems'])} problems)",
            VERDICT_COLUMNS,
            verdict_rows(last["metrics"]),
        )


def team_row(metrics: dict[str, float], team: str) -> dict[str, float]:
    """One team's metrics of one evaluation, prefix dropped (a row of `hila/evaluations.json`)."""
    row = {k.removeprefix(p): v for p in (f"eval/{team}/",) for k, v in metrics.items() if k.startswith(p)}
    paired = f"eval/trained_minus_{team}/"
    row.update({"trained_minus_this_" + k.removeprefix(paired): v for k, v in metrics.items() if k.startswith(paired)})
    return row
