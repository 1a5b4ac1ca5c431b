"""GRPO / GiGPO policy-gradient updates on token logprobs, with LoRA (peft) (GRPO: "DeepSeekMath", arXiv 2402.03300;
GiGPO: arXiv 2505.10978).

Per completion token t of sample i, with rho = pi_theta / pi_old and A_i from `trainers.advantages`:

    pg_t   = max(-A_i * rho_t, -A_i * clip(rho_t, 1 - eps, 1 + eps_high))
    kl_t   = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1                      (k3, "low_var_kl")
    loss_t = pg_t + beta * kl_t

aggregated over tokens of the whole mini-batch ("token", DAPO/TRL default) or as the mean over
samples of each sample's token mean ("sequence", the original GRPO 1/|o_i|); both count every
sample of the mini-batch, those with A = 0 included. beta = 0 skips the reference forward, and the
forward and backward of samples with A = 0 (their loss is 0 and they have no gradient). log pi is
recomputed from the exact `prompt_ids + completion_ids` the sampler used, as log softmax(logits / T)
with the sampler's temperature, so rho = 1 before the first update. The reference is the same model
with its LoRA adapter disabled.

`group_reward: spo | arena` replaces each trajectory's return by its SPO win rate or ArenaRL rank
reward within its group, from the configured pairwise judge (`trainers.tournament`,
`trainers.judges`); the advantage then treats it as the return. The rest is unchanged.

Prompts of one micro-batch usually share a long prefix (chat template, demonstration, the world's
instructions): it is run once at batch size 1 and its KV cache repeated over the rows, with the
gradient flowing back through the repeat (Prefix Grouper's equivalence, arXiv 2506.05433, via a cached prefix).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.scoring import reference_logprobs, right_aligned, sequence_logprobs
from agora.trainer import Trainer, sample_temperature
from trainers.advantages import Sample
from trainers.judges import JudgeConfig, build_judge, judge_metrics


class PolicyLossConfig(BaseModel):
    """The clipped policy loss and its optimiser: what every policy-gradient trainer (GRPO, GiGPO, HiPER) shares."""

    model_config = ConfigDict(extra="forbid")
    epsilon: float = Field(0.2, gt=0.0, le=1.0, description="clip range: rho in [1 - epsilon, 1 + epsilon_high]")
    epsilon_high: float | None = Field(None, gt=0.0, le=10.0, description="upper clip (DAPO: 0.28); default = epsilon")
    beta: float = Field(0.0, ge=0.0, description="weight of the k3 KL to the frozen reference; 0 skips the reference")
    aggregation: Literal["token", "sequence"] = Field(
        "token", description="loss mean over all tokens, or mean of per-sample token means"
    )
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    epochs: int = Field(1, ge=1, le=100, description="mu: passes over each iteration's samples")
    mini_batches: int = Field(1, ge=1, le=1024, description="optimizer steps per epoch (rho != 1 from the second on)")
    micro_batch_size: int = Field(
        8, ge=1, le=4096, description="samples per forward/backward pass (gradient accumulation)"
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")
    skip_fallbacks: bool = Field(
        False, description="leave out completions the world could not parse (their action was the fallback)"
    )


class GRPOConfig(PolicyLossConfig):
    """GRPO/GiGPO hyperparameters (the campaign file's `trainer:` keys, validated as they are here)."""

    # advantages
    estimator: Literal["grpo", "gigpo"] = Field(
        "grpo", description="grpo: episode groups; gigpo: episode + anchor-state step groups"
    )
    std_normalize: bool = Field(
        True, description="divide advantages by the group's std (False: Dr. GRPO / GiGPO mean_norm)"
    )
    statistics: Literal["group", "batch"] = Field(
        "group", description="advantage mean/std over each group, or over the whole batch"
    )
    credit: Literal["own", "team"] = Field(
        "own", description="each agent's own return, or the team's (cooperative worlds)"
    )
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="discount of GiGPO's step-level returns")
    step_weight: float = Field(1.0, ge=0.0, description="omega: weight of GiGPO's step-level advantage")
    anchor: Literal["exact", "similarity"] = Field(
        "exact", description="GiGPO anchor-state key: identical observations, or difflib-similar ones"
    )
    similarity_threshold: float = Field(
        0.95, gt=0.0, le=1.0, description="GiGPO similarity key: least difflib ratio to share a group"
    )
    anchor_fields: list[str] | None = Field(
        None,
        min_length=1,
        description="GiGPO anchor state: these keys of the observation only (e.g. [counts, values, offer, turn] "
        "without the chat history, which makes every state unique); default: the whole observation",
    )
    invalid_action_penalty: float = Field(
        0.0,
        ge=0.0,
        description="subtracted from a trajectory's return per unparseable reply that fell back (GiGPO/ALFWorld: 0.1)",
    )
    group_reward: Literal["return", "spo", "arena"] = Field(
        "return",
        description="trajectory reward: its return; spo: win rate vs the group (judge); arena: ArenaRL tournament "
        "rank (judge)",
    )
    judge: JudgeConfig = Field(
        JudgeConfig(), description="pairwise judge of spo / arena: {id: outcome} or {id: llm, model: ..., rubric: ...}"
    )

    @model_validator(mode="after")
    def _judged_rewards_are_episode_level(self) -> "GRPOConfig":
        if self.group_reward != "return" and (self.estimator != "grpo" or self.credit != "own"):
            raise ValueError(
                f"group_reward: {self.group_reward} needs estimator: grpo and credit: own (the judge scores whole "
                "trajectories of one seat)"
            )
        return self


