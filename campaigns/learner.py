"""What the campaign kinds that train an LLM share (train, lspo): its `learner:` keys, the learner itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.llm import LLMConfig, LLMPolicy
from agents.plan_execute import PlanExecutePolicy
from agora.campaign import CampaignKind
from agora.errors import ScenarioError
from agora.lora import LoRAConfig
from agora.rollout import policy_seed
from agora.scenario import validate_model
from agora.serving import ServerConnection

SERVER_KEYS = set(ServerConnection.model_fields)  # keys only a server agent has
LEARNER_POLICIES = {"llm": LLMPolicy, "plan_execute": PlanExecutePolicy}  # `learner.policy`: what a learner can be


def learner_class(config: LLMConfig) -> type[LLMPolicy]:
    """The learner policy class whose parameters `config` holds (`llm` or `plan_execute`): snapshots and workers
    rebuild the learner from its config alone."""
    return next(c for c in LEARNER_POLICIES.values() if type(config) is c.Config)


class LearnerKeys(BaseModel):
    """`learner: {lora: {...}, [policy: llm | plan_execute,] <llm parameter>: <value>, ...}` of a kind whose learner
    plays fixed seats (lspo, stackelberg, hila): its LoRA settings, and the keys of its policy (agents/llm.py's, or
    agents/plan_execute.py's), validated by `LearnerCampaign`."""

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

    learner_policies: tuple[str, ...] = ("llm",)  # the `learner.policy` values this kind plays (LEARNER_POLICIES)

    def __init__(self, spec: BaseModel, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        keys = dict(spec.learner.model_extra or {})
        refuse_server_learner(keys, source)
        self.learner_policy = keys.pop("policy", "llm")
        if self.learner_policy not in self.learner_policies:
            raise ScenarioError(
                f"this campaign kind's learner cannot be {self.learner_policy!r}",
                file=source,
                path="learner.policy",
                hint=f"one of: {', '.join(self.learner_policies)} (a learner is an LLM with LoRA adapters)",
            )
        config_class = LEARNER_POLICIES[self.learner_policy].Config
        self.learner_config: LLMConfig = validate_model(config_class, keys, prefix="learner", file=source)

    def check_trainer(self, trainer: str, cls: Any, world: str, source: str | None) -> None:
        """A trainer that reads more than a plain LLM's replies (HiPER: a plan-execute agent's plan) refuses a
        learner of another kind, naming the key to add; one that reads a world's episode info (`Trainer.worlds`:
        regret-loss) refuses another world."""
        if cls.worlds is not None and world not in cls.worlds:
            raise ScenarioError(
                f"trainer {trainer} trains on the world {' or '.join(cls.worlds)}, not {world}",
                file=source,
                path="trainer.id",
                hint="choose another trainer (`agora trainers`) or world",
            )
        needed = cls.learner_policy
        if needed != "llm" and self.learner_policy != needed:
            raise ScenarioError(
                f"trainer {trainer} trains a {needed} learner, not {self.learner_policy}",
                file=source,
                path="learner.policy",
                hint=f"add `policy: {needed}` under learner:",
            )

    def learner_keys(self) -> dict[str, Any]:
        """The learner's policy keys as the run records them: `policy` (when not the plain llm) and every parameter."""
        policy = {"policy": self.learner_policy} if self.learner_policy != "llm" else {}
        return {**policy, **self.learner_config.model_dump(mode="json")}

    def learner_for(self, config: LLMConfig | None = None, **kwargs) -> LLMPolicy:
        """A learner policy of the file's kind (`llm` or `plan_execute`) with `config` (default the file's):
        `seed`, `model`, `tokenizer` as `LLMPolicy` takes them."""
        config = config or self.learner_config
        return learner_class(config)(config, **kwargs)

    def file_config(self) -> dict[str, Any]:
        out = super().file_config()
        out["learner"] = {**out["learner"], **self.learner_keys()}
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
            self.learner_for(config, seed=policy_seed(spec.seed, "learner"), model=model, tokenizer=tokenizer),
        )
