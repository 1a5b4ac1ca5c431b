"""Scoring with a shared prompt prefix: the same log-probs and gradients as scoring each row whole, and the prefix's
forward never runs the LM head over its positions."""

from __future__ import annotations

import pytest
import torch

from agora.lora import LoRAConfig, load_learner
from agora.scoring import reference_logprobs, sequence_logprobs

PREFIX = list(range(100, 140))  # 40 shared prompt tokens, far more than any completion
PROMPTS = [PREFIX + [7, 8], PREFIX + [9], PREFIX + [10, 11, 12]]
COMPLETIONS = [[20, 21, 22], [23], [24, 25]]


@pytest.fixture
def learner(tiny_model_dir):
    model, _ = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    with torch.no_grad():  # LoRA B = 0 at init: make the adapter change the outputs, so "disabled" differs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    return model


def lm_head_positions(model) -> tuple[list[int], object]:
    """Sequence lengths of every LM-head output, recorded by a forward hook."""
    seen: list[int] = []
    head = model.get_output_embeddings()
    return seen, head.register_forward_hook(lambda module, args, out: seen.append(out.shape[1]))


def test_the_shared_prefix_forward_scores_no_prefix_positions(learner):
    c_max = max(len(c) for c in COMPLETIONS)
    for score in (sequence_logprobs, reference_logprobs):
        seen, hook = lm_head_positions(learner)
        try:
            score(learner, PROMPTS, COMPLETIONS, temperature=1.0, pad_id=0)
        finally:
            hook.remove()
        assert len(seen) == 2 and max(seen) <= c_max + 1, seen  # the prefix call, then the rows' last C_max + 1


def test_shared_prefix_gives_the_same_logprobs_and_gradients(learner):
    def scored(share: bool):
        learner.zero_grad(set_to_none=True)
        logp, _, mask, _ = sequence_logprobs(
            learner, PROMPTS, COMPLETIONS, temperature=1.0, pad_id=0, share_prefix=share
        )
        (logp * mask).sum().backward()  # the gradient flows back through the prefix's cached keys and values
        grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.requires_grad}
        ref, _, _, _ = reference_logprobs(learner, PROMPTS, COMPLETIONS, temperature=1.0, pad_id=0, share_prefix=share)
        return logp[mask].detach(), ref[mask], grads

    shared, unshared = scored(True), scored(False)
    torch.testing.assert_close(shared[0], unshared[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared[1], unshared[1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(shared[0], shared[1], atol=1e-3)  # the reference is the adapter-free model
    assert any(float(g.abs().sum()) > 0 for n, g in shared[2].items() if "layers.0." in n)  # reaches the prefix
    for name, g in shared[2].items():
        torch.testing.assert_close(g, unshared[2][name], atol=1e-5, rtol=1e-4)
