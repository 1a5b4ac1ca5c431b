"""The trainer contract: what a campaign needs from every optimizer of a learning LLM policy.

A trainer updates the weights of one model (a peft LoRA model whose adapter is the learner) from
the episodes the learner played. It is registered in `agora.registry.TRAINERS` (or by a plug-in's
`agora.trainers` entry point) and named by a campaign file's `trainer: {id: ..., <config keys>}`;
its `Config` validates those keys (the same class documents them in `agora trainers`).

The sampler's settings travel with the samples: every learner `Step` records the temperature it
was sampled at. A trainer that compares the policy with the recorded log-probs pi_old (GRPO, INPO)
recomputes them at that temperature (`sample_temperature`), so that the ratio pi_theta / pi_old is
exactly 1 before the first update, and refuses a batch that mixes temperatures. Likewise a step
decoded under a reply grammar records it (`Step.grammar`), and trainers score it under the same
token masks (`scoring_masks`), replayed from its token ids with the learner's tokenizer, which the
campaign sets as `trainer.tokenizer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable

from pydantic import BaseModel

from agora.trajectory import Episode


class Trainer(ABC):
    """Updates `model`'s trainable weights from episodes; holds its optimizer and generators.

    `update` is called once per campaign iteration with that iteration's episodes and the seats the
    learner played in them (a group of `group_size` consecutive episodes shares an initial state);
    it returns `train/*` and `perf/*` metrics. `state_dict` / `load_state_dict` cover everything a
    resumed campaign needs to continue exactly (optimizer moments, generators).
    """

    Config: ClassVar[type[BaseModel]]
    greedy_anchor: ClassVar[bool] = False  # each group's first rollout is decoded greedily (ArenaRL's anchor)
    # The learner policy it trains (`learner.policy` of a campaign file): "llm", or "plan_execute" for a trainer that
    # reads a plan-execute agent's switch and subgoal (HiPER); a campaign refuses a learner of another kind.
    learner_policy: ClassVar[str] = "llm"
    # The worlds (registered ids) whose episodes it reads beyond the replies and returns, e.g. the loss vectors of
    # online_learning (regret-loss); None: any world. A campaign on another world is refused when its file loads.
    worlds: ClassVar[tuple[str, ...] | None] = None
    tokenizer: Any = None  # the learner's tokenizer, set by the campaign: grammar masks are replayed with it
    # A trainer whose opponent is made from the learner (Nash-MD: the geometric mixture of the learner and its
    # reference; Nash Mirror Prox: a frozen copy of an iterate) plays `opponent_policy(learner)` in every seat the
    # learner does not: its campaign file names no `opponents`, league or self-play.
    plays_opponent: ClassVar[bool] = False

    def __init__(self, model: Any, config: BaseModel, *, pad_id: int, seed: int = 0):
        self.model, self.config, self.pad_id = model, config, pad_id

    def scoring_masks(self):
        """A fresh `agora.constrain.ReplayedMasks` for this model: the masks of constrained completions."""
        from agora.constrain import ReplayedMasks, vocab_size

        return ReplayedMasks(self.tokenizer, vocab_size(self.model))

    def opponent_policy(self, learner: Any) -> Any:
        """The policy of every non-learner seat in training, made from the learner policy (`plays_opponent`)."""
        raise TypeError(f"{type(self).__name__} plays the campaign's opponents; it makes none")

    @abstractmethod
    def update(self, episodes: list[Episode], seats: list[str]) -> dict[str, float]:
        """One update from the episodes the learner played in `seats`; returns metrics."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after a restart (saved in checkpoints)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def sample_temperature(temperatures: Iterable[float | None]) -> float:
    """The one temperature a batch of samples was drawn at (their recorded values must agree).

    Log-probs recomputed at any other temperature would make the ratio pi_theta / pi_old differ from 1
    before the first update, so a batch that mixes temperatures, or has none recorded, is refused."""
    found = set(temperatures)
    if None in found or not found:
        raise ValueError(
            "samples without a recorded sampling temperature: only an LLM policy's own steps can be trained on"
        )
    if len(found) > 1:
        raise ValueError(
            f"samples drawn at different temperatures {sorted(found)}: train on one sampler setting per batch"
        )
    return found.pop()
