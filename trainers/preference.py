"""Preference losses on pairs / labels built from trajectories: DPO, IPO, KTO (DPO: arXiv 2305.18290; IPO: arXiv
2310.12036; KTO: arXiv 2402.01306).

With r(x, y) = log pi_theta(y|x) - log pi_ref(y|x) (sums over the completion's tokens) and the
margin h = r(x, y_w) - r(x, y_l):

    DPO:  L = -(1 - s) log sigma(beta h) - s log sigma(-beta h)      (s: label smoothing, cDPO)
    IPO:  L = (h - 1 / (2 beta))^2
    KTO:  desirable   L = lambda_D (1 - sigma(beta (r - z0)))
          undesirable L = lambda_U (1 - sigma(beta (z0 - r)))
          z0 = max(0, mean over mismatched pairs (x_i, y_j), i != j, of r), detached; y_j is the
          completion of the next item in the update's shuffled order (TRL's shift by one, taken across
          micro-batches so that a micro-batch of one is not paired with itself); one item: z0 = 0

Data from trajectories. Pairs (DPO/IPO): within a GRPO group (one initial state, one seat), the
best- and worst-returning trajectories, if their returns differ by at least `min_margin`, give one
pair per decision whose prompt is token-for-token the same in both (the same state, e.g. the
opening turn). Labels (KTO): a decision is desirable when its trajectory's return is above its
group's mean, undesirable when below; ties carry no label. The reference is the learner's model
with the LoRA adapter disabled; log-probs use the model's own distribution (T = 1).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.checkpoint import checkpoint

from agora.scoring import reference_logprobs, sequence_logprobs
from agora.trainer import Trainer
from agora.trajectory import Episode

MAX_TOKENS_PER_PASS = Field(
    4096,
    ge=1,
    description="memory bound: a micro-batch's sequences go through the model in chunks of at most this many "
    "padded tokens (rows x longest row; one sequence at least), each recomputed in the backward pass; loss and "
    "gradients unchanged, one extra forward of the chunked sequences; null: the whole micro-batch at once",
)


class PreferenceConfig(BaseModel):
    """DPO / IPO / KTO hyperparameters (the campaign file's `trainer:` keys)."""

    model_config = ConfigDict(extra="forbid")
    loss: Literal["dpo", "ipo", "kto"] = Field(
        "dpo", description="dpo | ipo (pairs) or kto (desirable/undesirable labels)"
    )
    beta: float = Field(0.1, gt=0.0, description="strength of the implicit KL to the reference")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="cDPO: assumed share of flipped preference labels")
    kto_labels: Literal["relative", "outcome"] = Field(
        "relative",
        description="KTO: relative (above / below the group's mean return; ties unlabelled) or outcome (the "
        "return's sign: won desirable, lost undesirable, 0 unlabelled)",
    )
    desirable_weight: float = Field(1.0, gt=0.0, description="KTO lambda_D")
    undesirable_weight: float = Field(1.0, gt=0.0, description="KTO lambda_U")
    min_margin: float = Field(
        0.0, ge=0.0, description="pairs: least return difference between chosen and rejected trajectories"
    )
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    epochs: int = Field(1, ge=1, le=100, description="passes over each iteration's pairs / labels")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="sequences per forward/backward pass")
    max_tokens_per_pass: int | None = MAX_TOKENS_PER_PASS
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")


# --- losses -------------------------------------------------------------------------------------


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probs (policy and reference, chosen and rejected)."""
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *, beta: float
) -> torch.Tensor:
    """Per-pair IPO loss: the margin regressed onto 1 / (2 beta)."""
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    return (h - 1 / (2 * beta)) ** 2


def kto_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    desirable: torch.Tensor,
    mismatched_logp: torch.Tensor,
    mismatched_ref_logp: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence KTO loss and the reference point z0 = max(0, mean over mismatched prompt/completion pairs
    (x_i, y_j), i != j, of r(x_i, y_j)), detached; with no mismatched pair (an update of one item) z0 = 0.
    `desirable_weight` (lambda_D) scales the desirable term, `undesirable_weight` (lambda_U) the undesirable one."""
    if mismatched_logp.numel() == 0:
        z0 = torch.zeros((), dtype=logp.dtype, device=logp.device)
    else:
        z0 = (mismatched_logp - mismatched_ref_logp).mean().clamp(min=0).detach()
    r = logp - ref_logp
    loss = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))),
    )
    return loss, z0


