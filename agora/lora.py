"""LoRA adapters (peft) on the embedded default or any causal LM: build, save, load (the one checkpoint format of
adapters).

The learner gets its own copy of the base model (never the process-wide cached one that fixed
LLM policies share), wrapped by `peft.get_peft_model`; the frozen reference of the KL term is the
same model with the adapter disabled.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LoRAConfig(BaseModel):
    """The campaign file's `learner.lora:` keys (peft.LoraConfig's names)."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, le=1024, description="rank of the update B A")
    alpha: float = Field(16.0, gt=0.0, description="lora_alpha: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="lora_dropout (keep 0 for exact ratio-1 logprobs)")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1, description="module names that get adapters"
    )


def load_learner(name: str, lora: LoRAConfig, *, device: str = "auto", dtype: str = "auto", seed: int = 0):
    """(peft model, tokenizer): a private copy of model `name` with fresh LoRA adapters (A ~ seeded init, B = 0)."""
    import torch
    from peft import LoraConfig

    from agora.models import load_causal_lm

    base, tokenizer = load_causal_lm(name, device=device, dtype=dtype, private=True)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # LoRA's A init draws from the global generator; keep it seeded and restore it
    try:
        model = peft_model(base, config)
    finally:
        torch.random.set_rng_state(state)
    return model, tokenizer


def load_trained(name: str, adapter: str | Path, *, device: str = "auto", dtype: str = "auto"):
    """(peft model in eval mode, tokenizer): model `name` with the LoRA adapter folder `save_adapter` wrote (a
    checkpoint's adapter/), without peft's deprecation warning (`peft_model`)."""
    from peft import LoraConfig

    from agora.models import load_causal_lm

    base, tokenizer = load_causal_lm(name, device=device, dtype=dtype, private=True)
    model = peft_model(base, LoraConfig.from_pretrained(str(adapter)))
    load_adapter_file(model, adapter)
    return model.eval(), tokenizer


def peft_model(base, config):
    """peft's `get_peft_model(base, config)`, without the deprecation warning peft's own call into transformers
    raises (nothing for a user to do about it)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(base, config)


def adapter_state(model) -> dict:
    """The LoRA weights only (what a checkpoint needs)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model, state: dict) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"checkpoint holds weights the model has no place for: {unexpected[:3]}")


def save_adapter(model, folder: str | Path) -> None:
    """peft's adapter folder (adapter_config.json + adapter_model.safetensors), loadable with
    PeftModel.from_pretrained."""
    model.save_pretrained(str(folder))


def load_adapter_file(model, folder: str | Path) -> None:
    """Load the LoRA weights of a folder `save_adapter` wrote."""
    from safetensors.torch import load_file

    load_adapter_state(model, load_file(str(Path(folder) / "adapter_model.safetensors")))
