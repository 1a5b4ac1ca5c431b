"""HiPER: a plan-execute policy trained with hierarchical advantage estimation ("HiPER: Hierarchical Plan-Execute
Reinforcement learning for LLM agents", arXiv 2602.16165).

The learner is a plan-execute agent (`agents.plan_execute`): every reply is a switch decision, a subgoal and the
world's action, and its `Step.info` says which turns open a segment and where each part's tokens end. Per iteration:

1. Value features: the policy's last hidden state before the reply (V_H and V_term read it) and right after
   `</subgoal>` (V_L reads it, so the low-level value conditions on the subgoal), one no-gradient forward.
2. Values from three small heads (`ValueHeads`) on those features, then per trajectory (one seat's turns in one
   episode) the hierarchical advantages of `trainers.hae`, on rewards shaped as HiPER does:
   r_t = reward_t - invalid_action_penalty * 1[fallback] - keep_change_penalty * 1[KEEP with a changed subgoal].
3. Each level's advantages normalised over the batch (`normalize_advantages`), then put on its own tokens:
   A_term on the switch tokens of every turn, A_H on the subgoal tokens of a segment's first turn (0 on the verbatim
   subgoal of a KEEP turn), A_L on the action tokens; the clipped policy loss of `trainers.grpo` on those per-token
   advantages (with the k3 KL to the adapter-free reference when beta > 0).
4. The value heads regress (MSE, `value_epochs` full-batch Adam steps) on the targets: V_H on A_H + V_H at segment
   starts, V_L on A_L + V_L, V_term on the within-segment return G_t^seg. The heads read detached features: the
   value loss trains the heads, never the policy's LoRA weights.

The heads and their optimiser are part of the trainer's state: checkpoints save them and `--resume` restores them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from agora.scoring import hidden_states_at
from agora.trajectory import Episode, Step
from trainers.advantages import Sample, credited_return
from trainers.grpo import PolicyGradientTrainer, PolicyLossConfig
from trainers.hae import hierarchical_advantages, normalized

LEVELS = ("high", "low", "termination")  # the value heads, in this order


class HiPERConfig(PolicyLossConfig):
    """HiPER's hyperparameters (the campaign file's `trainer:` keys); the loss keys are GRPO's."""

    gamma: float = Field(1.0, ge=0.0, le=1.0, description="discount per turn (HiPER: 1.0)")
    lambda_turn: float = Field(1.0, ge=0.0, le=1.0, description="GAE lambda of the low level, inside a segment")
    lambda_segment: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda of the high level, over segments")
    normalize_advantages: bool = Field(
        True, description="normalise each level's advantages over the batch before adding them to their tokens"
    )
    invalid_action_penalty: float = Field(
        0.1, ge=0.0, description="subtracted from a turn's reward when its reply did not parse (HiPER: 0.1)"
    )
    keep_change_penalty: float = Field(
        0.3,
        ge=0.0,
        description="subtracted from a turn's reward when it said KEEP but changed the subgoal (HiPER: 0.3; only "
        "unconstrained decoding can)",
    )
    value_hidden: int = Field(32, ge=0, le=65536, description="width of each value head's hidden layer; 0 = linear")
    value_learning_rate: float = Field(1e-2, gt=0.0, le=1.0, description="Adam learning rate of the value heads")
    value_epochs: int = Field(
        100, ge=1, le=10_000, description="full-batch Adam steps of the value heads per iteration"
    )
    feature_batch_size: int = Field(16, ge=1, le=4096, description="samples per forward when reading value features")


