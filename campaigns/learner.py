"""What the campaign kinds that train an LLM share (train, lspo): its `learner:` keys, the learner itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agents.llm import LLMConfig, LLMPolicy
from agora.campaign import CampaignKind
from agora.rollout import policy_seed
from agora.scenario import validate_model


class LearnerCampaign(CampaignKind):
    """A campaign kind whose file has `learner: {lora: {...}, <llm keys>}` and `seed`: an LLM with LoRA adapters."""

    def __init__(self, spec: BaseModel, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        self.learner_config: LLMConfig = validate_model(
            LLMConfig, spec.learner.model_extra or {}, prefix="learner", file=source
        )

    def loading_message(self) -> str:
        return f"loading the learner ({self.learner_config.model}) ..."

    def load_learner(self) -> tuple[Any, Any, LLMPolicy]:
        """(peft model, tokenizer, the policy acting with that model): a private copy of the model with fresh,
        seeded LoRA adapters; the policy samples from the weights the trainer updates."""
        import torch

        from agora.lora import load_learner

        spec, config = self.spec, self.learner_config
        torch.manual_seed(policy_seed(spec.seed, "torch"))  # nothing should draw from it; keep it seeded regardless
        model, tokenizer = load_learner(
            config.model,
            spec.learner.lora,
            device=config.device,
            dtype=config.dtype,
            seed=policy_seed(spec.seed, "lora"),
        )
        return (
            model,
            tokenizer,
            LLMPolicy(config, seed=policy_seed(spec.seed, "learner"), model=model, tokenizer=tokenizer),
        )
