"""Nash-MD and Nash Mirror Prox on an LLM: regularised policy gradient against an opponent made from the learner.

Both solve the KL-regularised preference game (the tabular forms and the game are in `solvers.preference_games`)

    max_pi min_pi'  P(pi > pi') - beta KL(pi || mu) + beta KL(pi' || mu),    mu = the model without its adapter,

by playing the learner pi (the campaign's learner seats) against an opponent this trainer supplies in every other
seat (`opponent_policy`), and scoring each episode by the preference P(y > y') of the learner's play y over the
opponent's y': the judge's comparison of the learner's side of the episode with the opponent's (the outcome judge:
1 / 0.5 / 0 as the learner's return is above / equal to / below the opponent's; an llm judge: its probability).

The update, per learner decision y (a sequence; log pi its summed token log-probs at the sampler's temperature),

    r~ = (P - 0.5) - beta sg(log pi(y) - log mu(y)) - (1/eta) sg(log pi(y) - log pi_k(y))
    L  = -min(rho r~, clip(rho, 1 - eps, 1 + eps) r~),   rho = pi(y) / pi_old(y),

is REINFORCE with the 0.5 baseline on the regularised objective E_pi[P] - beta KL(pi || mu) - (1/eta) KL(pi || pi_k)
(the gradient of E_pi[log pi - log q] is E_pi[(log pi - log q) grad log pi]). At the first step rho = 1 and its
gradient is that of TRL's former Nash-MD loss, beta sum_t sg(log pi - log mu) log pi - (P - 0.5) sum_t log pi.

Nash-MD ("Nash Learning from Human Feedback", arXiv 2312.00886): the opponent is the geometric mixture
pi^mu ∝ pi^(1 - a) mu^a taken token by token (`agora.mixture.GeometricMixture`, a = `mixture_coef`, the paper's
best about 0.125), sharing the learner's weights; no prox term (1/eta = 0); one step per sample by default.

Nash Mirror Prox ("Accelerating Nash Learning from Human Feedback via Mirror Prox", arXiv 2505.19731): the
extragradient pair, each prox step approximated by `epochs` policy-gradient passes from pi_k:

    pi_{k+1/2} = argmax_pi P(pi > pi_k)       - beta KL(pi || mu) - (1/eta) KL(pi || pi_k)
    pi_{k+1}   = argmax_pi P(pi > pi_{k+1/2}) - beta KL(pi || mu) - (1/eta) KL(pi || pi_k)

One campaign iteration is one half of the pair: the half step's rollouts are pi_k against a frozen copy of pi_k;
its update gives pi_{k+1/2}, which the frozen copy then holds while the learner's weights go back to pi_k; the full
step's rollouts are pi_k against pi_{k+1/2}, and its update from pi_k gives pi_{k+1}, copied into the opponent
for the next half step. pi_k is the sampler in both, so its log-probs are the recorded ones (no extra forward).
Each prox step starts a fresh optimizer: it is its own maximisation. An even number of iterations ends on a
full step.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from agora.lora import adapter_state, load_adapter_state
from agora.mixture import GeometricMixture
from agora.rollout import policy_seed
from agora.trainer import sample_temperature
from agora.trajectory import Episode
from trainers.dno import sampled_steps
from trainers.judges import Candidate, JudgeConfig, build_judge, judge_metrics
from trainers.preference import MAX_TOKENS_PER_PASS, Decision, PreferenceTrainer


def nash_pg_loss(
    logp: torch.Tensor,
    old: torch.Tensor,
    ref: torch.Tensor,
    preference: torch.Tensor,
    *,
    beta: float,
    inv_eta: float = 0.0,
    anchor: torch.Tensor | None = None,
    clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-decision loss -min(rho r~, clip(rho) r~) and the regularised reward r~ (module docstring), from the
    sequence log-probs of the policy (`logp`, with gradient), the sampler (`old`), the reference (`ref`) and, for
    the prox term, the iterate pi_k (`anchor`); `preference` P(y > y') in [0, 1]."""
    detached = logp.detach()
    reward = (preference - 0.5) - beta * (detached - ref)
    if inv_eta:
        reward = reward - inv_eta * (detached - anchor)
    rho = torch.exp(logp - old)
    surrogate = rho * reward
    if clip is not None:
        surrogate = torch.minimum(surrogate, rho.clamp(1.0 - clip, 1.0 + clip) * reward)
    return -surrogate, reward


