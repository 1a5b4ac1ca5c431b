"""What the campaign kinds that train an LLM share (train, lspo): its `learner:` keys, the learner itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.llm import LLMConfig, LLMPolicy
from agora.campaign import CampaignKind
from agora.errors import ScenarioError
from agora.lora import LoRAConfig
from agora.rollout import policy_seed
from agora.scenario import validate_model
from agora.serving import ServerConnection

SERVER_KEYS = set(ServerConnection.model_fields)  # keys only a server agent has


class LearnerKeys(BaseModel):
    """`learner: {lora: {...}, <llm parameter>: <value>, ...}` of a kind whose learner plays fixed seats (lspo,
    stackelberg, hila): its LoRA settings, and agents/llm.py's keys (validated by `LearnerCampaign`)."""

    model_config = ConfigDict(extra="allow")
    lora: LoRAConfig = LoRAConfig()


def refuse_server_learner(keys: dict[str, Any], file: str | None) -> None:
    """A learner given as a server agent (`policy: server`, `base_url: ...`) is refused with the reason: the
    weights behind a server are not Agora's to update."""
    policy = keys.get("policy")
    if policy == "server" or (SERVER_KEYS & set(keys)):
        raise ScenarioError(
            "the learner cannot be a server agent: its weights live on the server, and a campaign must update them",
            file=file,
            path="learner.policy" if policy is not None else f"learner.{sorted(SERVER_KEYS & set(keys))[0]}",
            hint="give the learner a local model (`model:` a folder, .gguf or the embedded default); server "
            "agents can play opponents, league members, evaluation opponents and the judge",
        )


class LearnerCampaign(CampaignKind):
    """A campaign kind whose file has `learner: {lora: {...}, <llm keys>}` and `seed`: an LLM with LoRA adapters."""

    def __init__(self, spec: BaseModel, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        refuse_server_learner(spec.learner.model_extra or {}, source)
        self.learner_config: LLMConfig = validate_model(
            LLMConfig, spec.learner.model_extra or {}, prefix="learner", file=source
        )

    def file_config(self) -> dict[str, Any]:
        out = super().file_config()
        out["learner"] = {**out["learner"], **self.learner_config.model_dump(mode="json")}
        return out

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
