"""Self-play preference games: Nash-MD and INPO, tabular and on an LLM (ALGORITHMS.md §7).

The game (NLHF, arXiv 2312.00886): with a preference P(y > y') and a reference mu,

    pi*_tau = argmax_pi min_pi'  P(pi > pi') - tau KL(pi || mu) + tau KL(pi' || mu),

whose symmetric equilibrium is the fixed point pi*(y) ∝ mu(y) exp(P(y > pi*) / tau).

Tabular updates on a preference matrix P[y, y'] = P(y > y') (numpy), P(y > pi) = (P pi)(y):

    Nash-MD:  pi_t^mu ∝ pi_t^(1 - eta tau) mu^(eta tau);  pi_{t+1}(y) ∝ pi_t^mu(y) exp(eta P(y > pi_t^mu))
    INPO:     pi_{t+1}(y) ∝ pi_t(y)^(1 - eta tau) mu(y)^(eta tau) exp(eta P(y > pi_t))

INPO's fixed point is exactly pi*_tau; Nash-MD's last iterate reaches it up to O(eta / tau) (its
theorem: KL(pi* || pi_{t+1}) <= (1 - eta tau) KL(pi* || pi_t) + 2 eta^2). `regularized_nash`
solves the game a different way, by maximising the max player's concave objective after the
inner minimum is taken in closed form.

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

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from agora.trajectory import Episode
from trainers.judges import JudgeConfig, build_judge, judge_metrics
from trainers.preference import Decision, PreferenceTrainer, decision_pairs
from trainers.tournament import judged_groups

# --- tabular ----------------------------------------------------------------------------------


def geometric_mixture(pi: np.ndarray, mu: np.ndarray, weight: float) -> np.ndarray:
    """pi^(1 - weight) mu^weight, normalised."""
    return softmax((1.0 - weight) * np.log(pi) + weight * np.log(mu))


def nash_md_step(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, *, eta: float, tau: float) -> np.ndarray:
    """pi_{t+1} ∝ pi_t^mu exp(eta P(y > pi_t^mu)), pi_t^mu ∝ pi_t^(1 - eta tau) mu^(eta tau)."""
    mixture = geometric_mixture(pi, mu, eta * tau)
    return softmax(np.log(mixture) + eta * P @ mixture)


def inpo_step(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, *, eta: float, tau: float) -> np.ndarray:
    """pi_{t+1} ∝ pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t))."""
    return softmax((1.0 - eta * tau) * np.log(pi) + eta * tau * np.log(mu) + eta * P @ pi)


def last_iterate(step, P: np.ndarray, mu: np.ndarray, *, eta: float, tau: float, iterations: int, pi0: np.ndarray | None = None) -> np.ndarray:
    """pi_T after `iterations` updates from pi0 (default mu)."""
    pi = np.asarray(mu if pi0 is None else pi0, dtype=np.float64)
    for _ in range(iterations):
        pi = step(pi, P, mu, eta=eta, tau=tau)
    return pi


def regularized_value(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, tau: float) -> float:
    """The max player's objective with the min player's best response in closed form:
    min_pi' pi^T P pi' + tau KL(pi' || mu) = -tau log sum_y' mu(y') exp(-(P^T pi)(y') / tau), minus tau KL(pi || mu)."""
    inner = -tau * logsumexp(np.log(mu) - (P.T @ pi) / tau)
    return float(inner - tau * np.sum(pi * (np.log(pi) - np.log(mu))))


def regularized_nash(P: np.ndarray, mu: np.ndarray, tau: float) -> np.ndarray:
    """pi*_tau by maximising `regularized_value` (concave in pi) over softmax logits with BFGS and the exact gradient."""
    log_mu = np.log(mu)

    def negative(z):
        pi = softmax(z)
        best_response = softmax(log_mu - (P.T @ pi) / tau)  # the min player's pi'
        grad_pi = P @ best_response - tau * (np.log(pi) - log_mu + 1.0)
        grad_z = pi * (grad_pi - pi @ grad_pi)  # (diag(pi) - pi pi^T) grad_pi
        return -regularized_value(pi, P, mu, tau), -grad_z

    result = minimize(negative, log_mu.copy(), jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 10_000})
    return softmax(result.x)


# --- on an LLM ----------------------------------------------------------------------------------


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
    eta: float = Field(1.0, gt=0.0, le=100.0, description="eta: mirror-descent step size; the loss regresses h onto eta / 2")
    tau: float = Field(0.1, ge=0.0, description="tau: KL regularisation towards the adapter-free reference (eta * tau <= 1); 0 = online IPO")
    pairing: Literal["adjacent", "all"] = Field("adjacent", description="pairs judged in each group: rollouts (0,1), (2,3), ...; or every pair")
    judge: JudgeConfig = Field(JudgeConfig(), description="labels each pair: {id: outcome} or {id: llm, model: ..., rubric: ...}; ties give no pair")
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    epochs: int = Field(1, ge=1, le=100, description="passes over each iteration's pairs")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="pairs per forward/backward pass (one optimizer step each)")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")

    @model_validator(mode="after")
    def _mixture_weight_at_most_one(self) -> "INPOConfig":
        if self.eta * self.tau > 1.0:
            raise ValueError(f"eta * tau = {self.eta * self.tau:g} must be at most 1 (it is the weight of the reference in the update)")
        return self


def inpo_pairs(
    episodes: list[Episode], learner_seats: list[str], judge, pairing: Literal["adjacent", "all"] = "adjacent"
) -> tuple[list[tuple[Decision, Decision]], int]:
    """(y_w, y_l) decisions: within each GRPO group, the judge's winner and loser of each judged pair of
    trajectories, on the prompts both saw; and the number of pairs the judge called a tie (left out)."""
    out, ties = [], 0
    for group in judged_groups(episodes, learner_seats).values():
        n = len(group)
        index = [(i, i + 1) for i in range(0, n - 1, 2)] if pairing == "adjacent" else [(i, j) for i in range(n) for j in range(i + 1, n)]
        if not index:
            continue
        for (i, j), p in zip(index, judge.compare([(group[i], group[j]) for i, j in index])):
            if p == 0.5:
                ties += 1
                continue
            winner, loser = (group[i], group[j]) if p > 0.5 else (group[j], group[i])
            steps = lambda c: [s for s in c.episode.steps if s.agent in c.seats and s.completion_ids and s.prompt_ids is not None and s.logprobs is not None]  # noqa: E731
            out += decision_pairs(steps(winner), steps(loser))
    return out, ties


class INPOTrainer(PreferenceTrainer):
    """INPO's square loss on judged on-policy pairs, LoRA; the update loop, log-probs and state are DPO's."""

    Config = INPOConfig

    def __init__(self, model, config: INPOConfig, *, temperature: float, pad_id: int, seed: int = 0):
        super().__init__(model, config, temperature=temperature, pad_id=pad_id, seed=seed)
        self.logp_temperature = temperature  # the sampler's, as pi_t was recorded
        self.judge = build_judge(config.judge)
        self.ties = 0

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