def clipped_pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss pg_t + beta * kl_t (see the module docstring) and per-token diagnostics.

    `advantages` is [B] (one per sample), broadcast over the sample's tokens, or [B, C] (one per token, aligned
    with `logp`).
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - epsilon, 1 + (epsilon_high if epsilon_high is not None else epsilon))
    pg = torch.maximum(pg1, pg2)
    loss = pg
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta > 0:
        log_r = ref_logp - logp
        kl = torch.exp(log_r) - log_r - 1
        loss = pg + beta * kl
    loss = loss * mask
    stats = {
        "pg": pg * mask,
        "kl": kl * mask,
        "clipped": (pg2 > pg1).float() * mask,
        "ratio": ratio * mask,
        "approx_kl": (old_logp - logp) * mask,  # k1 estimate of KL(pi_old || pi_theta)
    }
    return loss, stats


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, how: Literal["token", "sequence"], tokens: int, sequences: int
) -> torch.Tensor:
    """Sum of this micro-batch's share of the mini-batch loss.

    token:    sum_i sum_t l_it / (tokens in the mini-batch)
    sequence: sum_i (sum_t l_it / |o_i|) / (samples in the mini-batch)
    """
    if how == "token":
        return per_token.sum() / tokens
    return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / sequences


def advantage_tensor(samples: list[Sample], width: int, device) -> torch.Tensor:
    """The samples' advantages for `clipped_pg_loss`: [B] when each has one, [B, width] right-aligned (as the
    logprobs) when some carry one per token."""
    if all(s.token_advantages is None for s in samples):
        return torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=device)
    rows = [s.token_advantages or [s.advantage] * len(s.completion_ids) for s in samples]
    return right_aligned(rows, width, device)


