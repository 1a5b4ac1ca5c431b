"""The `train` campaign kind: an LLM with LoRA trained by a registered trainer (`agora train CAMPAIGN.yaml`).

A campaign file names the world, the learning policy (an LLM with LoRA adapters) and the seats it
plays, the fixed policies of the other seats (or a league of versions: `campaigns.league`), the
trainer and its hyperparameters (the trainer's own `Config` validates them: no second list of
fields), and the schedule:

    for iteration in 0 .. iterations-1:
        every `evaluation.every` iterations: play held-out seeds against each fixed opponent (eval/*)
        play `groups_per_iteration` initial states x `group_size` rollouts each (the GRPO groups)
        trainer.update(episodes, learner seats) -> the LoRA weights change (train/*, perf/*)
        every `checkpoint.every` iterations: LoRA weights, trainer state, generators, league -> files + MLflow
    a final evaluation after the last iteration.

The learner's rollout policy acts with the very model object the trainer updates, so every
iteration samples from the current weights. `--resume` reloads the last checkpoint and continues
into the same MLflow run (same run id); metric steps are iterations, and steps already logged by
the killed process are not logged twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agora.campaign import (
    CampaignResult,
    CampaignRunner,
    Summary,
    check_metric_name,
    match_seats,
)
from agora.checkpoint import RunFolder, restore_learner, save_learner
from agora.errors import AgoraError, ScenarioError
from agora.policy import Policy
from agora.registry import TRAINERS, WORLDS
from agora.replay import review_sample, write_replays
from agora.rollout import GroupRollout, episode_seed, policy_seed
from agora.run import build_policies
from agora.scenario import ResolvedScenario, resolve_scenario, validate_model
from agora.trajectory import Episode
from campaigns.evaluation import evaluate, evaluation_table, is_interval_bound, learning_curve
from campaigns.league import League, LeagueOpponents, LeagueSpec
from campaigns.learner import LearnerCampaign
from campaigns.train_spec import TrainConfig, relabel
from campaigns.workers import LeagueDraw, LearnerUpdate, TrainJob, check_versions, refuse_interactive


def trainer_seats(spec: TrainConfig, entry: Any, seats: list[str], learner_seats: list[str], source) -> list[str]:
    """The seats a trainer that makes its own opponent (`Trainer.plays_opponent`) plays: all the learner's others.
    Such a campaign names no opponents, league or self-play, runs in this process and names its evaluation's
    opponents (the trainer's opponent is made of the learner, not a policy the evaluation can build)."""
    if not getattr(entry.load(), "plays_opponent", False):
        return []
    others = [s for s in seats if s not in learner_seats]
    for key, why, bad in (
        ("opponents", "plays every non-learner seat itself; remove opponents", bool(spec.opponents)),
        ("league", "plays its own opponent, not a league", spec.league is not None),
        ("self_play", "plays its own opponent, not a snapshot", spec.self_play is not None),
        ("learner.seats", "needs a seat the learner does not play, for its opponent", not others),
        ("execution.backend", "runs its rollouts in this process, not on Ray", spec.execution.backend == "ray"),
        ("evaluation.opponents", "needs fixed opponents to evaluate against", not spec.evaluation.opponents),
    ):
        if bad:
            raise ScenarioError(
                f"trainer {entry.name} {why}", file=source, path=key, hint="see scenarios/campaigns/rps_nash_md.yaml"
            )
    return others


class TrainCampaign(LearnerCampaign):
    """An LLM with LoRA trained by a trainer (GRPO, DPO/KTO, INPO, DNO) against fixed opponents or a league of its
    snapshots."""

    Config = TrainConfig
    learner_policies = ("llm", "plan_execute")
    ray_workers = True  # training rollouts on Ray workers (`campaigns.workers`); evaluations stay in this process

    def __init__(self, spec: TrainConfig, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        world_entry = WORLDS.get(spec.world.id, path="world.id")
        world_config = validate_model(world_entry.config, spec.world.model_extra or {}, prefix="world", file=source)
        seats = list(world_entry.load()(world_config).possible_agents)
        self.learner_seats = match_seats(spec.learner.seats, seats, "learner.seats")
        self.trainer_entry = TRAINERS.get(spec.trainer.id, path="trainer.id")
        # seats where the trainer's own opponent plays (Nash-MD's mixture, Mirror Prox's iterate)
        self.opponent_seats = trainer_seats(spec, self.trainer_entry, seats, self.learner_seats, source)
        if spec.league and spec.self_play:
            raise ScenarioError(
                "a campaign has self_play or a league, not both",
                path="league",
                hint="drop self_play: a league with `matchmaking: latest` plays the newest snapshot of the learner",
            )
        self.league_spec: LeagueSpec | None = spec.self_play.as_league() if spec.self_play else spec.league
        where = "self_play" if spec.self_play else "league"
        self.league_seats = match_seats(self.league_spec.seats, seats, f"{where}.seats") if self.league_spec else []
        if set(self.league_seats) & set(self.learner_seats):
            raise ScenarioError(
                f"a seat cannot be both the learner's and the {'snapshot' if spec.self_play else 'league'}'s",
                path=f"{where}.seats",
                hint="list each seat once",
            )
        if spec.league:
            for k, name in enumerate(spec.league.side_names):
                check_metric_name(name, f"league.side_names.{k}", "side name")
        if spec.evaluation.seats is not None:
            self.eval_seats = match_seats(spec.evaluation.seats, seats, "evaluation.seats")
        else:
            self.eval_seats = self.learner_seats if len(self.learner_seats) < len(seats) else seats[:1]
        if len(self.eval_seats) == len(seats) and len(seats) > 1:  # a one-seat world (online_learning) plays alone
            raise ScenarioError(
                "the learner would play every seat in evaluation, with no opponent",
                path="evaluation.seats",
                hint=f"e.g. [{seats[0]}]",
            )
        for key in spec.opponents:
            if key in self.learner_seats or key in self.league_seats:
                raise ScenarioError(
                    f"seat '{key}' is played by the learner, its snapshot or the league",
                    path=f"opponents.{key}",
                    hint="remove it from opponents",
                )
        placeholder = {seat: {"policy": "llm"} for seat in self.learner_seats + self.league_seats + self.opponent_seats}
        base = {"name": spec.name, "world": spec.world.model_dump(), "episodes": 1, "seed": spec.seed}

        def scenario(
            agents: dict[str, Any], old: str, new: str, fill: dict[str, Any] = placeholder
        ) -> ResolvedScenario:
            try:
                return resolve_scenario({**base, "agents": {**fill, **agents}}, source=source)
            except ScenarioError as exc:
                raise relabel(exc, old, new, source) from None

        opponents = {k: v.model_dump() for k, v in spec.opponents.items()}
        self.train = scenario(opponents, "agents", "opponents")
        if spec.evaluation.opponents is None:
            if self.league_seats or self.eval_seats != self.learner_seats:
                raise ScenarioError(
                    "name the fixed opponents to evaluate against",
                    path="evaluation.opponents",
                    hint="e.g. {fair: {policy: fair}}",
                )
            self.evaluations = {"train": self.train}
        else:
            self.evaluations = {
                name: scenario(
                    {"*": agent.model_dump()},
                    "agents.*",
                    f"evaluation.opponents.{name}",
                    {s: {"policy": "llm"} for s in self.eval_seats},
                )
                for name, agent in spec.evaluation.opponents.items()
            }
        self.league_members = {}
        for name, agent in (spec.league.members if spec.league else {}).items():
            if name == League.LEARNER or name.startswith(League.LEARNER + "-"):
                raise ScenarioError(
                    f"member name {name!r} is reserved",
                    path=f"league.members.{name}",
                    hint="'learner' and 'learner-N' name the learner and its snapshots",
                )
            check_metric_name(name, f"league.members.{name}", "member name")
            sides = [(self.league_seats, self.learner_seats)] + (
                [(self.learner_seats, self.league_seats)] if spec.league.swap_sides else []
            )
            for plays, other in sides:  # the member must be able to play every seat it may get
                fill = {**{s: {"policy": "llm"} for s in other}, **opponents}
                member = scenario({"*": agent.model_dump()}, "agents.*", f"league.members.{name}", fill)
                self.league_members.setdefault(name, member.seats[plays[0]])
        if spec.execution.backend == "ray":
            refuse_interactive(self.train, skip=list(placeholder))
        self.trainer_config = validate_model(
            self.trainer_entry.config, spec.trainer.model_extra or {}, prefix="trainer", file=source
        )
        self.check_trainer(self.trainer_entry.name, self.trainer_entry.load(), world_entry.name, source)
        if spec.group_size < 2:
            raise ScenarioError(
                "a group of one rollout has no advantage signal", path="group_size", hint="use 2 or more (8 is common)"
            )

    @classmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        return {
            "name": "example-train",
            "world": {"id": "negotiation", "max_turns": 4},
            "learner": {"seats": ["alice"], "model": model, "max_new_tokens": 8, "lora": {"r": 4, "alpha": 8}},
            "opponents": {"bob": {"policy": "random"}},
            "trainer": {"id": "grpo"},
            "iterations": 1,
            "groups_per_iteration": 1,
            "group_size": 2,
            "evaluation": {"episodes": 2},
        }

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(
            mode="json", exclude={"world", "learner", "opponents", "trainer", "evaluation", "league"}
        )
        out["world"] = self.train.world_json()
        out["learner"] = {
            "seats": self.learner_seats,
            "lora": self.spec.learner.lora.model_dump(),
            **self.learner_keys(),
        }
        fixed = set(self.learner_seats) | set(self.league_seats) | set(self.opponent_seats)  # the trainer's: its id
        out["opponents"] = {
            a: {"policy": s.entry.name, **s.config.model_dump(mode="json")}
            for a, s in self.train.seats.items()
            if a not in fixed
        }
        if self.league_spec:
            out["league"] = self.league_spec.model_dump(mode="json", exclude={"members"})
            out["league"]["seats"] = self.league_seats
            out["league"]["members"] = {
                n: {"policy": s.entry.name, **s.config.model_dump(mode="json")} for n, s in self.league_members.items()
            }
        else:
            out["league"] = None
        out["trainer"] = {"id": self.trainer_entry.name, **self.trainer_config.model_dump(mode="json")}
        out["evaluation"] = self.spec.evaluation.model_dump(mode="json", exclude={"opponents"})
        out["evaluation"]["opponents"] = {
            name: {a: s.entry.name for a, s in sc.seats.items() if a not in self.eval_seats}
            for name, sc in self.evaluations.items()
        }
        out["evaluation"]["seats"] = self.eval_seats
        return out

    def file_config(self) -> dict[str, Any]:
        out = super().file_config()
        out["world"] = self.train.world_json()  # (the trainer's settings stay as written: a judge's depend on its kind)
        return out

    def describe(self) -> str:
        league = self.league_spec
        return (
            f"campaign, world {self.train.world_entry.name}, learner {', '.join(self.learner_seats)}, "
            f"trainer {self.trainer_entry.name}, {self.spec.iterations} iterations"
            + (
                f", league on {', '.join(self.league_seats)} ({league.matchmaking}, members: "
                f"{', '.join(self.league_members) or 'none'})"
                if league
                else ""
            )
        )

    def start(self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None) -> TrainRunner:
        return TrainRunner(self, resume=resume, tracking_uri=tracking_uri, track=track)


class TrainRunner(CampaignRunner):
    """Holds the learner, its trainer, the fixed policies, the league and the MLflow run of one train campaign."""

    progress = {
        "train/reward/learner": "reward",
        "train/loss": "loss",
        "train/kl": "kl",
        "train/zero_variance_groups": "zero-variance groups",
        "train/fallback_rate": "fallback rate",
    }

    def __init__(
        self,
        campaign: TrainCampaign,
        *,
        resume: bool = False,
        tracking_uri: str | None = None,
        track: bool | None = None,
    ):
        super().__init__(campaign, resume=resume)
        spec = campaign.spec
        self.model, self.tokenizer, self.learner = campaign.load_learner()
        self.trainer = campaign.trainer_entry.load()(
            self.model,
            campaign.trainer_config,
            pad_id=self.tokenizer.pad_token_id,
            seed=policy_seed(spec.seed, "trainer"),
        )
        self.trainer.tokenizer = self.tokenizer  # constrained completions are rescored under their grammar
        skip = campaign.learner_seats + campaign.league_seats + campaign.opponent_seats
        self.fixed = build_policies(campaign.train, skip=skip, seed=spec.seed)
        if campaign.opponent_seats:  # one policy in all of them, as a fixed opponent is
            made = self.trainer.opponent_policy(self.learner)
            self.fixed.update({s: made for s in campaign.opponent_seats})
        self.seats: dict[str, Policy] = {**{s: self.learner for s in campaign.learner_seats}, **self.fixed}
        self.policy_ids = {
            s: "learner"
            if s in campaign.learner_seats
            else "opponent"
            if s in campaign.opponent_seats
            else campaign.train.seats[s].entry.name
            for s in self.seats
        }
        self.opponents = None
        if campaign.league_spec:
            self.opponents = LeagueOpponents(
                campaign, self.model, self.tokenizer, fixed=self.fixed, policy_ids=self.policy_ids
            )
            self.policy_ids.update({s: "league" for s in campaign.league_seats})
        self.result = CampaignResult(None, None)
        self.version = 0  # updates applied to the learner's weights (`Episode.version` of what it plays)
        self.workers: Any = None  # the RayRollout of `execution: {backend: ray}`, while the iterations run
        self.restarts_before = 0  # worker restarts of the RayRollouts released so far
        self.played_at: dict[int, dict[str, list[Episode]]] = {}  # step -> opponent -> held-out episodes (pairing)
        if self.resumed_from:
            self.restore(self.resumed_from)
        self.open_run(
            {
                "agora.kind": "train",
                "agora.world": campaign.train.world_entry.name,
                "agora.trainer": campaign.trainer_entry.name,
                "agora.learner_seats": ",".join(campaign.learner_seats),
            },
            tracking_uri=tracking_uri,
            track=track,
        )

    # checkpoints
    def save(self, iteration: int) -> Path:
        state: dict[str, Any] = {"history": self.result.history, "evaluations": self.result.evaluations, "league": None}

        def write(folder: Path) -> None:
            save_learner(folder, self.model, self.trainer, self.seats)
            if self.opponents is not None:
                state["league"] = self.opponents.save(folder)

        return self.checkpoint(iteration, state, write, keep=self.campaign.spec.checkpoint.keep)

    def restore(self, folder: Path) -> None:
        state = RunFolder.load(folder)
        if "history" not in state:  # written by Agora 0.1: the learner's rewards only
            state["history"] = {i: {"train/reward/learner": r} for i, r in state.get("rewards", {}).items()}
        self.result.history = {int(k): v for k, v in state["history"].items()}
        self.result.evaluations = {int(k): v for k, v in state["evaluations"].items()}
        if self.opponents is not None:
            if not state.get("league"):
                raise AgoraError(
                    f"{folder} holds no league (a campaign without `league:`, or Agora 0.1's self_play), but this "
                    "campaign has one: resume it as it was, or start over (delete the folder or set checkpoint.dir)"
                )
            self.opponents.restore(folder, state["league"])
        restore_learner(folder, self.model, self.trainer, self.seats)
        self.first_iteration = int(state["iteration"]) + 1
        self.version = self.first_iteration  # one update per iteration

    # rollouts
    def training_episodes(
        self, iteration: int, seats: dict[str, Policy] | None = None, policy_ids: dict[str, str] | None = None
    ) -> list[Episode]:
        spec = self.campaign.spec
        seeds = [
            episode_seed(spec.seed, iteration * spec.groups_per_iteration + g) for g in range(spec.groups_per_iteration)
        ]
        if spec.execution.backend == "ray":
            return self.remote_episodes(iteration, seeds, seats, policy_ids)
        rollout = GroupRollout(
            self.campaign.train.make_world,
            seats or self.seats,
            policy_ids or self.policy_ids,
            seed=spec.seed,
            concurrency=spec.concurrency,
            max_retries=spec.max_retries,
            seeds=seeds,
            group_size=spec.group_size,
            anchor_seats=self.campaign.learner_seats if self.trainer.greedy_anchor else (),
        )
        rollout.version = self.version
        return rollout.run(spec.groups_per_iteration * spec.group_size)

    def remote_episodes(
        self, iteration: int, seeds: list[int], seats: dict[str, Policy] | None, policy_ids: dict[str, str] | None
    ) -> list[Episode]:
        """An iteration's episodes played on the Ray workers: the learner's current weights, their version, the
        group seeds (and the league's draw) go to every worker first."""
        from agora.lora import adapter_state
        from agora.rollout import TICK_LISTENER

        spec, draw = self.campaign.spec, None
        if seats is not None:  # a league's iteration (`LeagueOpponents.play`)
            draw = LeagueDraw.of(iteration, seats, policy_ids, self.learner, self.opponents.league.adapters)
        if self.workers is None:
            from agora.execution import RayRollout

            job = TrainJob(self.campaign, self.trainer.greedy_anchor)
            self.workers = RayRollout(job, spec.execution, concurrency=spec.concurrency)
        weights = {k: v.cpu() for k, v in adapter_state(self.model).items()}
        self.workers.apply(LearnerUpdate(seeds, weights, self.version, draw))
        self.workers.episodes.clear()  # the driver keeps no episodes between iterations
        return self.workers.run(spec.groups_per_iteration * spec.group_size, on_tick=TICK_LISTENER.get())

    def evaluate(self, played: dict[str, list[Episode]] | None = None) -> dict[str, float]:
        return evaluate(self.campaign, self.model, self.tokenizer, played)

    def iteration(self, i: int) -> dict[str, float]:
        tokens0, seconds0 = self.learner.stats.generated_tokens, self.learner.stats.generate_seconds
        remote_tokens0 = self.workers.tokens if self.workers is not None else 0
        start = time.perf_counter()
        self.model.eval()
        league: dict[str, float] = {}
        if self.opponents is not None:
            episodes, mine, league = self.opponents.play(i, self.learner, self.training_episodes)
        else:
            episodes, mine = self.training_episodes(i), self.campaign.learner_seats
        rollout_seconds = time.perf_counter() - start
        check_versions(episodes, self.version, self.campaign.spec.max_staleness)
        metrics = {"train/iteration": float(i), **self.trainer.update(episodes, mine)}
        self.version += 1
        rewards: dict[str, list[float]] = {}
        # the league's seats as one `league` (each version's results: the leaderboard), not one metric per version
        theirs = set(self.campaign.learner_seats + self.campaign.league_seats) - set(mine) if self.opponents else set()
        for episode in episodes:
            for seat, ret in episode.returns.items():
                key = "league" if seat in theirs else episode.policies.get(seat, self.policy_ids[seat])
                rewards.setdefault(key, []).append(ret)
            for key, value in episode.metrics.items():
                rewards.setdefault(f"world/{key}", []).append(value)
        for key, values in rewards.items():
            metrics[f"train/reward/{key}" if not key.startswith("world/") else f"train/{key[6:]}"] = float(
                np.mean(values)
            )
        tokens = self.learner.stats.generated_tokens - tokens0
        gen_seconds = self.learner.stats.generate_seconds - seconds0
        metrics["perf/generate_tokens_per_s"] = tokens / gen_seconds if gen_seconds else 0.0
        if self.workers is not None:  # every policy's tokens on the workers, per second of the iteration's rollouts
            tokens = self.workers.tokens - remote_tokens0
            metrics["perf/generate_tokens_per_s"] = tokens / rollout_seconds if rollout_seconds else 0.0
            metrics["perf/workers"] = float(self.campaign.spec.execution.workers)
            metrics["perf/worker_restarts"] = float(self.restarts_before + self.workers.restarts)
        metrics["perf/rollout_seconds"] = rollout_seconds
        metrics["perf/iteration_seconds"] = time.perf_counter() - start
        metrics.update(league)
        return metrics

    def new_result(self) -> CampaignResult:
        result = self.result  # the restored history and evaluations
        result.run_id, result.tracking_uri = (self.tracker.run_id, self.tracker.uri) if self.tracker else (None, None)
        result.iterations_done, result.checkpoint = self.first_iteration, self.resumed_from
        return result

    def iterate(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        spec, started = self.campaign.spec, False
        if spec.execution.backend == "ray":
            from agora.execution import connect

            started = connect(spec.execution)  # one Ray instance for the campaign's worker pools
        try:
            self.train_loop(result, on_iteration)
        finally:
            self.release_workers()
            if started:
                import ray

                ray.shutdown()

    def release_workers(self) -> None:
        """Stop the Ray rollout workers (the next iteration starts new ones): at the end, and before a league's
        payoff matrix, whose cell workers need the CPUs and GPUs they hold."""
        if self.workers is not None:
            self.restarts_before += self.workers.restarts
            self.workers.close()
            self.workers = None

    def train_loop(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        spec = self.campaign.spec
        every = spec.evaluation.every
        for i in range(self.first_iteration, spec.iterations):
            if (every and i % every == 0) or i == 0:
                result.evaluations[i] = self.evaluate(self.played_at.setdefault(i, {}))
                self.log_evaluation(result, i)
            metrics = self.iteration(i)
            self.log(metrics, step=i)
            if self.opponents is not None:
                self.opponents.after_iteration(i, self.log, self.tracker, before_payoff=self.release_workers)
            result.iterations_done, result.history[i] = i + 1, metrics
            if (i + 1) % spec.checkpoint.every == 0 or i + 1 == spec.iterations:
                result.checkpoint = self.save(i)
            if on_iteration:
                on_iteration(i, {**metrics, **result.evaluations.get(i, {})})

    def log_review(self, played: dict[str, list[Episode]]) -> None:
        """The final evaluation's first `tracking.traces` episodes per opponent as MLflow traces (group
        `eval-<opponent>`) and HTML replays (`replays/eval-<opponent>/`): what the trained agent says."""
        for opponent, episodes in played.items():
            shown = review_sample(episodes, self.campaign.spec.tracking.traces)
            if shown:
                self.tracker.log_traces(shown, group=f"eval-{opponent}")
                self.tracker.log_folder_from(
                    lambda folder, shown=shown: write_replays(shown, folder), f"replays/eval-{opponent}"
                )

    def log_evaluation(self, result: CampaignResult, step: int) -> None:
        """The evaluation at `step` as metrics (score, win rate, the world's metrics), and every evaluation so far
        as the table `evaluation.json` (with the 95% intervals)."""
        self.log({k: v for k, v in result.evaluations[step].items() if not is_interval_bound(k)}, step=step)
        if self.tracker:
            table = evaluation_table(result.evaluations, list(self.campaign.evaluations))
            self.tracker.log_table(table, "evaluation.json", replace=True)

    def finish(self, result: CampaignResult) -> None:
        """The final evaluation (step `iterations`), the learning curve and the league's records."""
        final = self.campaign.spec.iterations
        result.evaluations[final] = self.evaluate(played := self.played_at.setdefault(final, {}))
        self.log_evaluation(result, final)
        if self.tracker:
            self.log_review(played)
            self.tracker.log_figure(
                learning_curve(result, list(self.campaign.evaluations)), "figures/learning_curve.png"
            )
            if self.opponents is not None:
                self.opponents.finish(self.tracker)

    def results_markdown(self, result: CampaignResult) -> str:
        """The league's final leaderboard, when a league played."""
        return self.opponents.overview() if self.opponents is not None else ""

    def summary(self, result: CampaignResult) -> Summary:
        """The held-out evaluations: one row per step and opponent."""
        rows = []
        for step, metrics in sorted(result.evaluations.items()):
            for name in self.campaign.evaluations:
                p = f"eval/{name}/"
                rows.append(
                    [
                        str(step),
                        name,
                        f"{metrics[p + 'score']:.3f} [{metrics[p + 'score_ci_low']:.2f}, "
                        f"{metrics[p + 'score_ci_high']:.2f}]",
                        f"{metrics[p + 'win_rate']:.3f} [{metrics[p + 'win_rate_ci_low']:.2f}, "
                        f"{metrics[p + 'win_rate_ci_high']:.2f}]",
                        f"{metrics[p + 'agreement']:.3f}" if p + "agreement" in metrics else "-",
                    ]
                )
        return Summary(
            f"{self.campaign.name}: evaluation on held-out seeds",
            ["step", "opponent", "score (95% CI)", "win rate (95% CI)", "agreement"],
            rows,
        )
