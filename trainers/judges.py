"""Pairwise judges: P(a > b) in [0, 1] for two trajectories played from the same initial state (as SPO, arXiv
2401.04056, and ArenaRL, arXiv 2601.06487, use them).

A `Candidate` is one seat's (or seats') trajectory: an `Episode` and the seats being judged.

- `outcome` (scripted): compares what the candidates earned, the sum of their seats' returns or
  a world metric of the episode (higher is better): P = 1 if a's is higher, 0.5 if equal, else 0.
- `llm` (a local model) and `server` (a model behind an OpenAI-compatible server, `agora.serving`):
  a causal LM reads a rubric and both transcripts, labelled A and B, and is asked which is
  better. No text is generated or parsed: p = pi("A") / (pi("A") + pi("B")) is read from the
  next-token distribution after the prompt, deterministically (`decision: argmax` turns it into
  the temperature-0 verdict, 1 or 0). Each pair is asked in both orders and combined,

      P(a > b) = (p_AB + 1 - p_BA) / 2,

  which cancels the model's bias towards the first (or second) label and makes
  P(a > b) + P(b > a) = 1 exactly. The server judge asks for one token under the grammar
  `A|B` with the top log-probs of that token: p is read from them when both labels are among
  them, else it is the verdict (1 if it answered A, 0 if B); a request that failed after its
  retries counts as 0.5 (no preference). Answers are cached by a hash of (rubric, first text, second
  text), so a pair seen before, in either order, costs no model call.

`calls` counts the comparisons asked of a judge; the LLM judge also counts `model_calls` (prompts
scored by the model) and `cache_hits`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agora.errors import AgoraError
from agora.grammar import Grammar, one_of
from agora.models import EMBEDDED, chat_prompt, check_device, check_model, plain_text, valid_unicode, validated
from agora.serving import Completion, ServerClient, ServerConnection, grammar_fields
from agora.trajectory import Episode

DEFAULT_RUBRIC = (
    "You are a strict judge. Two transcripts A and B of the same game, from the same starting position, follow. "
    "Lines of the player being judged are marked with '(judged)'. Decide in which transcript the judged player "
    "plays better: clear, valid moves that serve its own interest. Answer with one letter: A or B."
)


class JudgeConfig(ServerConnection):
    """`judge: {id: outcome}`, `judge: {id: llm, model: ..., rubric: ...}` or `judge: {id: server, base_url: ...,
    model: ...}` (a trainer's `judge:` key; the server keys are `agora.serving.ServerConnection`'s)."""

    model_config = ConfigDict(extra="forbid")
    id: Literal["outcome", "llm", "server"] = Field(
        "outcome",
        description="outcome: compare returns (or a world metric); llm: a language model compares transcripts; "
        "server: a model behind an OpenAI-compatible server compares them",
    )
    metric: str | None = Field(
        None,
        description="outcome: compare this world metric of the episode, not the seats' returns (higher is better)",
    )
    model: str = Field(
        EMBEDDED,
        description="llm: the judge model ('smollm2-135m-instruct', a local folder or .gguf file, a cached hub id); "
        "server: the served model's name (default: the one the server lists)",
    )
    rubric: str = Field(
        DEFAULT_RUBRIC, min_length=1, description="llm: the instruction shown before the two transcripts"
    )
    decision: Literal["probability", "argmax"] = Field(
        "probability", description="llm: p = pi(A) / (pi(A) + pi(B)), or its temperature-0 verdict 1/0"
    )
    max_chars: int = Field(
        1500, ge=50, le=100_000, description="llm: longest transcript shown (longer ones keep their start and end)"
    )
    max_batch_size: int = Field(8, ge=1, le=4096, description="llm: prompts per forward pass")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="llm: auto = cuda when available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="llm: auto = bf16 on GPU, fp32 on CPU"
    )

    def __repr__(self) -> str:  # as a campaign file writes it, e.g. in `agora trainers`: {id: outcome}
        keys = [
            "id",
            *(
                k
                for k in type(self).model_fields
                if k != "id" and getattr(self, k) != type(self).model_fields[k].default
            ),
        ]
        return "{" + ", ".join(f"{k}: {getattr(self, k)}" for k in keys) + "}"

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str, info: ValidationInfo) -> str:
        """A judge model that is not there fails when the campaign is validated, not mid-campaign."""
        # the outcome judge has no model: said by the check below
        return validated(check_model, model) if info.data.get("id") == "llm" else model

    @field_validator("device")
    @classmethod
    def _device_exists(cls, device: str, info: ValidationInfo) -> str:
        return validated(check_device, device) if info.data.get("id") == "llm" else device

    @model_validator(mode="after")
    def _keys_of_the_other_judge(self) -> "JudgeConfig":
        asked = {"model", "rubric", "decision", "max_chars"}
        own = {
            "outcome": {"id", "metric"},
            "llm": {"id", "max_batch_size", "device", "dtype", *asked},
            "server": {"id", *asked, *ServerConnection.model_fields},
        }[self.id]
        wrong = sorted(self.model_fields_set - own)
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not a key of the {self.id} judge"
            )
        return self


def question(rubric: str, first: str, second: str) -> str:
    """What a judge model is asked: the rubric, then `first` as transcript A and `second` as B."""
    return f"{rubric}\n\nTranscript A:\n{first}\n\nTranscript B:\n{second}\n\nWhich is better, A or B?"


@dataclass(frozen=True)
class Candidate:
    """One trajectory to judge: an episode and the seat(s) whose play is compared."""

    episode: Episode
    seats: tuple[str, ...]


def transcript(candidate: Candidate, max_chars: int = 1500) -> str:
    """The episode's decisions as 'seat: text' lines, the judged seats marked; long ones keep start and end."""
    lines = [f"{s.agent}{' (judged)' if s.agent in candidate.seats else ''}: {s.text}" for s in candidate.episode.steps]
    text = "\n".join(lines)
    if len(text) > max_chars:
        half = (max_chars - 5) // 2
        text = text[:half] + "\n...\n" + text[-half:]
    return text


