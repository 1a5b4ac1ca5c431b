"""A train campaign's rollouts on Ray rollout workers (`execution: {backend: ray, workers: N}`).

Each worker builds, once, what the driver's `TrainRunner` plays with: the learner (base model + LoRA,
as `LearnerCampaign.load_learner` loads it, seeded alike), the fixed opponents, and for a league a
frozen copy of the model that its LoRA snapshots act through (`TrainJob`). Before each iteration's
rollouts the driver sends every worker one `LearnerUpdate` through Ray's object store (put once,
not copied per worker): the iteration's group seeds, the learner's LoRA weights after the updates
so far and their version, and with a league the opponents drawn for each group (and the adapter
weights of the drawn snapshots). A restarted worker gets the newest update again before it plays.

Every episode records the version of the weights it was drawn with (`Episode.version`); the driver
refuses a batch whose version lags its learner's by more than `max_staleness` (`check_versions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from agora.errors import AgoraError, ScenarioError
from agora.rollout import GroupRollout
from agora.run import build_policies, worker_environment
from agora.trajectory import Episode


class StaleBatchError(AgoraError):
    """A batch of episodes drawn with learner weights older than the trainer's staleness bound allows."""


def check_versions(episodes: Sequence[Episode], current: int, max_staleness: int) -> None:
    """Refuse (StaleBatchError) a batch holding an episode drawn with weights older than `current - max_staleness`
    (or with unknown weights): the trainer's update assumes its samples come from (nearly) the weights it updates."""
    versions = {e.version for e in episodes}
    if None in versions:
        raise StaleBatchError(
            f"a training batch holds episodes with no weight version (the learner is at version {current}): "
            "every training episode must record the weights it was drawn with"
        )
    oldest = min(versions, default=current)
    if current - oldest > max_staleness:
        raise StaleBatchError(
            f"a training batch was drawn with learner weights version {oldest}, {current - oldest} updates behind "
            f"the learner (version {current}); max_staleness is {max_staleness}: the batch is refused",
        )


def refuse_interactive(scenario: Any, skip: Sequence[str]) -> None:
    """A ScenarioError for a seat (but `skip`) whose policy reads this terminal: Ray workers have none."""
    for agent, seat in scenario.seats.items():
        if agent not in skip and seat.entry.load().interactive:
            raise ScenarioError(
                f"policy {seat.entry.name} (seat {agent}) reads this terminal, which Ray workers do not have",
                path=f"opponents.{seat.key}",
                hint="play it with execution.backend: local",
            )


@dataclass
class LeagueDraw:
    """The league's part of an iteration: the seats each side plays, the version playing each episode, and
    the adapter weights of the drawn LoRA snapshots."""

    mine: list[str]  # the learner's seats this iteration (sides may swap)
    theirs: list[str]  # the seats the drawn versions play
    policy_ids: dict[str, str]
    assignment: dict[int, str]  # episode index -> version
    adapters: dict[str, dict[str, Any]]  # LoRA snapshot name -> its adapter weights (CPU tensors)
    key: str  # names the iteration's pool of versions (their policies' seeds derive from it)

    @classmethod
    def of(
        cls, iteration: int, seats: dict[str, Any], policy_ids: dict[str, str], learner: Any, adapters: dict[str, Any]
    ) -> LeagueDraw:
        """The draw of the seats `LeagueOpponents.play` gives iteration `iteration`'s rollout: the learner's, the
        `VersionRouter`'s (the versions drawn per episode) and the fixed ones; `adapters`: the league's snapshots."""
        from campaigns.league import VersionRouter

        theirs = [s for s, p in seats.items() if isinstance(p, VersionRouter)]
        assignment = dict(seats[theirs[0]].assignment)
        return cls(
            mine=[s for s, p in seats.items() if p is learner],
            theirs=theirs,
            policy_ids=dict(policy_ids),
            assignment=assignment,
            adapters={n: adapters[n] for n in set(assignment.values()) if n in adapters},
            key=f"train/{iteration}",  # as `LeagueOpponents.play` names its pool
        )


@dataclass
class LearnerUpdate:
    """The change every worker gets before an iteration's rollouts (`RayRollout.apply`)."""

    seeds: list[int]  # the iteration's group seeds (`GroupRollout.seeds`)
    weights: dict[str, Any]  # the learner's LoRA weights (peft's adapter state dict, CPU tensors)
    version: int  # updates applied to those weights
    league: LeagueDraw | None = None
    key: str = field(default="learner")

    def apply(self, rollout: TrainRollout) -> None:
        rollout.update(self)


class TrainRollout(GroupRollout):
    """A worker's rollout of a train campaign: the learner whose weights each `LearnerUpdate` replaces, the
    fixed opponents, and (with a league) the versions drawn for each iteration."""

    def __init__(self, campaign: Any, anchor: bool):
        from campaigns.payoff_cells import LoRAVersions

        self.campaign, spec = campaign, campaign.spec
        self.model, self.tokenizer, self.learner = campaign.load_learner()
        self.fixed = build_policies(campaign.train, skip=campaign.learner_seats + campaign.league_seats, seed=spec.seed)
        seats = {**{s: self.learner for s in campaign.learner_seats}, **self.fixed}
        ids = {s: "learner" if s in campaign.learner_seats else campaign.train.seats[s].entry.name for s in seats}
        self.base_seats, self.base_ids = seats, ids
        self.versions = None  # a league's versions: a frozen copy of the model its LoRA snapshots act through
        if campaign.league_spec:
            self.versions = LoRAVersions(
                campaign.learner_config, spec.learner.lora, spec.seed, campaign.league_members, self.tokenizer
            )
        super().__init__(
            campaign.train.make_world,
            seats,
            ids,
            seed=spec.seed,
            concurrency=spec.concurrency,
            max_retries=spec.max_retries,
            seeds=[],
            group_size=spec.group_size,
            anchor_seats=campaign.learner_seats if anchor else (),
        )

    def update(self, change: LearnerUpdate) -> None:
        from agora.lora import load_adapter_state

        load_adapter_state(self.model, change.weights)
        self.model.eval()
        self.seeds, self.version = list(change.seeds), change.version
        self.seats, self.policy_ids = self.base_seats, self.base_ids
        if change.league is not None:
            self.seats, self.policy_ids = self.league_seats(change.league)
        self.text_seats = {agent for agent, policy in self.seats.items() if policy.uses_text}

    def league_seats(self, draw: LeagueDraw) -> tuple[dict[str, Any], dict[str, str]]:
        """The seats of an iteration against the league, as `LeagueOpponents.play` seats them: its versions'
        policies from `LoRAVersions.pool`, as the driver builds them, with the drawn snapshots' weights."""
        from campaigns.league import VersionRouter

        self.versions.adapters = dict(draw.adapters)
        router = VersionRouter(self.versions.pool(draw.key, self.campaign.spec.seed), draw.assignment)
        seats = {**{s: self.learner for s in draw.mine}, **{s: router for s in draw.theirs}, **self.fixed}
        return seats, dict(draw.policy_ids)


@dataclass(frozen=True)
class TrainJob:
    """What each worker builds once (`agora.execution.Job`): a `TrainRollout` of the campaign."""

    campaign: Any  # the resolved TrainCampaign
    anchor: bool  # the trainer decodes each group's first rollout greedily

    def build(self) -> TrainRollout:
        return TrainRollout(self.campaign, self.anchor)

    def environment(self) -> dict[str, str]:
        """The opponents' API keys (server agents' `api_key_env`), set in the workers' processes too."""
        return worker_environment(self.campaign.train)