class PolicyGradientTrainer(Trainer):
    """The clipped policy loss over `Sample`s on LoRA weights (`step`); subclasses turn episodes into samples with
    advantages (`update`)."""

    def __init__(self, model, config: PolicyLossConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters (wrap it with peft's get_peft_model)")
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(seed)  # mini-batch shuffling

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def step(self, samples: list[Sample]) -> dict[str, float]:
        """One iteration's update: `epochs` passes, `mini_batches` optimizer steps each. Returns train/* and perf/*
        metrics."""
        cfg = self.config
        if cfg.skip_fallbacks:
            samples = [s for s in samples if not s.fallback]
        temperature = (
            sample_temperature(s.temperature for s in samples) if samples else 1.0
        )  # the sampler's: rho = 1 before the update
        sums: dict[str, float] = {k: 0.0 for k in ("loss", "pg", "kl", "clipped", "entropy", "ratio", "approx_kl")}
        scored_tokens, forward_tokens, steps, grad_norms = 0, 0, 0, []
        start = time.perf_counter()
        masks = self.scoring_masks()  # replayed once per sample, reused by every epoch
        self.model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(samples), generator=self.generator).tolist()
            per_mini = math.ceil(len(order) / cfg.mini_batches) if order else 0
            for lo in range(0, len(order), per_mini or 1):
                mini = [samples[i] for i in order[lo : lo + per_mini]]
                # Micro-batches in prompt order, so that rows with a long common prefix share it.
                mini.sort(key=lambda s: s.prompt_ids)
                # The loss is normalised by every completion token (or sample) of the mini-batch, as DAPO and
                # TRL divide by the batch's active tokens; without a KL term (beta = 0) a sample with A = 0 adds
                # 0 to that loss and nothing to the gradient, so only credited samples are forwarded.
                n_tokens = sum(len(s.completion_ids) for s in mini)
                scored = mini if cfg.beta > 0 else [s for s in mini if s.credited()]
                if not scored:
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                for mlo in range(0, len(scored), cfg.micro_batch_size):
                    micro = scored[mlo : mlo + cfg.micro_batch_size]
                    prompts = [s.prompt_ids for s in micro]
                    completions = [s.completion_ids for s in micro]
                    allowed = masks.allowed([s.grammar for s in micro], completions)
                    ref = None
                    if cfg.beta > 0:
                        ref = reference_logprobs(
                            self.model,
                            prompts,
                            completions,
                            temperature=temperature,
                            pad_id=self.pad_id,
                            allowed=allowed,
                        )[0]
                    logp, entropy, mask, fwd = sequence_logprobs(
                        self.model, prompts, completions, temperature=temperature, pad_id=self.pad_id, allowed=allowed
                    )
                    forward_tokens += fwd
                    old = right_aligned([s.old_logprobs for s in micro], logp.shape[1], logp.device)
                    adv = advantage_tensor(micro, logp.shape[1], logp.device)
                    per_token, diag = clipped_pg_loss(
                        logp,
                        old,
                        adv,
                        mask.float(),
                        epsilon=cfg.epsilon,
                        epsilon_high=cfg.epsilon_high,
                        ref_logp=ref,
                        beta=cfg.beta,
                    )
                    loss = aggregate(per_token, mask.float(), cfg.aggregation, n_tokens, len(mini))
                    loss.backward()
                    m = mask.float()
                    sums["loss"] += float(loss.detach())  # this micro-batch's share of the mini-batch loss
                    for key in ("pg", "kl", "clipped", "ratio", "approx_kl"):
                        sums[key] += float(diag[key].detach().sum())
                    sums["entropy"] += float((entropy.detach() * m).sum())
                grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)))
                self.optimizer.step()
                steps += 1
                scored_tokens += sum(len(s.completion_ids) for s in scored)
        seconds = time.perf_counter() - start
        tokens = max(scored_tokens, 1)  # the diagnostics are means over the tokens forwarded
        return {
            "train/loss": sums["loss"] / max(steps, 1),  # mean mini-batch loss
            "train/pg_loss": sums["pg"] / tokens,
            "train/kl": sums["kl"] / tokens,
            "train/clip_fraction": sums["clipped"] / tokens,
            "train/entropy": sums["entropy"] / tokens,
            "train/ratio": sums["ratio"] / tokens,
            "train/approx_kl": sums["approx_kl"] / tokens,
            "train/grad_norm": float(sum(grad_norms) / len(grad_norms)) if grad_norms else 0.0,
            "train/samples": float(len(samples)),
            "train/optimizer_steps": float(steps),
            "perf/train_seconds": seconds,
            "perf/train_tokens_per_s": forward_tokens / seconds if seconds > 0 and forward_tokens else 0.0,
        }


class GRPOTrainer(PolicyGradientTrainer):
    """Clipped policy gradient with group-relative advantages (GRPO; GiGPO with estimator: gigpo), LoRA."""

    Config = GRPOConfig

    def __init__(self, model, config: GRPOConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.judge = build_judge(config.judge) if config.group_reward != "return" else None

    @property
    def greedy_anchor(self) -> bool:
        """Whether each group's first rollout is decoded greedily by the learner: ArenaRL's anchor,
        against which every other rollout of the group is seeded (ArenaRL, arXiv 2601.06487)."""
        return self.config.group_reward == "arena"

    def update(self, episodes, seats: list[str]) -> dict[str, float]:
        """The campaign's entry point: the iteration's episodes -> advantages -> `step`."""
        from trainers.advantages import training_samples
        from trainers.tournament import group_rewards

        cfg = self.config
        judged, calls_before = None, self.judge.calls if self.judge else 0
        if self.judge is not None:  # SPO win rates or ArenaRL rank rewards replace the returns
            judged = group_rewards(episodes, seats, self.judge, cfg.group_reward)
        samples, stats = training_samples(
            episodes,
            lambda e: seats,
            estimator=cfg.estimator,
            std_normalize=cfg.std_normalize,
            statistics=cfg.statistics,
            credit=cfg.credit,
            gamma=cfg.gamma,
            step_weight=cfg.step_weight,
            anchor=cfg.anchor,
            similarity_threshold=cfg.similarity_threshold,
            anchor_fields=cfg.anchor_fields,
            invalid_action_penalty=cfg.invalid_action_penalty,
            trajectory_rewards=judged,
        )
        if judged is not None:
            stats.update(judge_metrics(self.judge, calls_before))
        metrics = {**stats, **self.step(samples)}
        metrics["train/fallback_rate"] = sum(s.fallback for s in samples) / len(samples) if samples else 0.0
        return metrics