class OutcomeJudge:
    """P(a > b) = 1 / 0.5 / 0 as a's value is above / equal to / below b's (returns or a world metric)."""

    def __init__(self, metric: str | None = None):
        self.metric, self.calls = metric, 0

    def value(self, c: Candidate) -> float:
        if self.metric is None:
            return float(sum(c.episode.returns.get(s, 0.0) for s in c.seats))
        if self.metric not in c.episode.metrics:
            raise AgoraError(
                f"the outcome judge's metric '{self.metric}' is not a metric of this world; "
                f"its episodes have: {', '.join(sorted(c.episode.metrics)) or 'none'}"
            )
        return float(c.episode.metrics[self.metric])

    def compare(self, pairs: list[tuple[Candidate, Candidate]]) -> list[float]:
        self.calls += len(pairs)
        out = []
        for a, b in pairs:
            va, vb = self.value(a), self.value(b)
            out.append(1.0 if va > vb else 0.5 if va == vb else 0.0)
        return out


class LLMJudge:
    """A causal LM asked 'A or B?' in both orders; P(a > b) = (p_AB + 1 - p_BA) / 2 (module docstring)."""

    def __init__(self, config: JudgeConfig, *, model=None, tokenizer=None):
        self.config = config
        self.model, self.tokenizer = model, tokenizer  # loaded on first use unless given
        self.cache: dict[str, float] = {}
        self.calls = self.model_calls = self.cache_hits = 0

    def _load(self) -> None:
        if self.model is None:
            from agora.models import load_causal_lm

            self.model, self.tokenizer = load_causal_lm(
                self.config.model, device=self.config.device, dtype=self.config.dtype
            )
        self.label_ids = [self._single_token(label) for label in ("A", "B")]

    def _single_token(self, label: str) -> int:
        ids = self.tokenizer(label, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise AgoraError(
                f"the judge model's tokenizer splits '{label}' into {len(ids)} tokens; the llm judge needs one "
                "token per label"
            )
        return ids[0]

    def prompt_ids(self, first: str, second: str) -> list[int]:
        """Chat-templated rubric + 'Transcript A' (first) + 'Transcript B' (second), ready for the answer token;
        the transcripts' text never becomes the judge's control tokens."""
        content = question(self.config.rubric, first, second)
        if getattr(self.tokenizer, "chat_template", None):
            text = chat_prompt(self.tokenizer, [{"role": "user", "content": content}])
        else:
            text = plain_text(self.tokenizer, content) + "\nAnswer:"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @staticmethod
    def key(rubric: str, first: str, second: str) -> str:
        h = hashlib.sha256()
        for part in (rubric, first, second):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()

    @torch.no_grad()
    def first_preferred(self, orders: list[tuple[str, str]]) -> list[float]:
        """p = pi("A") / (pi("A") + pi("B")) for each (first, second) shown as (A, B); cached."""
        from agora.scoring import completion_logits

        if not hasattr(self, "label_ids"):
            self._load()
        todo = sorted({k: o for o in orders if (k := self.key(self.config.rubric, *o)) not in self.cache}.items())
        self.cache_hits += len(orders) - len(todo)
        for lo in range(0, len(todo), self.config.max_batch_size):
            chunk = todo[lo : lo + self.config.max_batch_size]
            prompts = [self.prompt_ids(*order) for _, order in chunk]
            # the logits after the prompt are the ones that predict a one-token completion
            logits, _, _ = completion_logits(
                self.model, prompts, [[self.label_ids[0]]] * len(prompts), pad_id=self.tokenizer.pad_token_id
            )
            pair = logits[:, -1, self.label_ids].float()  # [B, 2]: logit of "A", of "B"
            if self.config.decision == "argmax":
                p = (pair[:, 0] > pair[:, 1]).float() + 0.5 * (pair[:, 0] == pair[:, 1]).float()
            else:
                p = torch.softmax(pair, dim=-1)[:, 0]
            self.model_calls += len(chunk)
            for (k, _), value in zip(chunk, p.tolist()):
                self.cache[k] = float(value)
        return [self.cache[self.key(self.config.rubric, *o)] for o in orders]

    def compare(self, pairs: list[tuple[Candidate, Candidate]]) -> list[float]:
        self.calls += len(pairs)
        texts = [(transcript(a, self.config.max_chars), transcript(b, self.config.max_chars)) for a, b in pairs]
        p = self.first_preferred([(ta, tb) for ta, tb in texts] + [(tb, ta) for ta, tb in texts])
        n = len(pairs)
        return [(p[i] + 1.0 - p[n + i]) / 2.0 for i in range(n)]


LABELS = Grammar(one_of(["A", "B"]))


def label_probability(completion: Completion | object) -> float:
    """p("A") / (p("A") + p("B")) from a one-token answer's top log-probs when both labels are there, else its
    verdict (1 for A, 0 for B); 0.5 for a request that failed or an answer that is neither."""
    if not isinstance(completion, Completion):
        return 0.5
    top = completion.top_logprobs[0] if completion.top_logprobs else {}
    if "A" in top and "B" in top:
        a, b = top["A"], top["B"]
        return float(1.0 / (1.0 + math.exp(b - a)))  # softmax over the two labels
    text = completion.text.strip()
    return 1.0 if text == "A" else 0.0 if text == "B" else 0.5


class ServerJudge(LLMJudge):
    """The LLM judge asked through an OpenAI-compatible server (module docstring); checked when built."""

    TOP_LOGPROBS = 5

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        self.client = ServerClient(config, config.model if "model" in config.model_fields_set else None)
        self.served = self.client.check()  # a server that is down is told before the campaign starts

    def body(self, first: str, second: str) -> dict:
        body = {
            "model": self.served,
            "messages": [{"role": "user", "content": valid_unicode(question(self.config.rubric, first, second))}],
            "temperature": 0.0,
            "max_completion_tokens" if self.config.api == "openai" else "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": self.TOP_LOGPROBS,
        }
        if self.config.api != "openai":  # a JSON schema would make the first token '{'
            body.update(grammar_fields(self.config.api, LABELS))
        return body

    def first_preferred(self, orders: list[tuple[str, str]]) -> list[float]:
        todo = sorted({k: o for o in orders if (k := self.key(self.config.rubric, *o)) not in self.cache}.items())
        self.cache_hits += len(orders) - len(todo)
        if todo:
            bodies = [self.body(*order) for _, order in todo]
            rngs = [np.random.default_rng(0) for _ in todo]  # jitter only: the answers are greedy
            for (k, _), result in zip(todo, self.client.complete(bodies, rngs)):
                p = label_probability(result)
                self.cache[k] = float(p > 0.5) + 0.5 * (p == 0.5) if self.config.decision == "argmax" else p
            self.model_calls += len(todo)
        return [self.cache[self.key(self.config.rubric, *o)] for o in orders]


Judge = OutcomeJudge | LLMJudge


def build_judge(config: JudgeConfig) -> Judge:
    """The judge a trainer config names (the LLM judge loads its model on first use; the server judge checks its
    server now)."""
    if config.id == "server":
        return ServerJudge(config)
    return OutcomeJudge(config.metric) if config.id == "outcome" else LLMJudge(config)


def judge_metrics(judge: Judge, calls_before: int = 0) -> dict[str, float]:
    """train/judge_calls this update (comparisons); the LLM judge's model calls and cache hits so far."""
    out = {"train/judge_calls": float(judge.calls - calls_before)}
    if isinstance(judge, LLMJudge):
        out["train/judge_model_calls_total"] = float(judge.model_calls)
        out["train/judge_cache_hits_total"] = float(judge.cache_hits)
    return out
