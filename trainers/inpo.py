"""INPO on an LLM (Iterative Nash Policy Optimization, arXiv 2407.00617): self-play preference optimisation.

The tabular update it approximates, and the game it solves, are in `solvers.preference_games`.

On an LLM (INPO, arXiv 2407.00617): pairs (y_w, y_l) of on-policy decisions from one GRPO group,
labelled by a pairwise judge, and the square loss

    L = E[(h - eta / 2)^2],
    h = log pi(y_w)/pi(y_l) - eta tau log pi_ref(y_w)/pi_ref(y_l) - (1 - eta tau) log pi_t(y_w)/pi_t(y_l),

with pi_t the sampler's recorded log-probs (sums over completion tokens) and pi_ref the same model
with its LoRA adapter disabled. log pi and log pi_ref are taken at the sampler's temperature, as
pi_t was, so h = 0 before the first update when the adapter starts at zero. tau = 0 is online IPO
with pi_t as the reference.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.trainer import sample_temperature
from agora.trajectory import Episode
from trainers.judges import JudgeConfig, build_judge, judge_metrics
from trainers.preference import MAX_TOKENS_PER_PASS, Decision, PreferenceTrainer, decision_pairs
from trainers.tournament import judged_groups


def inpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    old_chosen: torch.Tensor,
    old_rejected: torch.Tensor,
    *,
    eta: float,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair (h - eta/2)^2 and h, from sequence log-probs of pi (chosen/rejected), pi_ref and pi_t."""
    h = (chosen - rejected) - eta * tau * (ref_chosen - ref_rejected) - (1.0 - eta * tau) * (old_chosen - old_rejected)
    return (h - eta / 2) ** 2, h


class INPOConfig(BaseModel):
    """INPO hyperparameters (the campaign file's `trainer:` keys)."""

    model_config = ConfigDict(extra="forbid")
    eta: float = Field(
        1.0, gt=0.0, le=100.0, description="eta: mirror-descent step size; the loss regresses h onto eta / 2"
    )
    tau: float = Field(
        0.1,
        ge=0.0,
        description="tau: KL regularisation towards the adapter-free reference (eta * tau <= 1); 0 = online IPO",
    )
    pairing: Literal["adjacent", "all"] = Field(
        "adjacent", description="pairs judged in each group: rollouts (0,1), (2,3), ...; or every pair"
    )
    judge: JudgeConfig = Field(
        JudgeConfig(),
        description="labels each pair: {id: outcome} or {id: llm, model: ..., rubric: ...}; ties give no pair",
    )
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    epochs: int = Field(1, ge=1, le=100, description="passes over each iteration's pairs")
    micro_batch_size: int = Field(
        8, ge=1, le=4096, description="pairs per forward/backward pass (one optimizer step each)"
    )
    max_tokens_per_pass: int | None = MAX_TOKENS_PER_PASS
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")

    @model_validator(mode="after")
    def _mixture_weight_at_most_one(self) -> "INPOConfig":
        if self.eta * self.tau > 1.0:
            raise ValueError(
                f"eta * tau = {self.eta * self.tau:g} must be at most 1 (it is the weight of the reference in the "
                "update)"
            )
        return self


def inpo_pairs(
    episodes: list[Episode], learner_seats: list[str], judge, pairing: Literal["adjacent", "all"] = "adjacent"
) -> tuple[list[tuple[Decision, Decision]], int]:
    """(y_w, y_l) decisions: within each GRPO group, the judge's winner and loser of each judged pair of
    trajectories, on the prompts both saw; and the number of pairs the judge called a tie (left out)."""
    out, ties = [], 0
    for group in judged_groups(episodes, learner_seats).values():
        n = len(group)
        index = (
            [(i, i + 1) for i in range(0, n - 1, 2)]
            if pairing == "adjacent"
            else [(i, j) for i in range(n) for j in range(i + 1, n)]
        )
        if not index:
            continue
        for (i, j), p in zip(index, judge.compare([(group[i], group[j]) for i, j in index])):
            if p == 0.5:
                ties += 1
                continue
            winner, loser = (group[i], group[j]) if p > 0.5 else (group[j], group[i])

            def steps(c):
                sampled = [s for s in c.episode.steps if s.agent in c.seats and s.completion_ids]
                return [s for s in sampled if s.prompt_ids is not None and s.logprobs is not None]

            out += decision_pairs(steps(winner), steps(loser))
    return out, ties


class INPOTrainer(PreferenceTrainer):
    """INPO's square loss on judged on-policy pairs, LoRA; the update loop, log-probs and state are DPO's."""

    Config = INPOConfig

    def __init__(self, model, config: INPOConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.judge = build_judge(config.judge)
        self.ties = 0

    def logp_temperature(self, decisions: list[Decision]) -> float:
        """The sampler's temperature, as pi_t was recorded: h = 0 before the first update."""
        return sample_temperature(d.temperature for d in decisions)

    def items(self, episodes: list[Episode], learner_seats: list[str]) -> list:
        pairs, self.ties = inpo_pairs(episodes, learner_seats, self.judge, self.config.pairing)
        return pairs

    def batch_loss(self, batch: list) -> tuple[torch.Tensor, list[float], int]:
        cfg = self.config
        winners, losers = [w for w, _ in batch], [l for _, l in batch]
        chosen, n1 = self.logps(winners)
        rejected, n2 = self.logps(losers)
        ref_c, _ = self.logps(winners, reference=True)
        ref_r, _ = self.logps(losers, reference=True)
        old = lambda ds: torch.tensor([sum(d.old_logprobs) for d in ds], dtype=torch.float32, device=chosen.device)  # noqa: E731
        loss, h = inpo_loss(chosen, rejected, ref_c, ref_r, old(winners), old(losers), eta=cfg.eta, tau=cfg.tau)
        return loss, h.detach().tolist(), n1 + n2

    def update(self, episodes: list[Episode], learner_seats: list[str]) -> dict[str, float]:
        calls_before = self.judge.calls
        metrics = super().update(episodes, learner_seats)
        metrics["train/h"] = metrics.pop("train/margin")  # mean h before each step
        metrics["train/judge_ties"] = float(self.ties)
        metrics.update(judge_metrics(self.judge, calls_before))
        return metrics
