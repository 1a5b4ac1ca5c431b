"""A policy played by a model behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp, hosted APIs).

For seats whose weights Agora does not train: opponents, league members, the deferral expert,
economy workers and planners. The world's prompt (after the optional system prompt and the
world's worked example) goes to `POST {base_url}/chat/completions`; the server applies the
model's chat template. One `act` call's requests go out concurrently (at most `max_concurrency`),
each retried with backoff (`agora.serving`); one that still fails comes back with
`ActResponse.error`, so the engine takes the world's seeded fallback action and counts it
`unanswered`. A server that is down (or refuses the key, or lacks the model) is an error when the
policy is built, before any episode or MLflow run; one that stops answering mid-run (every
request of a call refused) ends the run FAILED with its finished episodes kept.

Each request carries a `seed` drawn from the request's own generator (servers that honour it
sample reproducibly). With a world grammar and `constrained: true`, the reply is constrained in
the server's own form (`agora.serving.grammar_fields`); else free text is parsed and re-asked as
for any text policy. Token log-probs are recorded when the server returns them; token ids are not
(they are the server's), and the recorded grammar is None: nothing trains on these replies.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from agora.models import valid_unicode
from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig, preamble
from agora.serving import Completion, ServerClient, ServerConnection, grammar_fields, reply_text

SEED_RANGE = 2**31  # llama.cpp takes a 32-bit seed, OpenAI-compatible servers an int


class ServerConfig(PolicyConfig, ServerConnection):
    model: str | None = Field(None, description="the model name the server serves (None: the one it lists)")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature; 0 = greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int = Field(64, ge=1, le=65_536, description="longest reply, in tokens")
    system_prompt: str | None = Field(None, description="optional system message before the world's prompt")
    demonstrations: bool = Field(
        True, description="show the world's worked example exchange before each prompt (helps small models)"
    )
    constrained: bool = Field(
        True, description="send the world's reply grammar in the server's form (false: free text, parse and retry)"
    )
    logprobs: bool = Field(True, description="ask for the log-prob of every generated token (recorded)")


def chat_messages(
    config: ServerConfig, messages: list[dict[str, str]], demonstration: list[dict[str, str]]
) -> list[dict[str, str]]:
    """The conversation sent: system prompt, worked example, the world's prompt and any retries (valid Unicode)."""
    shown = [*preamble(config.system_prompt, demonstration, config.demonstrations), *messages]
    return [{"role": m["role"], "content": valid_unicode(m["content"])} for m in shown]


class ServerPolicy(Policy):
    """A model behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp, a hosted API); not trainable."""

    Config = ServerConfig
    expensive = True
    uses_text = True

    def __init__(self, config: ServerConfig, *, seed: int):
        super().__init__(config, seed=seed)
        self.client = ServerClient(config, config.model)
        try:
            self.model = self.client.check()  # a server that is down is told now, before any episode
        except BaseException:
            self.client.close()
            raise

    def body(self, request: ActRequest, seed: int) -> dict:
        """The chat-completion request for one turn."""
        config = self.config
        body = {
            "model": self.model,
            "messages": chat_messages(config, request.messages, request.demonstration),
            "temperature": 0.0 if request.greedy else config.temperature,
            "top_p": config.top_p,
            "max_completion_tokens" if config.api == "openai" else "max_tokens": config.max_tokens,
            "seed": seed,
        }
        if config.logprobs:
            body["logprobs"] = True
            if config.api == "llama.cpp":
                body["top_logprobs"] = 1  # llama-cpp-python returns log-probs only when asked for alternatives
        if config.constrained and request.grammar is not None:
            body.update(grammar_fields(config.api, request.grammar.fitted(config.max_tokens)))
        return body

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        rngs = [self.rng_for(r) for r in requests]
        # a request without a seed draws from the policy's own generator: give each its own, in order,
        # before they run on the pool's threads
        rngs = [
            rng if r.seed is not None else np.random.default_rng(rng.integers(2**63)) for r, rng in zip(requests, rngs)
        ]
        bodies = [self.body(r, int(rng.integers(SEED_RANGE))) for r, rng in zip(requests, rngs)]
        start = time.perf_counter()
        try:
            results = self.client.complete(bodies, rngs)
        finally:
            self.stats.generate_seconds += time.perf_counter() - start
        self.stats.calls += 1
        self.stats.requests += len(requests)
        responses = []
        for request, result in zip(requests, results):
            if not isinstance(result, Completion):
                responses.append(ActResponse("", error=f"server: {result.message}"))
                continue
            self.stats.generated_tokens += result.tokens
            constrained = self.config.constrained and request.grammar is not None
            text = reply_text(self.config.api, result.text, constrained).strip()
            shown = preamble(self.config.system_prompt, request.demonstration, self.config.demonstrations)
            responses.append(ActResponse(text, logprobs=result.logprobs, preamble=shown or None))
        return responses

    def run_tags(self) -> dict[str, str]:
        return {"server_model": self.model or ""}

    def close(self) -> None:
        self.client.close()
