"""An LLM policy on transformers: chat template, batched sampling, token logprobs.

Sampling is a plain KV-cached loop rather than `model.generate`, for two reasons: it draws from an
explicit `torch.Generator` seeded by the scenario (no global RNG), and it returns the logprob of
every sampled token under the sampling distribution, log softmax(logits / T), which the trainers
use as pi_old.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field

from agora.models import EMBEDDED, load_causal_lm
from agora.policy import ActRequest, ActResponse, Policy, PolicyParams


class LLMParams(PolicyParams):
    model: str = Field(EMBEDDED, description="'smollm2-135m-instruct' (embedded), a local folder or .gguf file, or a cached hub id")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature; 0 = greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="longest reply, in tokens")
    max_batch_size: int = Field(32, ge=1, le=4096, description="most prompts in one forward pass")
    system_prompt: str | None = Field(None, description="optional system message before the world's prompt")
    demonstrations: bool = Field(True, description="show the world's worked example exchange before each prompt (helps small models)")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto = cuda when available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto = bf16 on GPU, fp32 on CPU")


class LLMPolicy(Policy):
    Params = LLMParams
    expensive = True
    uses_text = True

    def __init__(self, params: LLMParams, *, seed: int, model=None, tokenizer=None):
        """`model`/`tokenizer` given: act with that model object instead of the shared cached one, e.g. a
        trainer's LoRA (peft) model, so that rollouts always use the learner's current weights."""
        super().__init__(params, seed=seed)
        if model is None:
            model, tokenizer = load_causal_lm(params.model, device=params.device, dtype=params.dtype)
        self.model, self.tokenizer = model, tokenizer
        self.device = next(self.model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)

    def render(self, messages: list[dict[str, str]], demonstration: list[dict[str, str]] = ()) -> str:
        if self.params.demonstrations:
            messages = [*demonstration, *messages]
        if self.params.system_prompt:
            messages = [{"role": "system", "content": self.params.system_prompt}, *messages]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        texts = [self.render(r.messages, r.demonstration) for r in requests]
        prompt_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        # Similar lengths share a forward pass (less padding); the order is deterministic.
        order = sorted(range(len(requests)), key=lambda i: (len(prompt_ids[i]), i))
        results: dict[int, tuple[list[int], list[float]]] = {}
        start = time.perf_counter()
        for lo in range(0, len(order), self.params.max_batch_size):
            chunk = order[lo : lo + self.params.max_batch_size]
            outs = sample(
                self.model,
                [prompt_ids[i] for i in chunk],
                max_new_tokens=self.params.max_new_tokens,
                temperature=self.params.temperature,
                top_p=self.params.top_p,
                stop_ids=self.stop_ids,
                pad_id=self.tokenizer.pad_token_id,
                generator=self.generator,
            )
            results.update(zip(chunk, outs))
        self.stats.generate_seconds += time.perf_counter() - start
        self.stats.calls += 1
        self.stats.requests += len(requests)
        responses = []
        for i in range(len(requests)):
            ids, logprobs = results[i]
            self.stats.generated_tokens += len(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            responses.append(ActResponse(text, None, prompt_ids[i], ids, logprobs, texts[i]))
        return responses


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def sample(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_ids: set[int],
    pad_id: int,
    generator: torch.Generator,
) -> list[tuple[list[int], list[float]]]:
    """Sample a completion for every prompt in one batch with a KV cache.

    The batch's longest common prefix (chat template, the world's demonstration, the start of
    the prompt) is computed once at batch size 1 and its KV repeated over the rows; only the
    suffixes are padded, between prefix and suffix, with the attention mask and position ids
    skipping the padding. Returns, per prompt, the completion token ids (the stop token
    included when one was sampled) and log pi(token) = log softmax(logits / T) at each position
    (T = 1 when greedy).
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    batch = len(prompts)
    shared = common_prefix_length(prompts)
    suffixes = [p[shared:] for p in prompts]
    width = max(len(s) for s in suffixes)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((batch, width), dtype=torch.long)
    for row, ids in enumerate(suffixes):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        suffix_mask[row, width - len(ids) :] = 1
    input_ids, suffix_mask = input_ids.to(device), suffix_mask.to(device)
    cache = DynamicCache()
    if shared:
        model(input_ids=torch.tensor([prompts[0][:shared]], device=device), past_key_values=cache)
        cache.batch_repeat_interleave(batch)
    attention = torch.cat([torch.ones((batch, shared), dtype=torch.long, device=device), suffix_mask], dim=-1)
    positions = shared + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
    stop = torch.tensor(sorted(stop_ids), device=device)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache).logits[:, -1]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, logps = [], []
    for _ in range(max_new_tokens):
        scaled = logits.float() / (temperature if temperature > 0 else 1.0)
        logp = torch.log_softmax(scaled, dim=-1)
        if temperature == 0:
            token = logp.argmax(-1)
        else:
            probs = logp.exp()
            if top_p < 1.0:
                probs = nucleus(probs, top_p)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        logps.append(logp.gather(-1, token[:, None]).squeeze(-1))
        active = ~done
        done = done | torch.isin(token, stop)
        if bool(done.all()):
            break
        attention = torch.cat([attention, active.long()[:, None]], dim=-1)
        positions = positions[:, -1:] + 1
        logits = model(input_ids=token[:, None], attention_mask=attention, position_ids=positions, past_key_values=cache).logits[:, -1]
    token_rows = torch.stack(tokens, 1).tolist()
    logp_rows = torch.stack(logps, 1).tolist()
    out = []
    for ids, lps in zip(token_rows, logp_rows):
        end = next((k + 1 for k, t in enumerate(ids) if t in stop_ids), len(ids))
        out.append((ids[:end], lps[:end]))
    return out


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (renormalised)."""
    sorted_probs, index = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, index, sorted_probs)
    return kept / kept.sum(-1, keepdim=True)
