"""DNO on an LLM ("Direct Nash Optimization: Teaching Language Models to Self-Improve with General Preferences",
arXiv 2404.03715): iterated DPO whose reference is the previous iterate.

One round is one campaign iteration. The campaign samples K = `group_size` rollouts per initial state
from the current policy pi_t; each group's trajectories are scored by the judge, their score s being

    outcome judge:       the trajectory's return (or the `metric` it names), no comparison asked;
    llm / server judge:  its win rate against the rest of its group, s_i = 1/(K-1) sum_{j != i} P(i > j)
                         (SPO's round robin, K(K-1)/2 comparisons),

and the group's best and worst trajectories (first in rollout order on ties) make one pair of
trajectories when s_w - s_l >= `min_margin` (and > 0): DNO keeps large-margin pairs only. Each decision
both trajectories took on the same prompt, token for token, becomes a pair (y_w, y_l), and the loss is

    h = (log pi(y_w) - log pi_t(y_w)) - (log pi(y_l) - log pi_t(y_l)),
    hard labels:  L = -log sigma(beta h)
    soft labels:  L = -[q log sigma(beta h) + (1 - q) log sigma(-beta h)],  q = sigma(s_w - s_l)

(sums of token log-probs over the completion). Hard labels are DNO-Prct, the paper's practical
algorithm (which also puts a teacher model's response into every group; here a group is the policy's own
rollouts). Soft labels regress the pair's predicted log-odds beta h onto the score difference: with
win rates as the scores (estimates of r_t(y) = P(y > pi_t)) this is, over all pairs y, y' ~ pi_t, the
regression whose exact minimiser over all policies is the soft policy iteration
pi_{t+1} ∝ pi_t exp(r_t(y) / beta) of DNO's Algorithm 1 (`solvers.preference_games.dno_step`, with
eta = 1 / beta); DPO on hard labels has a different minimiser when the preferences are not Bradley-Terry.
Here only each group's (best, worst) pair is trained on, so this is that regression on a subsample.

The moving reference: pi_t is not the adapter-free model (as in DPO) but the policy that sampled this
round's data, whose per-token log-probs the sampler recorded on every step (`Decision.old_logprobs`).
So no forward of a reference model is needed, and each round's update stays close to the policy it
improves; the next round samples from the updated policy, which becomes its reference. log pi is taken
at the sampler's temperature, as pi_t was, so h = 0 before the first step of a round (the weights are
still those the round's rollouts were sampled with). Across rounds nothing ties the policy to the initial
model: on an intransitive game the last iterate does not settle, only the average of the iterates
approaches the Nash equilibrium (the tabular analysis in `solvers.preference_games`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from agora.trainer import sample_temperature
from agora.trajectory import Episode
from trainers.judges import Candidate, Judge, JudgeConfig, build_judge, judge_metrics
from trainers.preference import MAX_TOKENS_PER_PASS, Decision, PreferenceTrainer, decision_pairs
from trainers.tournament import judged_groups, spo_win_rates


class DNOConfig(BaseModel):
    """DNO hyperparameters (the campaign file's `trainer:` keys)."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(
        0.1, gt=0.0, description="beta: scale of the log-ratio margin h against the previous iterate pi_t"
    )
    min_margin: float = Field(
        0.0,
        ge=0.0,
        description="least score gap between a group's best and worst trajectory for them to make a pair "
        "(outcome judge: return units; llm / server judge: win rate in [0, 1]); a gap of 0 never makes one",
    )
    labels: Literal["hard", "soft"] = Field(
        "hard",
        description="hard: -log sigma(beta h) (DNO-Prct); soft: cross-entropy of sigma(beta h) against "
        "sigma(s_w - s_l), the regression whose minimiser is DNO's soft policy iteration",
    )
    judge: JudgeConfig = Field(
        JudgeConfig(),
        description="scores each group's trajectories: {id: outcome} (returns) or {id: llm, model: ..., rubric: ...} "
        "(win rates in the group)",
    )
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    epochs: int = Field(1, ge=1, le=100, description="passes over each round's pairs")
    micro_batch_size: int = Field(
        8, ge=1, le=4096, description="pairs per forward/backward pass (one optimizer step each)"
    )
    max_tokens_per_pass: int | None = MAX_TOKENS_PER_PASS
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")


