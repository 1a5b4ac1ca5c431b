"""Regret-loss training of an LLM learner on online learning ("Do LLM Agents Have Regret? A Case Study in Online
Learning and Games", arXiv 2403.16843).

The learner plays the online-learning world (worlds/online_learning.py): each round t it writes a distribution
over n actions, then sees the loss vector ℓ_t. Its regret on one loss sequence ℓ_1..ℓ_T is

    R = Σ_t ⟨ℓ_t, p̄_θ(h_{t−1})⟩ − min_a Σ_t ℓ_t(a)      (not divided by T, as in the paper)

and the label-free regret-loss over the N loss sequences of an update is

    L(θ) = Σ_j h(R_j) f(R_j, k) / Σ_j f(R_j, k),   h(x) = max(0, x)², f(x, k) = e^{kx}

(k = 0: the mean of h(R); k → ∞: h of the worst sequence's regret). The paper minimises this L as a function of
θ by gradient descent, weights included, so the gradient flows through f as well as through h (the weights
f / Σ f are a softmax of k R, not detached).

The played distribution. The policy writes its distribution as text, a reply `PLAY p_0 ... p_{n−1}` under the
world's reply grammar. With the world's `grid` the grammar allows exactly the finite set Y of distributions whose
probabilities are multiples of 1/grid (C(grid + n − 1, n − 1) of them), so what the policy plays in expectation is

    p̄_θ(h) = Σ_{y ∈ Y} π_θ(y | prompt(h)) p(y),   π_θ(y | x) = exp s_θ(x, y) / Σ_{y' ∈ Y} exp s_θ(x, y')

with s_θ(x, y) the sequence log-prob of y's completion tokens (the reply as the tokenizer writes it, plus the stop
token the sample ended with), scored under the grammar's token masks at the sampling temperature: a distribution
over the grid. Under the grammar the model puts its whole mass on Y; the renormalisation only drops the mass of
other tokenizations of the same texts (none for a tokenizer that splits digits, as SmolLM2's). This is exact and
differentiable: no sampling, no REINFORCE. Every candidate is scored, one forward per round whose |Y| rows share
the prompt's KV, so Y must stay small: the trainer refuses more than `max_candidates` (set the world's `grid`,
e.g. 4 or 10) rather than scoring a sample of Y.

The histories h_{t−1} are the prompts the learner saw (`Step.prompt_ids`); in this world they show the losses,
never the learner's own plays, so they do not depend on θ and recomputing p̄ on them after an optimizer step is
exact, not off-policy. The rollouts of one GRPO group share their loss sequence and prompts: each distinct
sequence counts once (N = distinct sequences).

Memory: L couples the sequences only through the scalars R_j, so its gradient is Σ_j (∂L/∂R_j) ∂R_j/∂θ. A first
pass without gradients gives every p̄ and R_j, hence L and w_j = ∂L/∂R_j; a second pass backpropagates
Σ_j w_j Σ_t ⟨ℓ_t, p̄_t⟩ in chunks of `rounds_per_pass` rounds, which is the exact gradient of L.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from agora.scoring import sequence_logprobs
from agora.trainer import Trainer, sample_temperature
from agora.trajectory import Episode
from solvers.regret import simplex_grid

REPLY_LABEL = "PLAY "  # how the online-learning world's replies start (its `render_action`)


class RegretLossConfig(BaseModel):
    """Regret-loss hyperparameters (the campaign file's `trainer:` keys)."""

    model_config = ConfigDict(extra="forbid")
    k: float = Field(1.0, ge=0.0, le=100.0, description="f(x, k) = e^{kx}: 0 = mean of h(R); large = worst sequence")
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    epochs: int = Field(1, ge=1, le=100, description="optimizer steps per update, each on all N loss sequences")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")
    rounds_per_pass: int = Field(
        2,
        ge=1,
        le=10_000,
        description="memory bound: rounds whose |Y| candidate replies are scored before a backward pass (each "
        "round one forward of |Y| rows); the gradient is the same for any value",
    )
    max_candidates: int = Field(
        128,
        ge=2,
        le=100_000,
        description="largest reply set Y scored per round; a world grid with more is refused (lower its `grid`)",
    )


# --- the objective -------------------------------------------------------------------------------


def regret_loss(regrets: torch.Tensor, k: float) -> torch.Tensor:
    """L = Σ_j h(R_j) f(R_j, k) / Σ_j f(R_j, k), h(x) = max(0, x)², f(x, k) = e^{kx}; differentiable in R through
    both h and the weights f / Σ f = softmax(k R) (as `solvers.regret.regret_loss`, which it equals)."""
    weights = torch.softmax(k * regrets, dim=0)
    return (regrets.clamp(min=0) ** 2 * weights).sum()


def expected_play(logps: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """p̄ = Σ_y π(y) p(y), π = softmax of the candidates' sequence log-probs `logps` [..., |Y|] over Y;
    `vectors` [|Y|, n] are the distributions the candidates write."""
    return torch.softmax(logps, dim=-1) @ vectors


def sequence_regret(losses: torch.Tensor, plays: torch.Tensor) -> torch.Tensor:
    """R = Σ_t ⟨ℓ_t, p_t⟩ − min_a Σ_t ℓ_t(a) for losses and plays [T, n]."""
    return (losses * plays).sum() - losses.sum(dim=0).min()


def write_hundredths(hundredths: int) -> str:
    """25 -> '0.25': a probability as the world's replies write it."""
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def candidate_replies(n_actions: int, grid: int) -> tuple[list[str], np.ndarray]:
    """The reply set Y of the online-learning world at `grid`: its texts and distributions [|Y|, n]."""
    points = simplex_grid(n_actions, grid)
    texts = [REPLY_LABEL + " ".join(write_hundredths(h) for h in np.rint(p * 100).astype(int).tolist()) for p in points]
    return texts, np.asarray(points)


# --- data from trajectories ----------------------------------------------------------------------


@dataclass
class LossSequence:
    """One learner's episode: its loss vectors [T, n], and per round the prompt it saw, the grammar and temperature
    its reply was sampled under, and the token ids that followed the reply (its stop token)."""

    losses: np.ndarray
    prompts: list[list[int]]
    grammars: list[str | None]
    temperature: float
    tails: list[list[int]]
    grid: int
    replies: list[list[int]] | None = None  # Y's reply token ids (set by the trainer)
    vectors: torch.Tensor | None = None  # Y's distributions [|Y|, n]


def loss_sequences(episodes: list[Episode], seats: list[str], tokenizer) -> list[LossSequence]:
    """The distinct loss sequences the learner played in `seats` (rollouts of one group share theirs: once each)."""
    out, seen = [], set()
    for episode in episodes:
        losses = np.asarray(episode.info["losses"], dtype=np.float64)
        for seat in seats:
            steps = [s for s in episode.steps if s.agent == seat]
            if len(steps) != len(losses) or any(s.prompt_ids is None or not s.completion_ids for s in steps):
                raise ValueError(
                    f"episode {episode.index}: the learner's {len(steps)} steps do not carry tokens for "
                    f"each of its {len(losses)} rounds (only an LLM learner's own replies train)"
                )
            key = (losses.tobytes(), tuple(tuple(s.prompt_ids) for s in steps))
            if key in seen:
                continue
            seen.add(key)
            tails = []
            for s in steps:  # the stop token the sample ended with (absent when cut by max_new_tokens)
                last = s.completion_ids[-1]
                tails.append([last] if tokenizer.decode([last], skip_special_tokens=True) == "" else [])
            out.append(
                LossSequence(
                    losses,
                    [list(s.prompt_ids) for s in steps],
                    [s.grammar for s in steps],
                    sample_temperature(s.temperature for s in steps),
                    tails,
                    int(episode.info["grid"]),
                )
            )
    return out


# --- trainer -------------------------------------------------------------------------------------


class RegretLossTrainer(Trainer):
    """Regret-loss (arXiv 2403.16843) on the online_learning world: the exact expected play over the reply grid,
    LoRA."""

    Config = RegretLossConfig
    worlds = ("online_learning",)  # its losses and reply grid come from that world's episode info

    def __init__(self, model, config: RegretLossConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters (wrap it with peft's get_peft_model)")
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)  # the loss is exact (no draws); kept for the contract
        self.masks = None  # `scoring_masks`, made per update (the campaign sets the tokenizer first)
        self.tokens = 0  # tokens forwarded

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def sequences(self, episodes: list[Episode], seats: list[str]) -> list[LossSequence]:
        """The update's distinct loss sequences with their reply sets Y (token ids and distributions); refused when
        a sampled reply is off the grid or Y is larger than `max_candidates`."""
        self.check_replies(episodes, seats)
        self.masks = self.scoring_masks()
        out = loss_sequences(episodes, seats, self.tokenizer)
        built: dict[tuple[int, int], tuple[list[list[int]], torch.Tensor]] = {}
        for s in out:
            key = (s.losses.shape[1], s.grid)
            if key not in built:
                texts, vectors = candidate_replies(*key)
                if len(texts) > self.config.max_candidates:
                    raise ValueError(
                        f"the reply grid has {len(texts)} candidates at n = {key[0]}, grid = {key[1]} (max_candidates "
                        f"{self.config.max_candidates}): set the world's `grid` lower (e.g. 4 or 10) or raise "
                        "max_candidates"
                    )
                ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
                built[key] = ids, torch.tensor(vectors, dtype=torch.float32)
            s.replies, s.vectors = built[key]
        return out

    def expected_plays(self, sequence: LossSequence, rounds: range) -> torch.Tensor:
        """p̄ [len(rounds), n] of `sequence`'s rounds (with gradients when enabled): one forward per round of its
        |Y| candidate replies, which share the prompt's KV."""
        plays = []
        for t in rounds:
            completions = [c + sequence.tails[t] for c in sequence.replies]
            logp, _, mask, n = sequence_logprobs(
                self.model,
                [sequence.prompts[t]] * len(completions),
                completions,
                temperature=sequence.temperature,
                pad_id=self.pad_id,
                allowed=self.masks.allowed([sequence.grammars[t]] * len(completions), completions),
            )
            plays.append(expected_play((logp * mask).sum(-1), sequence.vectors.to(logp.device)))
            self.tokens += n
        return torch.stack(plays)

    def regrets(self, sequences: list[LossSequence]) -> torch.Tensor:
        """R_j of each sequence under the current weights, without gradients."""
        with torch.no_grad():
            out = []
            for s in sequences:
                plays = self.expected_plays(s, range(len(s.prompts))).cpu()
                out.append(sequence_regret(torch.tensor(s.losses, dtype=plays.dtype), plays))
        return torch.stack(out)

    def accumulate_gradient(self, sequences: list[LossSequence]) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds ∇_θ L to the parameters' gradients; returns L and the R_j (before any step). Pass 1 (`regrets`)
        gives R and w_j = ∂L/∂R_j, f differentiated through; pass 2 backpropagates Σ_j w_j Σ_t ⟨ℓ_t, p̄_t⟩ (the
        min term does not depend on θ) in chunks of `rounds_per_pass` rounds: the same gradient as one graph."""
        r = self.regrets(sequences).requires_grad_(True)
        loss = regret_loss(r, self.config.k)
        (weights,) = torch.autograd.grad(loss, r)
        step = self.config.rounds_per_pass
        for w, s in zip(weights.tolist(), sequences):
            if w == 0.0:  # h'(R) = h(R) = 0 for R <= 0: the sequence adds nothing to the gradient
                continue
            for lo in range(0, len(s.prompts), step):
                chunk = range(lo, min(lo + step, len(s.prompts)))
                plays = self.expected_plays(s, chunk)
                losses = torch.tensor(s.losses[lo : chunk.stop], dtype=plays.dtype, device=plays.device)
                (w * (losses * plays).sum()).backward()
        return loss.detach(), r.detach()

    def update(self, episodes: list[Episode], seats: list[str]) -> dict[str, float]:
        cfg = self.config
        start, self.tokens = time.perf_counter(), 0
        sequences = self.sequences(episodes, seats)
        if not sequences:
            return {"train/sequences": 0.0, "train/optimizer_steps": 0.0}
        self.model.train()
        metrics: dict[str, float] = {}
        for epoch in range(cfg.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            loss, r = self.accumulate_gradient(sequences)
            torch.nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)
            self.optimizer.step()
            if epoch == 0:  # the loss and regrets of the weights the episodes were played with
                rounds = torch.tensor([len(s.prompts) for s in sequences], dtype=r.dtype)
                metrics = {
                    "train/loss": float(loss),
                    "train/regret": float(r.mean()),
                    "train/regret_per_round": float((r / rounds).mean()),
                }
        seconds = time.perf_counter() - start
        return {
            **metrics,
            "train/sequences": float(len(sequences)),
            "train/candidates": float(np.mean([len(s.replies) for s in sequences])),
            "train/optimizer_steps": float(cfg.epochs),
            "perf/train_seconds": seconds,
            "perf/train_tokens_per_s": self.tokens / seconds if seconds > 0 else 0.0,
        }

    def check_replies(self, episodes: list[Episode], seats: list[str]) -> None:
        """Every reply the learner sampled must be one of Y's texts: else the world's reply format or grid is not
        the one the candidates are built for, and p̄ would not be what the policy plays."""
        for episode in episodes:
            if "losses" not in episode.info or "grid" not in episode.info:
                raise ValueError("regret-loss trains on the online_learning world: its episodes record losses and grid")
            n = len(episode.info["losses"][0]) if episode.info["losses"] else 0
            texts = set(candidate_replies(n, int(episode.info["grid"]))[0]) if n else set()
            for step in episode.steps:
                if step.agent in seats and step.text not in texts:
                    raise ValueError(
                        f"episode {episode.index}: the learner's reply {step.text[:60]!r} is not on the reply grid "
                        f"(grid {episode.info['grid']}): decode under the world's grammar (learner.constrained: true)"
                    )