# --- data from trajectories -----------------------------------------------------------------------


@dataclass
class Decision:
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float] | None = None  # log pi_old per completion token, as the sampler recorded it
    temperature: float | None = None  # the sampler's temperature, which `old_logprobs` are under
    grammar: str | None = None  # the Lark grammar it was decoded under: scored under the same masks

    @classmethod
    def of(cls, step) -> Decision:
        """The decision a trajectory `Step` records."""
        return cls(step.prompt_ids, step.completion_ids, step.logprobs, step.temperature, step.grammar)


def decision_pairs(chosen_steps: list, rejected_steps: list) -> list[tuple[Decision, Decision]]:
    """(chosen, rejected) decisions of two trajectories from the same initial state, on each prompt both saw
    token for token (the same state, e.g. the opening turn) where their completions differ."""
    rejected_by_prompt = {tuple(s.prompt_ids): s for s in rejected_steps}
    pairs = []
    for step in chosen_steps:
        other = rejected_by_prompt.get(tuple(step.prompt_ids))
        if other is not None and other.completion_ids != step.completion_ids:
            pairs.append((Decision.of(step), Decision.of(other)))
    return pairs


def _trajectories(episodes: list[Episode], learner_seats: list[str]) -> dict[str, list[tuple[float, list]]]:
    """group uid (seed:seat) -> [(return, the seat's steps with tokens)]."""
    groups: dict[str, list[tuple[float, list]]] = defaultdict(list)
    for episode in episodes:
        for seat in learner_seats:
            steps = [s for s in episode.steps if s.agent == seat and s.completion_ids and s.prompt_ids is not None]
            groups[f"{episode.seed}:{seat}"].append((float(episode.returns.get(seat, 0.0)), steps))
    return groups


def preference_pairs(
    episodes: list[Episode], learner_seats: list[str], *, min_margin: float = 0.0
) -> list[tuple[Decision, Decision]]:
    """(chosen, rejected) decisions: best vs worst trajectory of each group, on prompts both saw."""
    pairs = []
    for members in _trajectories(episodes, learner_seats).values():
        best = max(members, key=lambda m: m[0])
        worst = min(members, key=lambda m: m[0])
        if best[0] - worst[0] <= 0 or best[0] - worst[0] < min_margin:
            continue
        pairs += decision_pairs(best[1], worst[1])
    return pairs


def kto_labels(
    episodes: list[Episode], learner_seats: list[str], mode: Literal["relative", "outcome"] = "relative"
) -> list[tuple[Decision, bool]]:
    """(decision, desirable). relative: above its group's mean return -> True, below -> False, equal -> left out;
    outcome: by the return's sign, as outcome-labelled KTO does (a won game's decisions desirable, a lost game's
    undesirable, a return of 0 left out), so a group whose games all end alike still labels its decisions."""
    out = []
    for members in _trajectories(episodes, learner_seats).values():
        mean = sum(m[0] for m in members) / len(members) if mode == "relative" else 0.0
        for ret, steps in members:
            if ret != mean:
                out += [(Decision.of(s), ret > mean) for s in steps]
    return out


def kto_partners(decisions: list[Decision]) -> list[Decision | None]:
    """The completion each decision of a shuffled update is mismatched with for KTO's z0: the next decision's,
    cyclically (x_i, y_{i+1}), as TRL's KTO shifts completions by one, but across the whole update rather than
    within a micro-batch, so a micro-batch of one is never paired with itself; None for an update of one item
    (no mismatched pair: z0 = 0). The update's order is the trainer's generator's shuffle: deterministic."""
    if len(decisions) < 2:
        return [None] * len(decisions)
    return decisions[1:] + decisions[:1]