class NashConfig(BaseModel):
    """What Nash-MD and Nash Mirror Prox share (the campaign file's `trainer:` keys)."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.1, ge=0.0, le=100.0, description="beta: KL regularisation towards the adapter-free reference")
    judge: JudgeConfig = Field(
        JudgeConfig(),
        description="P(y > y') of the learner's side of each episode over the opponent's: {id: outcome} (1 / 0.5 / 0 "
        "by return) or {id: llm, model: ..., rubric: ...}",
    )
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    micro_batch_size: int = Field(
        8, ge=1, le=4096, description="decisions per forward/backward pass (one optimizer step each)"
    )
    max_tokens_per_pass: int | None = MAX_TOKENS_PER_PASS
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")
    epochs: int = Field(1, ge=1, le=100, description="passes over each iteration's decisions")
    clip: float | None = Field(
        None, gt=0.0, lt=1.0, description="PPO clipping of rho = pi / pi_old beyond the first pass; null: none"
    )


class NashMDConfig(NashConfig):
    mixture_coef: float = Field(
        0.125,
        ge=0.0,
        le=1.0,
        description="a: the opponent decodes from pi^(1-a) mu^a token by token (0: self-play; 1: the reference)",
    )


class MirrorProxConfig(NashConfig):
    eta: float = Field(1.0, gt=0.0, le=1e6, description="eta: prox step size; (1/eta) KL(pi || pi_k) per step")
    epochs: int = Field(4, ge=1, le=100, description="policy-gradient passes approximating each prox step")
    clip: float | None = Field(0.2, gt=0.0, lt=1.0, description="PPO clipping of rho = pi / pi_old; null: none")


def preference_items(
    episodes: list[Episode], learner_seats: list[str], judge
) -> tuple[list[tuple[Decision, float]], list[float]]:
    """(decision, P) for each sampled decision of the learner, P the judge's preference of the learner's side of
    its episode over the other seats'; and every episode's P. An episode without an opponent seat is refused."""
    pairs, found = [], []
    for episode in episodes:
        mine = tuple(s for s in learner_seats if s in episode.returns)
        theirs = tuple(s for s in episode.returns if s not in mine)
        if not theirs:
            raise ValueError("the learner played every seat: Nash-MD and Mirror Prox need its opponent in the episode")
        pairs.append((Candidate(episode, mine), Candidate(episode, theirs)))
        found.append(sampled_steps(pairs[-1][0]))
    preferences = judge.compare(pairs) if pairs else []
    items = [(Decision.of(s), float(p)) for steps, p in zip(found, preferences) for s in steps]
    return items, [float(p) for p in preferences]


class NashTrainer(PreferenceTrainer):
    """The regularised policy gradient of both methods on (decision, P) items; DPO's loop, log-probs and state."""

    Config = NashConfig
    plays_opponent = True

    def __init__(self, model, config: NashConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.judge = build_judge(config.judge)
        self.seed = seed
        self.preferences: list[float] = []

    def logp_temperature(self, decisions: list[Decision]) -> float:
        """The sampler's temperature, as pi_old was recorded: rho = 1 before the first step."""
        return sample_temperature(d.temperature for d in decisions)

    def items(self, episodes: list[Episode], learner_seats: list[str]) -> list:
        items, self.preferences = preference_items(episodes, learner_seats, self.judge)
        return items

    def inv_eta(self) -> float:
        return 0.0

    def batch_loss(self, batch: list) -> tuple[torch.Tensor, list[float], int]:
        cfg = self.config
        decisions = [d for d, _ in batch]
        logp, n = self.logps(decisions)
        ref, _ = self.logps(decisions, reference=True)
        old = torch.tensor([sum(d.old_logprobs) for d in decisions], dtype=logp.dtype, device=logp.device)
        preference = torch.tensor([p for _, p in batch], dtype=logp.dtype, device=logp.device)
        loss, _ = nash_pg_loss(
            logp, old, ref, preference, beta=cfg.beta, inv_eta=self.inv_eta(), anchor=old, clip=cfg.clip
        )
        return loss, (logp - ref).detach().tolist(), n

    def update(self, episodes: list[Episode], learner_seats: list[str]) -> dict[str, float]:
        calls_before = self.judge.calls
        metrics = super().update(episodes, learner_seats)
        metrics["train/decisions"] = metrics.pop("train/pairs")
        metrics.pop("train/accuracy")
        metrics["train/kl_ref"] = metrics.pop("train/margin")  # mean log pi/mu of the decisions as trained on
        metrics["train/preference"] = float(np.mean(self.preferences)) if self.preferences else 0.5
        metrics.update(judge_metrics(self.judge, calls_before))
        return metrics


class NashMDTrainer(NashTrainer):
    """Nash-MD: the learner against the token-level geometric mixture of itself and its reference."""

    Config = NashMDConfig

    def opponent_policy(self, learner) -> Any:
        """The mixture, decoding with the learner's settings (no prefix cache) through the learner's own weights."""
        config = learner.config.model_copy(update={"prefix_cache_mb": 0})
        return type(learner)(
            config,
            seed=policy_seed(self.seed, "nash-md mixture"),
            model=GeometricMixture(self.model, self.config.mixture_coef),
            tokenizer=learner.tokenizer,
        )


class MirrorProxTrainer(NashTrainer):
    """Nash Mirror Prox: alternating half and full prox steps against a frozen copy of pi_k, then of pi_{k+1/2}."""

    Config = MirrorProxConfig

    def __init__(self, model, config: MirrorProxConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.frozen = copy.deepcopy(model)  # the opponent's weights: pi_k, then pi_{k+1/2}
        self.frozen.requires_grad_(False)
        self.frozen.eval()
        self.phase: Literal["half", "full"] = "half"

    def inv_eta(self) -> float:
        return 1.0 / self.config.eta

    def opponent_policy(self, learner) -> Any:
        return type(learner)(
            learner.config,
            seed=policy_seed(self.seed, "mirror-prox iterate"),
            model=self.frozen,
            tokenizer=learner.tokenizer,
        )

    def update(self, episodes: list[Episode], learner_seats: list[str]) -> dict[str, float]:
        anchor = adapter_state(self.model)  # pi_k (a copy)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=self.config.learning_rate)  # a fresh prox problem
        metrics = super().update(episodes, learner_seats)
        load_adapter_state(self.frozen, adapter_state(self.model))  # the opponent: pi_{k+1/2}, or pi_{k+1}
        metrics["train/full_step"] = float(self.phase == "full")
        if self.phase == "half":
            load_adapter_state(self.model, anchor)  # the full step starts from pi_k and samples from it
            self.phase = "full"
        else:
            self.phase = "half"
        return metrics

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "full_step_next": int(self.phase == "full"),  # an int: checkpoint states compare as tensors and numbers
            "opponent": {k: v.cpu() for k, v in adapter_state(self.frozen).items()},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.phase = "full" if state["full_step_next"] else "half"
        load_adapter_state(self.frozen, state["opponent"])
