"""Episodes as MLflow traces: one trace per episode, one span per turn, for the Traces tab.

The root span is the episode (inputs: seed and policies; outputs: returns and metrics); each turn
(the first `MAX_TURNS_SHOWN`) is a child span, in turn order: `CHAT_MODEL` for a seat that read
the world's prompt (inputs: the chat messages it was shown, outputs: its reply as an OpenAI-style
assistant message) and `AGENT` for one that acted on the observation. Every turn span carries
`agora.agent`, `agora.turn`, `agora.policy`, `agora.action`, `agora.reward`, `agora.fallback`,
`agora.parse_failures` (the failed replies and why) and, when token ids exist,
`mlflow.chat.tokenUsage`. The trace is tagged `agora.run`, `agora.episode`, `agora.seed` and
`agora.policies`, and linked to the run through the `mlflow.sourceRun` metadata (what the run's
Traces tab and `search_traces(run_id=...)` read).

Traces are built from finished episodes as MLflow's own entities (the trace JSON format read by
`Trace.from_dict`) and written with `TracingClient` in one batch: `start_trace` per trace, then
`log_spans` once for all spans. MLflow's live tracing (`mlflow.start_span`, `MlflowClient.start_trace`)
is not used: it exports to the process-wide tracking URI from a background queue that only logs
its failures and flushes at exit, while a run writes to its own store and must know what failed
(`Tracker.log_traces` then saves the traces locally). A turn's span runs from the first call for
that decision to its reply (`Step.started`, `Step.seconds`): a batched call's time is shared by
every turn in the batch. Trajectories written before turns were timed get spans one microsecond
apart in turn order.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from mlflow.entities import SpanType, Trace, TraceInfo
from mlflow.entities.trace_location import TraceLocation
from mlflow.entities.trace_state import TraceState
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import (
    TRACE_SCHEMA_VERSION,
    TRACE_SCHEMA_VERSION_KEY,
    SpanAttributeKey,
    TraceMetadataKey,
    TraceTagKey,
)

from agora.replay import MAX_TURNS_SHOWN
from agora.trajectory import Episode, Step, chat_messages, reply_text

PREVIEW_CHARS = 1000  # request/response previews shown in the Traces list


def trace_id(run_id: str, index: int, group: str = "") -> str:
    """The id of episode `index`'s trace in run `run_id` (stable: logging twice cannot duplicate it);
    `group` tells apart sets of episodes of one run (a campaign's evaluation per opponent)."""
    key = f"{run_id}/{group}/{index}" if group else f"{run_id}/{index}"
    return "tr-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def span_id(trace: str, n: int) -> str:
    """The id of the `n`-th span of `trace` (0: the episode), 16 hex digits."""
    return hashlib.sha256(f"{trace}/{n}".encode()).hexdigest()[:16]


def token_usage(step: Step) -> dict[str, int] | None:
    """MLflow's token-usage attribute, from the token ids a learnable policy recorded."""
    if step.prompt_ids is None and step.completion_ids is None:
        return None
    prompt, completion = len(step.prompt_ids or []), len(step.completion_ids or [])
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


def span_dict(
    trace: str,
    n: int,
    name: str,
    span_type: str,
    inputs: Any,
    outputs: Any,
    attributes: dict[str, Any],
    start_ns: int,
    end_ns: int | None = None,
) -> dict[str, Any]:
    """One span in MLflow's trace JSON format (`Span.to_dict`): attribute values JSON-encoded."""
    values = {
        SpanAttributeKey.REQUEST_ID: trace,
        SpanAttributeKey.SPAN_TYPE: span_type,
        SpanAttributeKey.INPUTS: inputs,
        SpanAttributeKey.OUTPUTS: outputs,
        **attributes,
    }
    return {
        "trace_id": trace,
        "span_id": span_id(trace, n),
        "parent_span_id": span_id(trace, 0) if n else None,
        "name": name,
        "start_time_unix_nano": start_ns,
        "end_time_unix_nano": start_ns + 1000 if end_ns is None else end_ns,
        "events": [],
        "status": {"code": "OK", "message": ""},
        "attributes": {key: json.dumps(value, ensure_ascii=False) for key, value in values.items()},
    }


def turn_span(trace: str, episode: Episode, step: Step, start_ns: int, end_ns: int | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "agora.agent": step.agent,
        "agora.turn": step.turn,
        "agora.policy": episode.policies.get(step.agent, ""),
        "agora.action": step.action,
        "agora.reward": step.reward,
        "agora.fallback": step.fallback,
        "agora.parse_failures": step.failed_attempts,
    }
    if step.info:  # the policy's own record (a plan-execute agent's switch and subgoal)
        attributes["agora.info"] = {k: v for k, v in step.info.items() if k != "reply"}
    messages = chat_messages(step)
    if messages:
        span_type = SpanType.CHAT_MODEL
        inputs: Any = {"messages": messages}
        reply = {"role": "assistant", "content": reply_text(step)}
        outputs: Any = {"choices": [{"index": 0, "message": reply, "finish_reason": "stop"}]}
        attributes[SpanAttributeKey.MESSAGE_FORMAT] = "openai"
    else:
        span_type, inputs, outputs = SpanType.AGENT, {"observation": step.observation}, {"text": step.text}
    if usage := token_usage(step):
        attributes[SpanAttributeKey.CHAT_USAGE] = usage
    name = f"turn {step.turn}: {step.agent}"
    return span_dict(trace, step.turn + 1, name, span_type, inputs, outputs, attributes, start_ns, end_ns)


def episode_trace(
    episode: Episode, run_id: str, experiment_id: str, start_ns: int | None = None, group: str = ""
) -> Trace:
    """Episode `episode` of run `run_id` as one MLflow trace in experiment `experiment_id`: a span for
    each of its first MAX_TURNS_SHOWN turns (the root's `agora.turns` and `agora.turns_shown` say so).
    A `group` (e.g. `eval-fair`) prefixes the trace's name and is its `agora.group` tag."""
    trace = trace_id(run_id, episode.index, group)
    name = f"{group} episode {episode.index}" if group else f"episode {episode.index}"
    start_ns = time.time_ns() if start_ns is None else start_ns
    inputs = {"seed": episode.seed, "policies": episode.policies}
    outputs = {"returns": episode.returns, "metrics": episode.metrics}
    steps = episode.steps[:MAX_TURNS_SHOWN]
    counts = {"agora.turns": len(episode.steps), "agora.turns_shown": len(steps)}
    if steps and all(step.started is not None and step.seconds is not None for step in steps):
        # the turns as the rollout timed them: from the first call for a decision to its reply
        times = [(int(step.started * 1e9), int((step.started + step.seconds) * 1e9)) for step in steps]
        start_ns = min(begin for begin, _ in times)
    else:  # trajectories written before turns were timed: turns 1 us apart in turn order
        times = [(start_ns + 1000 * (i + 1), None) for i in range(len(steps))]
    spans = [span_dict(trace, 0, name, SpanType.CHAIN, inputs, outputs, counts, start_ns)]
    spans += [turn_span(trace, episode, step, *times[i]) for i, step in enumerate(steps)]
    spans[0]["end_time_unix_nano"] = max((s["end_time_unix_nano"] for s in spans), default=start_ns + 1000)
    info = TraceInfo(
        trace_id=trace,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start_ns // 1_000_000,
        state=TraceState.OK,
        request_preview=json.dumps(inputs, ensure_ascii=False)[:PREVIEW_CHARS],
        response_preview=json.dumps(outputs, ensure_ascii=False)[:PREVIEW_CHARS],
        execution_duration=(spans[0]["end_time_unix_nano"] - start_ns) // 1_000_000,
        trace_metadata={TraceMetadataKey.SOURCE_RUN: run_id, TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION)},
        tags={
            TraceTagKey.TRACE_NAME: name,
            **({"agora.group": group} if group else {}),
            "agora.run": run_id,
            "agora.episode": str(episode.index),
            "agora.seed": str(episode.seed),
            "agora.policies": ", ".join(f"{seat}={policy}" for seat, policy in episode.policies.items()),
        },
    )
    return Trace.from_dict({"info": info.to_dict(), "data": {"spans": spans}})


def write_traces(uri: str, experiment_id: str, traces: list[Trace]) -> None:
    """Write `traces` into the store at `uri`: their infos (tags, run link, previews), then every span at once."""
    if not traces:
        return
    client = TracingClient(uri)
    for trace in traces:
        client.start_trace(trace.info)
    client.log_spans(experiment_id, [span for trace in traces for span in trace.data.spans])