def token_chunks(decisions: list[Decision], max_tokens: int) -> list[list[int]]:
    """Consecutive index chunks of `decisions` whose padded size (rows x the longest prompt + completion among
    them) stays within `max_tokens`; a sequence longer than that is a chunk by itself."""
    chunks: list[list[int]] = []
    longest = 0
    for i, d in enumerate(decisions):
        n = len(d.prompt_ids) + len(d.completion_ids)
        if chunks and (len(chunks[-1]) + 1) * max(longest, n) <= max_tokens:
            chunks[-1].append(i)
            longest = max(longest, n)
        else:
            chunks.append([i])
            longest = n
    return chunks


# --- trainer --------------------------------------------------------------------------------------


class PreferenceTrainer(Trainer):
    """DPO / IPO / KTO on pairs or labels built from each group's best and worst trajectories, LoRA."""

    Config = PreferenceConfig

    def __init__(self, model, config: PreferenceConfig, *, pad_id: int, seed: int = 0):
        super().__init__(model, config, pad_id=pad_id, seed=seed)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters (wrap it with peft's get_peft_model)")
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.masks = None  # `scoring_masks`, made at the first scoring (the campaign sets the tokenizer first)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def logp_temperature(self, decisions: list[Decision]) -> float:
        """DPO, IPO and KTO compare the model's own distribution (T = 1) with the reference's."""
        return 1.0

    def logps(self, decisions: list[Decision], *, reference: bool = False) -> tuple[torch.Tensor, int]:
        """Sequence log-probs sum_t log pi(y_t | x, y_<t) at `logp_temperature`, and the tokens forwarded;
        `reference`: of the adapter-free model, without gradient. With gradients and more padded tokens than
        `max_tokens_per_pass`, the sequences go through in `token_chunks`, each under activation checkpointing:
        only one chunk's activations are alive at a time (in the backward pass, while it is recomputed)."""
        limit = getattr(self.config, "max_tokens_per_pass", None)
        parts = token_chunks(decisions, limit) if limit and not reference and torch.is_grad_enabled() else []
        if len(parts) < 2:
            return self.score(decisions, reference=reference)
        tokens = 0
        out = []
        for part in parts:
            chunk = [decisions[i] for i in part]
            out.append(checkpoint(lambda c=chunk: self.score(c)[0], use_reentrant=False))
            tokens += sum(len(d.prompt_ids) + len(d.completion_ids) for d in chunk)
        return torch.cat(out), tokens

    def score(self, decisions: list[Decision], *, reference: bool = False) -> tuple[torch.Tensor, int]:
        """`logps` in one pass."""
        prompts, completions = [d.prompt_ids for d in decisions], [d.completion_ids for d in decisions]
        fn = reference_logprobs if reference else sequence_logprobs
        logp, _, mask, tokens = fn(
            self.model,
            prompts,
            completions,
            temperature=self.logp_temperature(decisions),
            pad_id=self.pad_id,
            allowed=self.scoring().allowed([d.grammar for d in decisions], completions),
        )
        return (logp * mask).sum(-1), tokens

    def scoring(self):
        if self.masks is None:
            self.masks = self.scoring_masks()
        return self.masks

    def items(self, episodes: list[Episode], learner_seats: list[str]) -> list:
        """What one update trains on: (chosen, rejected) pairs, or (decision, desirable) labels for KTO."""
        if self.config.loss == "kto":
            return kto_labels(episodes, learner_seats, self.config.kto_labels)
        return preference_pairs(episodes, learner_seats, min_margin=self.config.min_margin)

    def batch_loss(self, batch: list) -> tuple[torch.Tensor, list[float], int]:
        """Per-item loss of a micro-batch, the margins it logs (h for pairs, r for KTO), tokens forwarded."""
        cfg = self.config
        if cfg.loss == "kto":  # items (decision, desirable, partner): `fit` adds the partner (`kto_partners`)
            decisions = [d for d, _, _ in batch]
            desirable = torch.tensor([label for _, label, _ in batch])
            # mismatched pairs (x_i, y_j), y_j the completion of another item of the update, estimate z0
            shifted = [
                Decision(d.prompt_ids, other.completion_ids, temperature=d.temperature, grammar=other.grammar)
                for d, _, other in batch
                if other is not None
            ]
            logp, n1 = self.logps(decisions)
            ref, _ = self.logps(decisions, reference=True)
            mis = mis_ref = torch.zeros(0)
            n2 = 0
            if shifted:
                with torch.no_grad():
                    mis, n2 = self.logps(shifted)
                mis_ref, _ = self.logps(shifted, reference=True)
            loss, _ = kto_loss(
                logp,
                ref,
                desirable,
                mis,
                mis_ref,
                beta=cfg.beta,
                desirable_weight=cfg.desirable_weight,
                undesirable_weight=cfg.undesirable_weight,
            )
            return loss, (logp - ref).detach().tolist(), n1 + n2
        chosen, n1 = self.logps([c for c, _ in batch])
        rejected, n2 = self.logps([r for _, r in batch])
        ref_c, _ = self.logps([c for c, _ in batch], reference=True)
        ref_r, _ = self.logps([r for _, r in batch], reference=True)
        if cfg.loss == "dpo":
            loss = dpo_loss(chosen, rejected, ref_c, ref_r, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
        else:
            loss = ipo_loss(chosen, rejected, ref_c, ref_r, beta=cfg.beta)
        return loss, ((chosen - ref_c) - (rejected - ref_r)).detach().tolist(), n1 + n2

    def update(self, episodes: list[Episode], seats: list[str]) -> dict[str, float]:
        return self.fit(self.items(episodes, seats))

    def fit(self, items: list) -> dict[str, float]:
        """`epochs` passes of the loss over what `items` builds — (chosen, rejected) pairs (dpo, ipo,
        inpo) or (decision, desirable) labels (kto) — or over items built elsewhere (campaigns/lspo.py).

        train/accuracy (pairs): share of pairs whose implicit reward margin h was > 0 when they were trained on.
        """
        cfg = self.config
        kto = getattr(cfg, "loss", None) == "kto"
        start, tokens, total, margins, steps = time.perf_counter(), 0, 0.0, [], 0
        self.masks = self.scoring_masks()  # each constrained completion's masks, replayed once for every epoch
        self.model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(items), generator=self.generator).tolist()
            if kto:
                partners = kto_partners([items[i][0] for i in order])
            for lo in range(0, len(order), cfg.micro_batch_size):
                batch = [items[i] for i in order[lo : lo + cfg.micro_batch_size]]
                if kto:
                    batch = [(d, label, partners[lo + k]) for k, (d, label) in enumerate(batch)]
                self.optimizer.zero_grad(set_to_none=True)
                loss, batch_margins, n = self.batch_loss(batch)
                loss.mean().backward()
                torch.nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)
                self.optimizer.step()
                total += float(loss.detach().mean())
                margins += batch_margins
                tokens += n
                steps += 1
        seconds = time.perf_counter() - start
        return {
            "train/loss": total / steps if steps else 0.0,
            "train/labels" if kto else "train/pairs": float(len(items)),
            "train/margin": sum(margins) / len(margins) if margins else 0.0,  # mean h (pairs) or r (KTO)
            **({} if kto else {"train/accuracy": sum(h > 0 for h in margins) / len(margins) if margins else 0.0}),
            "train/optimizer_steps": float(steps),
            "perf/train_seconds": seconds,
            "perf/train_tokens_per_s": tokens / seconds if seconds > 0 and tokens else 0.0,
        }
