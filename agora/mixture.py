"""Decoding from the geometric (token-level logit) mixture of a LoRA policy and its reference: Nash-MD's opponent.

Nash-MD ("Nash Learning from Human Feedback", arXiv 2312.00886) plays the policy pi against

    pi^mu(y_t | x, y_<t)  ∝  pi(y_t | x, y_<t)^(1 - a) · mu(y_t | x, y_<t)^a,

mu the reference: the same peft model with its adapter disabled. The mixture is taken token by token on the
logits, as TRL's former NashMDTrainer did (`mixture_coef` a), not on the weights: a LoRA scaled by (1 - a) is a
different distribution. `GeometricMixture` is a model for `agora.engine.sample`: each forward runs the model
twice, adapter on and off, each with its own KV cache (`PairedCache`), and returns (1 - a)·logits + a·logits_ref,
so the engine's temperature, top-p, reply grammar and batching apply to the mixture unchanged. It decodes
without a prefix cache (its cache is not a plain list of layers).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from agora.engine import growing_cache, kv


class PairedCache:
    """The policy's KV cache and the reference's, kept in step: row repetition and selection apply to both.

    It has no `layers` of its own, so the engine forwards every prefill in one pass and never crops it."""

    layers: tuple = ()

    def __init__(self, model):
        self.policy, self.reference = growing_cache(model), growing_cache(model)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.policy.batch_repeat_interleave(repeats)
        self.reference.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.policy.batch_select_indices(indices)
        self.reference.batch_select_indices(indices)


class GeometricMixture(torch.nn.Module):
    """A peft model's token-level geometric mixture with its adapter-free self, weight `coef` on the reference
    (0: the policy itself; 1: the reference), as a causal LM for `agora.engine.sample`. It shares the peft model's
    weights: every update of the learner is the mixture's at its next forward."""

    def __init__(self, model, coef: float):
        super().__init__()
        if not 0.0 <= coef <= 1.0:
            raise ValueError(f"mixture coefficient {coef} must be in [0, 1]")
        if not hasattr(model, "disable_adapter"):
            raise ValueError("the geometric mixture needs a peft model (its reference is the model without adapter)")
        self.model, self.coef = model, float(coef)
        self.config, self.generation_config = model.config, model.generation_config

    def _supports_logits_to_keep(self) -> bool:  # the engine's prefill then scores the last position only
        base = self.model.get_base_model()
        return bool(getattr(base, "_supports_logits_to_keep", lambda: False)())

    def new_cache(self) -> PairedCache:
        """The KV caches of one `engine.sample` call (the engine asks for it instead of its own)."""
        return PairedCache(self.model)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, **kwargs):
        """(1 - coef)·logits + coef·logits_ref at the positions asked for; `past_key_values` a `PairedCache`."""
        cache = past_key_values if past_key_values is not None else self.new_cache()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, **kwargs}
        own = self.model(**inputs, **kv(self.model, cache.policy)).logits.float() if self.coef < 1.0 else 0.0
        if self.coef > 0.0:
            with self.model.disable_adapter():
                ref = self.model(**inputs, **kv(self.model, cache.reference)).logits.float()
        else:
            ref = 0.0
        return SimpleNamespace(logits=(1.0 - self.coef) * own + self.coef * ref)
