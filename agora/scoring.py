"""Scoring token sequences: the logprobs the trainers compare with what the sampler recorded.

`sequence_logprobs` recomputes, with gradients, log pi(token) = log softmax(logits / T) of each
completion token from the exact prompt + completion ids (`agora.engine.sample` recorded them as
pi_old), sharing the batch's common prompt prefix; under a reply grammar's masks when the sample
was constrained (`allowed`, replayed by `agora.constrain`), so that the ratio is 1 before an update.
`reference_logprobs` is the same for the frozen reference (the LoRA adapter disabled).
"""

from __future__ import annotations

import torch

from agora.constrain import masked
from agora.engine import common_prefix_length, kv, last_logits_only


def completion_logits(
    model, prompts: list[list[int]], completions: list[list[int]], *, pad_id: int, share_prefix: bool = True
):
    """Logits predicting each completion token: [B, C_max, V], rows right-aligned, plus mask [B, C_max].

    Each row is prompt + completion; the prompts' common prefix is run once (batch 1) and its KV
    repeated; the suffixes are left-padded so every completion ends at the last column, and only
    the last C_max + 1 positions go through the LM head.
    """
    c_max = max(len(c) for c in completions)
    out, completion_mask, tokens, _ = prefix_shared_forward(
        model, prompts, completions, pad_id=pad_id, share_prefix=share_prefix, logits_to_keep=c_max + 1
    )
    return out.logits[:, :-1], completion_mask, tokens


def prefix_shared_forward(
    model, prompts: list[list[int]], completions: list[list[int]], *, pad_id: int, share_prefix: bool = True, **kwargs
):
    """One forward of every prompt + completion (the layout of `completion_logits`): (the model's output, the
    completion mask [B, C_max], tokens forwarded, the padded width W). Completion token j of row i sits at column
    W - len(completions[i]) + j of the output; every prompt keeps at least its last token in its row. The shared
    prefix's forward only fills the KV cache: its LM head scores one position (`last_logits_only`), not every
    prefix token over the whole vocabulary."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    batch = len(prompts)
    shared = common_prefix_length(prompts) if share_prefix and batch > 1 else 0
    suffixes = [p[shared:] + c for p, c in zip(prompts, completions)]
    width = max(len(s) for s in suffixes)
    c_max = max(len(c) for c in completions)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    completion_mask = torch.zeros((batch, c_max), dtype=torch.bool)
    for row, (ids, completion) in enumerate(zip(suffixes, completions)):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
        completion_mask[row, c_max - len(completion) :] = True
    input_ids, mask, completion_mask = input_ids.to(device), mask.to(device), completion_mask.to(device)
    cache = None
    if shared:
        cache = DynamicCache()
        # the prefix only fills the cache: its LM head (a [1, shared, V] logits tensor) would be thrown away
        model(
            input_ids=torch.tensor([prompts[0][:shared]], device=device),
            **kv(model, cache),
            use_cache=True,
            **last_logits_only(model),
        )
        cache.batch_repeat_interleave(batch)
    attention = torch.cat([torch.ones((batch, shared), dtype=torch.long, device=device), mask], dim=-1)
    positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=positions,
        **kv(model, cache),
        use_cache=cache is not None,
        **kwargs,
    )
    return out, completion_mask, shared + sum(len(s) for s in suffixes), width


def hidden_states_at(
    model, prompts: list[list[int]], completions: list[list[int]], offsets: list[list[int]], *, pad_id: int
) -> torch.Tensor:
    """The last layer's hidden states [B, K, H] (float32, no gradient) of the positions that predict completion
    token j for each j in `offsets[i]` (K per row; j = 0 is the prompt's last token, j = len(completion) the
    completion's last): what a value head reads "before" token j. The decoder alone runs, never the LM head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: LoRA layers stay in
    decoder = base.get_decoder()
    with torch.no_grad():
        out, _, _, width = prefix_shared_forward(decoder, prompts, completions, pad_id=pad_id)
        hidden = out.last_hidden_state
        columns = torch.tensor(
            [[width - len(c) + j - 1 for j in js] for c, js in zip(completions, offsets)], device=hidden.device
        )
        rows = torch.arange(len(prompts), device=hidden.device)[:, None]
        return hidden[rows, columns].float()


def token_logprobs(
    logits: torch.Tensor, completions: list[list[int]], temperature: float, allowed: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / T) at each completion token (right-aligned [B, C_max]) and the entropy there;
    with `allowed` (bool [B, C_max, V], `constrain.allowed_tokens`) under the distribution masked to it,
    as a grammar-constrained sample drew them."""
    c_max = logits.shape[1]
    targets = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
    for row, completion in enumerate(completions):
        targets[row, c_max - len(completion) :] = torch.tensor(completion)
    logp_all = torch.log_softmax(masked(logits.float() / (temperature if temperature > 0 else 1.0), allowed), dim=-1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def sequence_logprobs(
    model, prompts, completions, *, temperature: float, pad_id: int, share_prefix: bool = True, allowed=None
):
    """(token logprobs [B, C_max], entropy [B, C_max], mask [B, C_max], tokens forwarded); `allowed`: see
    `token_logprobs`."""
    logits, mask, tokens = completion_logits(model, prompts, completions, pad_id=pad_id, share_prefix=share_prefix)
    logp, entropy = token_logprobs(logits, completions, temperature, allowed)
    return logp, entropy, mask, tokens


def reference_logprobs(
    model, prompts, completions, *, temperature: float, pad_id: int, share_prefix: bool = True, allowed=None
):
    """`sequence_logprobs` of the frozen reference: the same peft model with its LoRA adapter disabled, no
    gradient; under the same `allowed` masks as the policy's, so the KL compares like with like."""
    with torch.no_grad(), model.disable_adapter():
        return sequence_logprobs(
            model,
            prompts,
            completions,
            temperature=temperature,
            pad_id=pad_id,
            share_prefix=share_prefix,
            allowed=allowed,
        )


def right_aligned(rows: list[list[float]], width: int, device) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, width - len(row) :] = torch.tensor(row, dtype=torch.float32)
    return out.to(device)
