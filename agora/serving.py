"""A client for OpenAI-compatible inference servers (vLLM, SGLang, llama.cpp's server, hosted APIs).

Seats whose weights Agora does not train (opponents, experts, judges, economy workers) can be
played by a model behind `POST {base_url}/chat/completions`. This module holds what the server
agent (`agents/server.py`) and the server judge (`trainers/judges.py`) share:

- `ServerConnection`: the connection keys of a config (base URL, the NAME of the environment
  variable holding the API key, the server kind, concurrency, timeout, retries, backoff). The key
  itself is read from the environment when the client is built, sent only in the
  `Authorization` header, and scrubbed from every message this module writes (`redact`).
- `ServerClient.check()`: `GET {base_url}/models` when a policy or judge is built, so a server
  that is down, refuses the key or does not serve the model is one clear `ServerUnavailable`
  before any episode runs (and before any MLflow run exists).
- `ServerClient.complete(bodies, rngs)`: the bodies go out concurrently (at most `max_concurrency`
  in flight); 429, 5xx, timeouts, refused connections and unreadable replies are retried with
  exponential backoff, `backoff * 2**attempt`, jittered by a factor in [0.5, 1.5) drawn from the
  request's own generator (reproducible). What still fails is a `Failure` for the caller to turn
  into a counted fallback; `ServerUnavailable` when every body of a call failed to connect (the
  server died) or was refused as a client error (401, 404: a configuration the run cannot survive).
- `grammar_fields(api, grammar)`: a reply grammar (`agora.grammar.Grammar`) in the server's own
  form: llama.cpp `grammar` (GBNF), vLLM `structured_outputs` (regex, else GBNF), SGLang `regex`
  (else `ebnf`), or for a hosted API a JSON-schema `response_format` whose one string property
  `reply` has the regex as its `pattern` (`reply_text` takes the reply back out of the JSON).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agora.errors import AgoraError
from agora.grammar import Grammar, GrammarTooLarge

ServerAPI = Literal["vllm", "sglang", "llama.cpp", "openai"]
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_BODY_CHARS = 200  # the most of a server's error body a message quotes
MAX_RETRY_AFTER_S = 60.0


class ServerUnavailable(AgoraError):
    """An inference server that cannot be used: down, refusing the key, not serving the model, or gone mid-run."""


class ServerConnection(BaseModel):
    """The keys that name an OpenAI-compatible server (shared by the `server` agent and the `server` judge)."""

    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="the server's OpenAI-compatible root, up to /v1 (`vllm serve` listens on port 8000)",
    )
    api_key_env: str | None = Field(
        None,
        description="the NAME of the environment variable holding the API key (never the key itself); "
        "None: no key sent",
    )
    api: ServerAPI = Field(
        "vllm",
        description="how grammar constraints are sent: vllm (structured_outputs), sglang (regex), "
        "llama.cpp (grammar), openai (JSON-schema response_format)",
    )
    max_concurrency: int = Field(8, ge=1, le=1024, description="most requests in flight at once")
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0, description="seconds to wait for one reply")
    retries: int = Field(3, ge=0, le=20, description="retries after 429, 5xx, timeouts, refused connections")
    backoff: float = Field(
        0.5, ge=0.0, le=600.0, description="seconds before the first retry; doubled each time, jittered x[0.5, 1.5)"
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        """An http(s) URL without credentials in it (they would be logged with the config)."""
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:8000/v1")
        if "@" in url.split("/")[2]:
            raise ValueError(
                "must not hold credentials; put the API key in an environment variable named by api_key_env"
            )
        return url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        # never quote the value: a key pasted here by mistake must not reach the terminal
        if name is not None and not ENV_NAME.fullmatch(name):
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, _; e.g. OPENAI_API_KEY), not the key"
            )
        return name


@dataclass
class Completion:
    """One reply: its text, the log-prob of each generated token, the top alternatives per token
    (token -> log-prob, when asked for) and the generated token count the server reported."""

    text: str
    logprobs: list[float] | None
    top_logprobs: list[dict[str, float]] | None
    tokens: int


@dataclass
class Failure:
    """A body that got no usable reply after its retries. `kind`: refused (no connection), client (a 4xx
    but 429), transient (429, 5xx, timeout, unreadable reply)."""

    message: str
    kind: Literal["refused", "client", "transient"]


class Retryable(Exception):
    def __init__(self, message: str, kind: str, wait: float = 0.0):
        super().__init__(message)
        self.kind, self.wait = kind, wait


def api_key(connection: ServerConnection) -> str | None:
    """The key in the environment variable `api_key_env` names; a clear error when it is not set."""
    if connection.api_key_env is None:
        return None
    key = os.environ.get(connection.api_key_env)
    if not key:
        raise ServerUnavailable(
            f"the environment variable {connection.api_key_env} (api_key_env) is not set or empty; "
            f"export {connection.api_key_env}=<your key> before running"
        )
    return key


def grammar_fields(api: ServerAPI, grammar: Grammar) -> dict[str, Any]:
    """The request fields that constrain a reply to `grammar`, in the form server kind `api` takes."""
    if api == "llama.cpp":
        return {"grammar": grammar.gbnf()}
    if api == "openai":
        schema = {
            "type": "object",
            "properties": {"reply": {"type": "string", "pattern": f"^(?:{grammar.regex()})$"}},
            "required": ["reply"],
            "additionalProperties": False,
        }
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "reply", "strict": True, "schema": schema},
            }
        }
    try:
        regex = grammar.regex()
    except GrammarTooLarge:
        return {"structured_outputs": {"grammar": grammar.gbnf()}} if api == "vllm" else {"ebnf": grammar.gbnf()}
    return {"structured_outputs": {"regex": regex}} if api == "vllm" else {"regex": regex}


def reply_text(api: ServerAPI, content: str, constrained: bool) -> str:
    """The reply in a message's content: for a hosted API answering under the JSON schema of
    `grammar_fields`, the `reply` string inside the JSON (the raw content when it is not that JSON)."""
    if api != "openai" or not constrained:
        return content
    try:
        value = json.loads(content)
    except ValueError:
        return content
    return value["reply"] if isinstance(value, dict) and isinstance(value.get("reply"), str) else content


def parse_completion(payload: Any) -> Completion:
    """A chat-completion JSON -> Completion; ValueError when it is not one."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not text")
        content = (choice.get("logprobs") or {}).get("content")
        logprobs = [float(t["logprob"]) for t in content] if content else None
        top = (
            [{a["token"]: float(a["logprob"]) for a in t.get("top_logprobs") or []} for t in content]
            if content
            else None
        )
        usage = payload.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or (len(logprobs) if logprobs else 0))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a chat completion ({type(exc).__name__}: {exc})") from None
    return Completion(text, logprobs, top, tokens)