def dno_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    old_chosen: torch.Tensor,
    old_rejected: torch.Tensor,
    *,
    beta: float,
    target: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair loss and h = log pi(y_w)/pi_t(y_w) - log pi(y_l)/pi_t(y_l), from sequence log-probs of the policy
    pi and of the previous iterate pi_t; L = -[q log sigma(beta h) + (1 - q) log sigma(-beta h)] with the target
    q = 1 for hard labels (DPO's loss with pi_t as its reference)."""
    h = (chosen - old_chosen) - (rejected - old_rejected)
    return -(target * F.logsigmoid(beta * h) + (1 - target) * F.logsigmoid(-beta * h)), h


def trajectory_scores(group: list[Candidate], judge: Judge, by: Literal["value", "win_rate"]) -> np.ndarray:
    """Each trajectory's score in its group: the judge's value of it (the outcome judge's return or metric), or
    its SPO win rate 1/(K-1) sum_{j != i} P(i > j) from the judge's comparisons."""
    if by == "value":
        return np.array([judge.value(c) for c in group], dtype=np.float64)
    return spo_win_rates(group, judge)


def sampled_steps(candidate: Candidate) -> list:
    """The candidate's seats' decisions that can be trained on: sampled tokens and their recorded log-probs."""
    return [
        s
        for s in candidate.episode.steps
        if s.agent in candidate.seats and s.completion_ids and s.prompt_ids is not None and s.logprobs is not None
    ]


def dno_pairs(
    episodes: list[Episode],
    learner_seats: list[str],
    judge: Judge,
    *,
    by: Literal["value", "win_rate"],
    min_margin: float,
) -> tuple[list[tuple[Decision, Decision, float]], list[float], int]:
    """(y_w, y_l, s_w - s_l) decisions from each group's best and worst trajectory when their score gap is at
    least `min_margin` (and positive), on the prompts both saw; the gap of every group of two or more; and the
    number of groups that gave no pair (gap too small, or no prompt in common)."""
    out: list[tuple[Decision, Decision, float]] = []
    gaps: list[float] = []
    without = 0
    for group in judged_groups(episodes, learner_seats).values():
        if len(group) < 2:
            without += 1
            continue
        scores = trajectory_scores(group, judge, by)
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        gap = float(scores[best] - scores[worst])
        gaps.append(gap)
        pairs = decision_pairs(sampled_steps(group[best]), sampled_steps(group[worst]))
        if gap <= 0 or gap < min_margin or not pairs:
            without += 1
            continue
        out += [(w, l, gap) for w, l in pairs]
    return out, gaps, without


class DNOTrainer(PreferenceTrainer):
    """DNO: DPO on each round's large-margin (best, worst) pairs with the sampler pi_t as the reference, LoRA;
    the update loop, log-probs and checkpoint state are DPO's."""

    Config = DNOConfig

    def __init__(self, model, config: DNOConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.judge = build_judge(config.judge)
        self.by: Literal["value", "win_rate"] = "value" if config.judge.id == "outcome" else "win_rate"
        self.gaps: list[float] = []
        self.groups_without_pair = 0

    def logp_temperature(self, decisions: list[Decision]) -> float:
        """The sampler's temperature, as pi_t was recorded: h = 0 before the first step of a round."""
        return sample_temperature(d.temperature for d in decisions)

    def items(self, episodes: list[Episode], learner_seats: list[str]) -> list:
        """(y_w, y_l, q): q = sigma(s_w - s_l) for soft labels, 1 for hard ones."""
        pairs, self.gaps, self.groups_without_pair = dno_pairs(
            episodes, learner_seats, self.judge, by=self.by, min_margin=self.config.min_margin
        )
        soft = self.config.labels == "soft"
        return [(w, l, 1.0 / (1.0 + math.exp(-gap)) if soft else 1.0) for w, l, gap in pairs]

    def batch_loss(self, batch: list) -> tuple[torch.Tensor, list[float], int]:
        winners, losers = [w for w, _, _ in batch], [l for _, l, _ in batch]
        chosen, n1 = self.logps(winners)
        rejected, n2 = self.logps(losers)
        # the moving reference: pi_t's log-probs as the sampler recorded them; no reference forward
        old = lambda ds: torch.tensor([sum(d.old_logprobs) for d in ds], dtype=chosen.dtype, device=chosen.device)  # noqa: E731
        target = torch.tensor([q for _, _, q in batch], dtype=chosen.dtype, device=chosen.device)
        loss, h = dno_loss(chosen, rejected, old(winners), old(losers), beta=self.config.beta, target=target)
        return loss, h.detach().tolist(), n1 + n2

    def update(self, episodes: list[Episode], learner_seats: list[str]) -> dict[str, float]:
        calls_before = self.judge.calls
        metrics = super().update(episodes, learner_seats)  # train/margin: mean h before each step
        metrics["train/groups_without_pair"] = float(self.groups_without_pair)
        metrics["train/score_gap"] = float(np.mean(self.gaps)) if self.gaps else 0.0
        metrics.update(judge_metrics(self.judge, calls_before))
        return metrics
