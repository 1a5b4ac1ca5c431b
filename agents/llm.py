"""An LLM policy on transformers: chat template, batched sampling (`agora.engine`), token logprobs."""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field, field_validator

from agora.engine import PrefixCache, sample, stop_token_ids
from agora.kernels import describe, per_shape, use_skinny_linears
from agora.models import EMBEDDED, chat_prompt, check_device, check_model, load_causal_lm, validated
from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig, preamble


class LLMConfig(PolicyConfig):
    model: str = Field(
        EMBEDDED, description="'smollm2-135m-instruct' (embedded), a local folder or .gguf file, or a cached hub id"
    )
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature; 0 = greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="longest reply, in tokens")
    max_batch_size: int = Field(32, ge=1, le=4096, description="most prompts in one forward pass")
    prefix_cache_mb: int = Field(
        1024,
        ge=0,
        le=1_000_000,
        description="memory for the KV of recent prompts and replies, reused by later turns (MB; 0 = off)",
    )
    system_prompt: str | None = Field(None, description="optional system message before the world's prompt")
    constrained: bool = Field(
        True,
        description="decode under the world's reply grammar where it declares one, so every reply parses; "
        "false = free decoding (e.g. to study how a model learns the format)",
    )
    demonstrations: bool = Field(
        True, description="show the world's worked example exchange before each prompt (helps small models)"
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto = cuda when available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bf16 on GPU, fp32 on CPU"
    )
    linear_kernel: str = Field(
        "auto",
        description="CPU float32 few-row linear products: auto = timed per weight shape at load, xw = x @ W.T "
        "(PyTorch's), wx = W @ x.T, or per shape as a run records it (tag agora.kernel, e.g. 'wx: 49152x576; "
        "xw: 576x576'); pin it to reproduce recorded logprobs exactly (the forms differ by ~1e-5)",
    )

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str) -> str:
        """A model that is not there, or a folder that is not a whole model, fails at validation, not mid-run."""
        return validated(check_model, model)

    @field_validator("linear_kernel")
    @classmethod
    def _kernel_pin(cls, kernel: str) -> str:
        per_shape(kernel)  # a ValueError saying what is expected
        return kernel

    @field_validator("device")
    @classmethod
    def _device_exists(cls, device: str) -> str:
        return validated(check_device, device)


class LLMPolicy(Policy):
    Config = LLMConfig
    expensive = True
    uses_text = True

    def __init__(self, config: LLMConfig, *, seed: int, model=None, tokenizer=None, weights_key=None):
        """`model`/`tokenizer` given: act with that model object instead of the shared cached one, e.g. a
        trainer's LoRA (peft) model, so that rollouts always use the learner's current weights.
        `weights_key`: see PrefixCache (a frozen version that shares its model with others)."""
        super().__init__(config, seed=seed)
        if model is None:
            model, tokenizer = load_causal_lm(
                config.model, device=config.device, dtype=config.dtype, linear_kernel=config.linear_kernel
            )
        elif config.linear_kernel != "auto":
            use_skinny_linears(model, config.linear_kernel)  # a given (learner's) model: its own copy
        self.model, self.tokenizer = model, tokenizer
        self.device = next(self.model.parameters()).device
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        self.prefix_cache = PrefixCache(config.prefix_cache_mb * 2**20, weights_key) if config.prefix_cache_mb else None
        self.larks: dict = {}  # a world's recurring grammars (a phase, a pool), rendered once: Grammar -> Lark
        self.token_counts: dict[str, int] = {}  # tokens of each grammar literal

    @property
    def linear_kernel(self) -> str:
        """The kernel its model's linear layers use ("xw", "wx", or per shape; `agora.kernels.describe`):
        recorded with a run (tag `agora.kernel`) so that its logprobs can be reproduced with `linear_kernel`."""
        return describe(self.model)

    def run_tags(self) -> dict[str, str]:
        return {"kernel": self.linear_kernel}

    def preamble_for(self, demonstration: list[dict[str, str]] = ()) -> list[dict[str, str]]:
        """What this policy shows before the world's conversation: system prompt, worked example."""
        return preamble(self.config.system_prompt, list(demonstration), self.config.demonstrations)

    def render(self, messages: list[dict[str, str]], demonstration: list[dict[str, str]] = ()) -> str:
        # content never becomes control tokens
        return chat_prompt(self.tokenizer, [*self.preamble_for(demonstration), *messages])

    def generator_for(self, request: ActRequest) -> torch.Generator:
        """The CPU generator `request`'s tokens are drawn from: seeded by `request.seed`, so a reply
        does not depend on the other requests of the call (`concurrency`, batching, order)."""
        seed = request.seed if request.seed is not None else int(self.rng.integers(2**63))
        return torch.Generator().manual_seed(seed)

    def grammar_for(self, request: ActRequest) -> str | None:
        """The Lark grammar `request`'s reply is decoded under: the world's reply grammar with its free
        text cut to fit `max_new_tokens` (so a reply is never truncated mid-format), or None."""
        if not self.config.constrained or request.grammar is None:
            return None
        larks = self.larks
        if request.grammar not in larks:
            if len(larks) >= 1024:
                larks.clear()
            larks[request.grammar] = request.grammar.lark(max_tokens=self.config.max_new_tokens, cost=self.token_count)
        return larks[request.grammar]

    def token_count(self, text: str) -> int:
        """Tokens of `text` alone (cached: a grammar's literals recur every turn)."""
        counts = self.token_counts
        if text not in counts:
            counts[text] = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return counts[text]

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        texts = [self.render(r.messages, r.demonstration) for r in requests]
        prompt_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        # Similar lengths share a forward pass (less padding); the order is deterministic.
        order = sorted(range(len(requests)), key=lambda i: (len(prompt_ids[i]), i))
        generators = [self.generator_for(r) for r in requests]
        grammars = [self.grammar_for(r) for r in requests]
        results: dict[int, tuple[list[int], list[float]]] = {}
        start = time.perf_counter()
        for lo in range(0, len(order), self.config.max_batch_size):
            chunk = order[lo : lo + self.config.max_batch_size]
            outs = sample(
                self.model,
                [prompt_ids[i] for i in chunk],
                max_new_tokens=self.config.max_new_tokens,
                temperature=self.config.temperature,
                top_p=self.config.top_p,
                stop_ids=self.stop_ids,
                pad_id=self.tokenizer.pad_token_id,
                generators=[generators[i] for i in chunk],
                prefix_cache=self.prefix_cache,
                greedy=[requests[i].greedy for i in chunk],
                grammars=[grammars[i] for i in chunk],
                tokenizer=self.tokenizer,
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
            responses.append(
                ActResponse(
                    text,
                    None,
                    prompt_ids[i],
                    ids,
                    logprobs,
                    texts[i],
                    self.config.temperature,
                    grammar=grammars[i],
                    preamble=self.preamble_for(requests[i].demonstration) or None,
                )
            )
        return responses