class ServerClient:
    """Concurrent, retrying requests to one OpenAI-compatible server (see the module docstring)."""

    def __init__(self, connection: ServerConnection, model: str | None):
        self.connection, self.model = connection, model
        self.key = api_key(connection)
        self.local = threading.local()  # one requests.Session per worker thread
        self.pool = ThreadPoolExecutor(connection.max_concurrency, thread_name_prefix="agora-server")

    def redact(self, text: str) -> str:
        """`text` with the API key, wherever a server or library echoed it, replaced by ***."""
        return text.replace(self.key, "***") if self.key else text

    def quote(self, body: str) -> str:
        """A server's reply body for a message: redacted first (a cut could leave part of the key), then cut."""
        return repr(self.redact(body)[:MAX_BODY_CHARS])

    def session(self):
        import requests

        if getattr(self.local, "session", None) is None:
            self.local.session = requests.Session()
            if self.key:
                self.local.session.headers["Authorization"] = f"Bearer {self.key}"
        return self.local.session

    def check(self) -> str | None:
        """GET /models: the model to ask for (`model`, or the one the server serves when None); a
        `ServerUnavailable` saying what to do when the server is down, refuses the key or lacks the model."""
        import requests

        url = f"{self.connection.base_url}/models"
        try:
            reply = self.session().get(url, timeout=self.connection.timeout_s)
        except requests.RequestException as exc:
            raise ServerUnavailable(
                f"the inference server at {self.connection.base_url} is not reachable "
                f"({self.redact(brief_error(exc))}); "
                "start it (e.g. `vllm serve <model>`) or correct base_url"
            ) from None
        if reply.status_code in (401, 403):
            who = f"the key in {self.connection.api_key_env}" if self.key else "no API key (set api_key_env)"
            raise ServerUnavailable(
                f"the inference server at {self.connection.base_url} refused {who} (HTTP {reply.status_code})"
            )
        try:
            reply.raise_for_status()
            served = [m["id"] for m in reply.json()["data"]]
        except (requests.HTTPError, ValueError, KeyError, TypeError):
            raise ServerUnavailable(
                f"{url} did not list models (HTTP {reply.status_code}: {self.quote(reply.text)}); "
                "is base_url the server's OpenAI-compatible root (ending in /v1)?"
            ) from None
        if self.model is None:
            if len(served) != 1:
                raise ServerUnavailable(
                    f"the inference server at {self.connection.base_url} serves {len(served)} models "
                    f"({', '.join(served[:10]) or 'none'}); name one with `model:`"
                )
            return served[0]
        if served and self.model not in served:
            raise ServerUnavailable(
                f"the inference server at {self.connection.base_url} does not serve model '{self.model}'; "
                f"it serves: {', '.join(served[:10])}"
            )
        return self.model

    def complete(self, bodies: list[dict[str, Any]], rngs: list[np.random.Generator]) -> list[Completion | Failure]:
        """Each body posted to /chat/completions, concurrently (bounded), retried (module docstring)."""
        results = list(self.pool.map(self.post, bodies, rngs))
        failures = [r for r in results if isinstance(r, Failure)]
        if results and len(failures) == len(results) and all(f.kind != "transient" for f in failures):
            kind = "stopped answering" if failures[0].kind == "refused" else "rejected every request"
            raise ServerUnavailable(
                f"the inference server at {self.connection.base_url} {kind} ({len(results)} of {len(results)} "
                f"requests, after up to {self.connection.retries} retries each): {failures[0].message}"
            )
        return results

    def post(self, body: dict[str, Any], rng: np.random.Generator) -> Completion | Failure:
        retries, backoff = self.connection.retries, self.connection.backoff
        for attempt in range(retries + 1):
            try:
                return self.attempt(body)
            except Retryable as exc:
                if exc.kind == "client" or attempt == retries:
                    return Failure(self.redact(str(exc)), exc.kind)
                time.sleep(max(backoff * 2**attempt * (0.5 + rng.random()), exc.wait))
        raise AssertionError("unreachable")

    def attempt(self, body: dict[str, Any]) -> Completion:
        import requests

        url = f"{self.connection.base_url}/chat/completions"
        try:
            reply = self.session().post(url, json=body, timeout=self.connection.timeout_s)
        except requests.ConnectTimeout:  # no connection at all: as good as refused
            raise Retryable(f"cannot connect within timeout_s={self.connection.timeout_s:g} s", "refused") from None
        except requests.Timeout:
            raise Retryable(f"no reply within timeout_s={self.connection.timeout_s:g} s", "transient") from None
        except requests.ConnectionError as exc:
            raise Retryable(f"cannot connect: {brief_error(exc)}", "refused") from None
        except requests.RequestException as exc:
            raise Retryable(brief_error(exc), "transient") from None
        status = reply.status_code
        if status == 429 or status >= 500:
            raise Retryable(
                f"HTTP {status}: {self.quote(reply.text)}",
                "transient",
                retry_after(reply.headers.get("Retry-After")),
            )
        if status >= 400:
            raise Retryable(f"HTTP {status}: {self.quote(reply.text)}", "client")
        try:
            return parse_completion(reply.json())
        except ValueError as exc:
            raise Retryable(f"unreadable reply ({exc}): {self.quote(reply.text)}", "transient") from None

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def retry_after(header: str | None) -> float:
    """Seconds a 429/503's `Retry-After` asks for (capped); 0 when absent or a date."""
    try:
        return min(max(float(header), 0.0), MAX_RETRY_AFTER_S) if header else 0.0
    except ValueError:
        return 0.0


def brief_error(exc: Exception) -> str:
    """A requests exception in one line: its innermost reason (e.g. 'Connection refused'), not urllib3's chain."""
    text = str(exc)
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)|(Read timed out)|(Connection refused)", text)
    reason = next((part for group in found for part in group if part), None)
    return reason or f"{type(exc).__name__}: {text[:MAX_BODY_CHARS]}"