class ValueHeads(torch.nn.Module):
    """V_H, V_L and V_term: one small MLP (or a linear map) per level on the policy's last hidden state, standardised
    per vector first (a layer norm without weights: a model's hidden states have a few very large dimensions).

    Each head predicts a normalised value: V = mean + std * head(x), with the mean and standard deviation of every
    target the level has seen (`observe`; value normalisation as in PopArt, "Learning values across many orders of
    magnitude", arXiv 1602.07714, without its output correction), so the baseline is the running mean return from
    the first update on rather than whatever a few Adam steps reach from 0. Initialised from `generator`, the output
    layer at zero (every value starts at the running mean: 0 before any target)."""

    def __init__(self, hidden_size: int, width: int, generator: torch.Generator):
        super().__init__()

        def head() -> torch.nn.Module:
            if not width:
                return torch.nn.Linear(hidden_size, 1)
            return torch.nn.Sequential(torch.nn.Linear(hidden_size, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

        self.heads = torch.nn.ModuleList(head() for _ in LEVELS)
        for h in self.heads:
            layers = [m for m in h.modules() if isinstance(m, torch.nn.Linear)]
            for layer in layers[:-1]:
                torch.nn.init.normal_(layer.weight, std=1 / math.sqrt(layer.in_features), generator=generator)
                torch.nn.init.zeros_(layer.bias)
            torch.nn.init.zeros_(layers[-1].weight)
            torch.nn.init.zeros_(layers[-1].bias)
        # per level: targets seen, their mean, the sum of squared deviations (Welford), float64
        self.register_buffer("count", torch.zeros(len(LEVELS), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(len(LEVELS), dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(len(LEVELS), dtype=torch.float64))

    def scale(self, level: str) -> tuple[float, float]:
        """(mean, std) of the targets `level` has seen; (0, 1) before any, std at least 1e-3."""
        k = LEVELS.index(level)
        n = float(self.count[k])
        std = math.sqrt(float(self.m2[k]) / n) if n else 1.0
        return float(self.mean[k]), max(std, 1e-3) if n else 1.0

    def observe(self, level: str, targets: torch.Tensor) -> None:
        """Add a batch of targets to `level`'s running mean and variance (Chan et al.'s parallel update)."""
        k, x = LEVELS.index(level), targets.detach().double().cpu()
        if not len(x):
            return
        n_a, n_b = float(self.count[k]), float(len(x))
        mean_b, m2_b = float(x.mean()), float(((x - x.mean()) ** 2).sum())
        delta, total = mean_b - float(self.mean[k]), n_a + n_b
        self.mean[k] += delta * n_b / total
        self.m2[k] += m2_b + delta**2 * n_a * n_b / total
        self.count[k] = total

    def normalised(self, features: torch.Tensor, level: str) -> torch.Tensor:
        """The head's output [N] before de-normalisation."""
        x = torch.nn.functional.layer_norm(features, features.shape[-1:])
        return self.heads[LEVELS.index(level)](x).squeeze(-1)

    def forward(self, features: torch.Tensor, level: str) -> torch.Tensor:
        """Values [N] of `level` from features [N, H]: mean + std * head(x)."""
        mean, std = self.scale(level)
        return mean + std * self.normalised(features, level)


def level_masks(length: int, spans: list[int], boundary: bool, format_ok: bool = True) -> dict[str, list[bool]]:
    """Which completion tokens each level's advantage goes on: the switch part (tokens before `spans[0]`), the
    subgoal part (`spans[0]` to `spans[1]`, only on a segment's first turn) and the action part (the rest). A reply
    not in the plan format (unconstrained decoding) is all action: its tags cannot say where its parts end."""
    if not format_ok:
        spans = [0, 0]
    switch_end, subgoal_end = min(spans[0], length), min(max(spans[1], spans[0]), length)
    return {
        "termination": [t < switch_end for t in range(length)],
        "high": [boundary and switch_end <= t < subgoal_end for t in range(length)],
        "low": [t >= subgoal_end for t in range(length)],
    }


def value_offset(step: Step) -> int:
    """Where V_L reads a reply: right after its `</subgoal>` (the subgoal is part of its state); at the reply's
    start when the reply is not in the plan format."""
    if not step.info.get("format_ok", True):
        return 0
    return min(step.info["spans"][1], len(step.completion_ids))


def shaped_reward(step: Step, config: HiPERConfig) -> float:
    """r_t with HiPER's shaping: the invalid-action and changed-subgoal penalties."""
    info = step.info or {}
    return (
        step.reward
        - config.invalid_action_penalty * step.fallback
        - config.keep_change_penalty * bool(info.get("keep_changed"))
    )


class HiPERTrainer(PolicyGradientTrainer):
    """HiPER: hierarchical advantages (segment, turn, switch) from a three-headed value model, clipped policy loss."""

    Config = HiPERConfig
    learner_policy: ClassVar[str] = "plan_execute"

    def __init__(self, model, config: HiPERConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        device = next(model.parameters()).device
        init = torch.Generator().manual_seed(seed + 1)
        self.values = ValueHeads(model.config.hidden_size, config.value_hidden, init).to(device)
        self.value_optimizer = torch.optim.Adam(self.values.parameters(), lr=config.value_learning_rate)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "values": self.values.state_dict(),
            "value_optimizer": self.value_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.values.load_state_dict(state["values"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])

    def features(self, steps: list[Step]) -> torch.Tensor:
        """[N, 2, H]: the hidden state before each reply and right after its `</subgoal>`."""
        cfg, out = self.config, []
        self.model.eval()
        order = sorted(range(len(steps)), key=lambda i: steps[i].prompt_ids)  # shared prefixes run once
        for lo in range(0, len(order), cfg.feature_batch_size):
            chunk = [steps[i] for i in order[lo : lo + cfg.feature_batch_size]]
            out.append(
                hidden_states_at(
                    self.model,
                    [s.prompt_ids for s in chunk],
                    [s.completion_ids for s in chunk],
                    [[0, value_offset(s)] for s in chunk],
                    pad_id=self.pad_id,
                )
            )
        features = torch.cat(out) if out else torch.zeros((0, 2, self.model.config.hidden_size))
        return features[torch.argsort(torch.tensor(order))] if order else features

    def update(self, episodes: list[Episode], seats: list[str]) -> dict[str, float]:
        cfg = self.config
        trajectories = []  # (episode, seat, learner steps)
        for episode in episodes:
            for seat in seats:
                steps = [s for s in episode.steps if s.agent == seat and s.completion_ids and s.prompt_ids]
                if any(s.info is None or "spans" not in s.info for s in steps):
                    raise ValueError(
                        "HiPER trains a plan-execute agent (learner.policy: plan_execute): these steps have no plan"
                    )
                if steps:
                    trajectories.append((episode, seat, steps))
        flat = [s for _, _, steps in trajectories for s in steps]
        if not flat:
            return {"train/samples": 0.0}
        features = self.features(flat)
        with torch.no_grad():
            v_high = self.values(features[:, 0], "high").cpu().numpy()
            v_term = self.values(features[:, 0], "termination").cpu().numpy()
            v_low = self.values(features[:, 1], "low").cpu().numpy()
        results, lo = [], 0
        for episode, seat, steps in trajectories:
            hi = lo + len(steps)
            hae = hierarchical_advantages(
                [shaped_reward(s, cfg) for s in steps],
                [bool(s.info["segment_start"]) for s in steps],
                v_high[lo:hi],
                v_low[lo:hi],
                v_term[lo:hi],
                gamma=cfg.gamma,
                lambda_turn=cfg.lambda_turn,
                lambda_segment=cfg.lambda_segment,
            )
            results.append(hae)
            lo = hi
        boundary = np.concatenate([h.boundary for h in results])
        raw = {level: np.concatenate([getattr(h, level) for h in results]) for level in LEVELS}
        adv = dict(raw)
        if cfg.normalize_advantages:
            adv = {
                "high": normalized(raw["high"], boundary),
                "low": normalized(raw["low"]),
                "termination": normalized(raw["termination"]),
            }
        samples, k = [], 0
        for (episode, seat, steps), hae in zip(trajectories, results):
            ret = credited_return(episode, seat, "own")
            for t, step in enumerate(steps):
                masks = level_masks(
                    len(step.completion_ids),
                    step.info["spans"],
                    bool(hae.boundary[t]),
                    bool(step.info.get("format_ok", True)),
                )
                tokens = [
                    sum(float(adv[level][k]) * masks[level][j] for level in LEVELS)
                    for j in range(len(step.completion_ids))
                ]
                samples.append(
                    Sample.from_step(
                        step,
                        advantage=adv["low"][k],
                        group=f"{episode.seed}:{seat}",
                        episode=episode.index,
                        ret=ret,
                        token_advantages=tokens,
                    )
                )
                k += 1
        metrics = self.step(samples)
        targets = {
            "high": np.concatenate([h.high_targets for h in results]),
            "low": np.concatenate([h.low_targets for h in results]),
            "termination": np.concatenate([h.termination_targets for h in results]),
        }
        metrics.update(self.fit_values(features, targets, boundary))
        metrics.update(plan_metrics(flat, results, raw))
        metrics["train/fallback_rate"] = sum(s.fallback for s in flat) / len(flat)
        return metrics

    def fit_values(
        self, features: torch.Tensor, targets: dict[str, np.ndarray], boundary: np.ndarray
    ) -> dict[str, float]:
        """`value_epochs` full-batch Adam steps on the three heads' mean squared errors. Returns each level's loss
        before and after the steps, and the explained variance 1 - Var(target - V) / Var(target) of the values the
        advantages used (before the steps: how well the critic predicts returns it has not been fitted on)."""
        device = features.device
        rows = {
            "high": torch.tensor(np.flatnonzero(boundary), device=device),
            "low": torch.arange(len(features), device=device),
            "termination": torch.arange(len(features), device=device),
        }
        column = {"high": 0, "low": 1, "termination": 0}
        goal = {
            level: torch.tensor(targets[level], dtype=torch.float32, device=device)[rows[level]] for level in LEVELS
        }
        x = {level: features[rows[level], column[level]] for level in LEVELS}
        out: dict[str, float] = {}
        with torch.no_grad():  # the values the advantages used
            for level in LEVELS:
                predicted = self.values(x[level], level)
                out[f"train/value_loss/{level}"] = float(torch.mean((predicted - goal[level]) ** 2))
                out[f"train/explained_variance/{level}"] = explained_variance(predicted, goal[level])
                self.values.observe(level, goal[level])
        scaled = {}
        for level in LEVELS:
            mean, std = self.values.scale(level)
            scaled[level] = (goal[level] - mean) / std
        self.values.train()
        for _ in range(self.config.value_epochs):
            losses = [torch.mean((self.values.normalised(x[level], level) - scaled[level]) ** 2) for level in LEVELS]
            self.value_optimizer.zero_grad(set_to_none=True)
            sum(losses).backward()
            self.value_optimizer.step()
        with torch.no_grad():
            for level in LEVELS:
                out[f"train/value_loss_after/{level}"] = float(
                    torch.mean((self.values(x[level], level) - goal[level]) ** 2)
                )
        return out


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target); 0 when the targets do not vary."""
    spread = float(target.var(unbiased=False)) if len(target) > 1 else 0.0
    residual = (target - predicted.detach()).var(unbiased=False)
    return 1.0 - float(residual) / spread if spread > 0 else 0.0


def plan_metrics(steps: list[Step], results: list, raw: dict[str, np.ndarray]) -> dict[str, float]:
    """How the agent plans: segments per trajectory, turns per segment, the share of turns that open a segment, of
    replies in the plan format and of KEEPs that changed their subgoal; each level's raw advantage scale."""
    segments = [int(h.boundary.sum()) for h in results]
    boundary = np.concatenate([h.boundary for h in results])
    turns = [len(h.boundary) for h in results]
    infos = [s.info for s in steps]
    return {
        "plan/segments_per_trajectory": float(np.mean(segments)),
        "plan/segment_length": float(sum(turns) / max(sum(segments), 1)),
        "plan/switch_rate": float(np.mean([bool(i["segment_start"]) for i in infos])),
        "plan/format_ok_rate": float(np.mean([bool(i.get("format_ok", True)) for i in infos])),
        "plan/keep_changed_rate": float(np.mean([bool(i.get("keep_changed")) for i in infos])),
        **{
            f"train/advantage_std/{level}": float(np.std(values[boundary] if level == "high" else values))
            for level, values in raw.items()
        },
    }
