"""Supervised fine-tuning of an LLM's LoRA weights on (prompt, answer) pairs: HILA's outer loop ("Adaptive
Collaboration with Humans: Metacognitive Policy Optimization for Multi-Agent LLMs with Continual Learning",
arXiv 2603.07972) learns the expert's answers this way.

    loss = - (1 / |answer tokens|) * sum over pairs i, answer tokens t of log pi(a_i,t | prompt_i, a_i,<t)

The cross-entropy covers the answer tokens only: the prompt is context, never a target. log pi is
`agora.scoring.sequence_logprobs` at temperature 1 (the same scoring GRPO uses), unconstrained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from agora.scoring import sequence_logprobs


class SFTConfig(BaseModel):
    """The outer loop's fine-tuning hyperparameters (a campaign file's `sft:` keys)."""

    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="AdamW learning rate of the LoRA weights")
    epochs: int = Field(3, ge=1, le=100, description="passes over each phase's pairs")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="pairs per forward/backward pass (one step each)")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping by global norm")


@dataclass
class SFTPair:
    """One supervised example: the exact prompt tokens and the target answer's tokens."""

    prompt_ids: list[int]
    answer_ids: list[int]


def answer_nll(model, pairs: list[SFTPair], *, pad_id: int) -> tuple[torch.Tensor, int]:
    """(sum over the pairs' answer tokens of -log pi, number of answer tokens): the prompt is not scored."""
    logp, _, mask, _ = sequence_logprobs(
        model, [p.prompt_ids for p in pairs], [p.answer_ids for p in pairs], temperature=1.0, pad_id=pad_id
    )
    return -(logp * mask.float()).sum(), int(mask.sum())


class SFTTrainer:
    """Cross-entropy on answer tokens (module docstring), AdamW on the model's trainable (LoRA) parameters."""

    Config = SFTConfig

    def __init__(self, model, config: SFTConfig, *, pad_id: int, seed: int = 0):
        self.model, self.config, self.pad_id = model, config, pad_id
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters (wrap it with peft's get_peft_model)")
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(seed)  # the order of pairs in each epoch

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def step(self, pairs: list[SFTPair]) -> dict[str, float]:
        """`epochs` passes over `pairs` in shuffled micro-batches, one optimizer step each; the mean loss per
        answer token of the first and of the last epoch."""
        cfg = self.config
        if not pairs:
            return {"sft/pairs": 0.0, "sft/steps": 0.0}
        start, steps, epoch_losses = time.perf_counter(), 0, []
        self.model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(pairs), generator=self.generator).tolist()
            total, tokens = 0.0, 0
            for lo in range(0, len(order), cfg.micro_batch_size):
                micro = [pairs[i] for i in order[lo : lo + cfg.micro_batch_size]]
                self.optimizer.zero_grad(set_to_none=True)
                nll, n = answer_nll(self.model, micro, pad_id=self.pad_id)
                (nll / max(n, 1)).backward()
                torch.nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)
                self.optimizer.step()
                total, tokens, steps = total + float(nll.detach()), tokens + n, steps + 1
            epoch_losses.append(total / max(tokens, 1))
        self.model.eval()
        return {
            "sft/pairs": float(len(pairs)),
            "sft/steps": float(steps),
            "sft/loss_first_epoch": epoch_losses[0],
            "sft/loss": epoch_losses[-1],
            "sft/perplexity": math.exp(min(epoch_losses[-1], 50.0)),
            "perf/sft_seconds": time.perf_counter() - start,
        }
