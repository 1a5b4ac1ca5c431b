"""Readable replays: one self-contained HTML page per episode, which MLflow's artifact view shows in full.

A page holds the episode's header (index, seed, policies, returns, metrics) and every turn in order:
the seat and its policy, the prompt it was shown (a collapsed block: the world's prompt and any
re-prompts), its reply, the parsed action, the reward, and marks for a fallback action or
unparseable replies. Every text an agent or world wrote is HTML-escaped, so a reply cannot inject
markup; the page has no scripts and loads nothing.

What a run shows this way is bounded (`review_sample`): its first `tracking.traces` episodes, each
cut to its first `MAX_TURNS_SHOWN` turns, as long as they add up to `MAX_TURNS_REVIEWED` turns (an
economy episode has 30,000 worker decisions: 27 MB of HTML and 22 s of trace writing uncut). The
MLflow traces (`agora.traces`) show the same episodes and turns; `trajectories.jsonl.gz` has them all.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from agora.errors import plural
from agora.trajectory import Episode, Step, chat_messages, reply_text

MAX_TURNS_SHOWN = 1000  # turns of one episode shown in its replay and trace (the first ones)
MAX_TURNS_REVIEWED = 10_000  # turns shown in all of a run's replays (and spans in all its traces)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 70em; color: #222; }
table.facts td { padding: 0.1em 1em 0.1em 0; vertical-align: top; }
.turn { border-left: 4px solid #888; margin: 1em 0; padding: 0.3em 0.8em; background: #fafafa; }
.turn.fallback { border-left-color: #c33; }
.head { font-weight: bold; }
.mark { color: #c33; font-weight: bold; }
pre { white-space: pre-wrap; word-wrap: break-word; margin: 0.3em 0; }
.reply { background: #eef4ff; padding: 0.3em; }
details pre { background: #f0f0f0; padding: 0.3em; }
"""


def review_sample(episodes: list[Episode], limit: int) -> list[Episode]:
    """The episodes a run shows as replays and traces: the first `limit` (by index), while their shown
    turns (at most MAX_TURNS_SHOWN each) add up to at most MAX_TURNS_REVIEWED."""
    chosen, turns = [], 0
    for episode in sorted(episodes, key=lambda e: e.index)[:limit]:
        turns += min(len(episode.steps), MAX_TURNS_SHOWN)
        if turns > MAX_TURNS_REVIEWED:
            break
        chosen.append(episode)
    return chosen


def shown_turns(episode: Episode) -> str:
    """`N`, or `N (the first M shown)` for an episode cut to MAX_TURNS_SHOWN turns."""
    n = len(episode.steps)
    return (
        f"{n}" if n <= MAX_TURNS_SHOWN else f"{n} (the first {MAX_TURNS_SHOWN} shown; all are in trajectories.jsonl.gz)"
    )


def replay_name(index: int) -> str:
    """The file name of episode `index`'s replay (under the run's `replays/`)."""
    return f"episode-{index:04d}.html"


def text_block(text: str, css: str = "") -> str:
    return f'<pre class="{css}">{escape(text)}</pre>' if css else f"<pre>{escape(text)}</pre>"


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def facts(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v if isinstance(v, str) else as_json(v))}</td></tr>" for k, v in rows
    )
    return f'<table class="facts">{cells}</table>'


def turn_html(episode: Episode, step: Step) -> str:
    policy = episode.policies.get(step.agent, "")
    marks = []
    if step.fallback:
        marks.append("fallback action (not the agent's choice)")
    if step.failed_attempts:
        marks.append(f"{len(step.failed_attempts)} unparseable repl{'y' if len(step.failed_attempts) == 1 else 'ies'}")
    parts = [
        f'<div class="turn{" fallback" if step.fallback else ""}">',
        f'<div class="head">turn {step.turn} &middot; {escape(step.agent)} ({escape(policy)})</div>',
    ]
    if marks:
        parts.append(f'<div class="mark">{escape("; ".join(marks))}</div>')
    messages = chat_messages(step)
    if messages:
        shown = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
        parts.append(
            f"<details><summary>prompt ({plural(len(messages), 'message')})</summary>{text_block(shown)}</details>"
        )
    elif step.observation is not None:
        shown = json.dumps(step.observation, ensure_ascii=False, sort_keys=True, indent=1)  # one key a line
        parts.append(f"<details><summary>observation</summary>{text_block(shown)}</details>")
    for attempt in step.failed_attempts:
        parts.append(f"<div>unparseable: {escape(attempt.get('error', ''))}</div>{text_block(attempt.get('text', ''))}")
    parts.append(text_block(reply_text(step), "reply"))
    rows: list[tuple[str, Any]] = [("action", step.action), ("reward", step.reward)]
    if step.info and "subgoal" in step.info:  # a plan-execute agent's segment
        kind = "new subgoal: " if step.info.get("segment_start") else "kept: "
        rows.insert(0, ("plan", kind + str(step.info["subgoal"])))
    if step.seconds is not None:  # the batched call(s) this decision waited for
        rows.append(("seconds", f"{step.seconds:.3f}"))
    parts.append(facts(rows))
    parts.append("</div>")
    return "\n".join(parts)


def episode_html(episode: Episode) -> str:
    """Episode `episode` as one HTML page."""
    header = facts(
        [
            ("seed", episode.seed),
            ("policies", ", ".join(f"{seat}={policy}" for seat, policy in episode.policies.items())),
            ("returns", episode.returns),
            ("metrics", episode.metrics),
            ("turns", shown_turns(episode)),
            *([("outcome", episode.info)] if episode.info else []),  # the world's episode facts
        ]
    )
    turns = "\n".join(turn_html(episode, step) for step in episode.steps[:MAX_TURNS_SHOWN])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>episode {episode.index}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>episode {episode.index}</h1>\n{header}\n{turns}\n</body></html>\n"
    )


def write_replays(episodes: list[Episode], folder: Path) -> None:
    """One replay page per episode in `folder` (`replay_name`)."""
    for episode in episodes:
        (folder / replay_name(episode.index)).write_text(episode_html(episode), encoding="utf-8")
