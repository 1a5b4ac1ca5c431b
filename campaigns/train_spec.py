"""A train campaign file's keys (`TrainConfig`): what `agora train` validates before anything runs; the
campaign kinds built on it (stackelberg, hila) reuse its parts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agora.campaign import CampaignConfig
from agora.errors import ScenarioError
from agora.lora import LoRAConfig
from agora.scenario import AgentSpec, WorldSpec
from campaigns.league import LeagueSpec, SelfPlaySpec


class LearnerSpec(BaseModel):
    """`learner: {seats: [alice], lora: {...}, <llm parameter>: <value>, ...}`."""

    model_config = ConfigDict(extra="allow")
    seats: list[str] = Field(
        min_length=1, description="seats (names or glob patterns) the learning policy plays; all seats = self-play"
    )
    lora: LoRAConfig = LoRAConfig()


class TrainerSpec(BaseModel):
    """`trainer: {id: grpo, <hyperparameter>: <value>, ...}`; every key but `id` is the trainer's config."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(description="registered trainer id (`agora trainers`)")


class EvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seats: list[str] | None = Field(
        None,
        description="seats the learner plays in evaluation (default: learner.seats, or the first seat when those "
        "are all)",
    )
    every: int = Field(
        1,
        ge=0,
        le=100_000,
        description="evaluate before every N-th iteration (0: only before the first and after the last)",
    )
    episodes: int = Field(16, ge=1, le=1_000_000, description="episodes per fixed opponent")
    seed: int = Field(
        1_000_003, ge=0, description="root seed of the held-out evaluation episodes (never a training seed)"
    )
    opponents: dict[str, AgentSpec] | None = Field(
        None,
        description="name -> fixed policy for every non-learner seat (default: the training opponents, named 'train')",
    )


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(1, ge=1, le=100_000, description="checkpoint after every N-th iteration (and after the last)")
    dir: str | None = Field(
        None, description="checkpoint folder (default: checkpoints/<name> in the working directory)"
    )
    keep: int = Field(2, ge=1, le=1000, description="checkpoints kept on disk (all are logged to MLflow)")


class TrainConfig(CampaignConfig):
    """A train campaign file (`kind: train`, the default)."""

    world: WorldSpec
    learner: LearnerSpec
    opponents: dict[str, AgentSpec] = Field({}, description="non-learner seat (or glob pattern) -> fixed policy")
    self_play: SelfPlaySpec | None = Field(
        None,
        description="seats played by a frozen snapshot of the learner (= a league: matchmaking latest, 1 snapshot)",
    )
    league: LeagueSpec | None = Field(
        None, description="seats played by versions drawn from a league (population) of snapshots and members"
    )
    trainer: TrainerSpec
    iterations: int = Field(ge=1, le=1_000_000, description="training iterations (one update each)")
    groups_per_iteration: int = Field(4, ge=1, le=100_000, description="initial states (episode seeds) per iteration")
    group_size: int = Field(8, ge=1, le=4096, description="rollouts of each initial state: the GRPO group")
    evaluation: EvaluationSpec = EvaluationSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    seed: int = Field(0, ge=0, description="root seed of training episodes, sampling, LoRA init")
    concurrency: int = Field(16, ge=1, le=4096, description="episodes stepped together (LLM turns batched across them)")
    max_retries: int = Field(1, ge=0, le=10, description="re-prompts after unparseable text, before a fallback action")
    max_staleness: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="updates an episode's learner weights may lag the learner's before its batch is refused",
    )


def relabel(exc: ScenarioError, old: str, new: str, file: str | None) -> ScenarioError:
    """An error about a generated scenario's key `old...`, said about the campaign file's key `new...`."""
    path = exc.path
    if path and (path == old or path.startswith(old + ".")):
        path = new + path[len(old) :]
    message = exc.message.replace(f"\n  {old}.", f"\n  {new}.")
    return ScenarioError(message, file=exc.file or file, path=path, hint=exc.hint)
