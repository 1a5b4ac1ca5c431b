"""Readable replays: one self-contained HTML page per episode, which MLflow's artifact view shows in full.

A page holds the episode's header (index, seed, policies, returns, metrics) and every turn in order:
the seat and its policy, the prompt it was shown (a collapsed block: the world's prompt and any
re-prompts), its reply, the parsed action, the reward, and marks for a fallback action or
unparseable replies. Every text an agent or world wrote is HTML-escaped, so a reply cannot inject
markup; the page has no scripts and loads nothing.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from agora.trajectory import Episode, Step, chat_messages

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
        parts.append(f"<details><summary>prompt ({len(messages)} messages)</summary>{text_block(shown)}</details>")
    elif step.observation is not None:
        parts.append(f"<details><summary>observation</summary>{text_block(as_json(step.observation))}</details>")
    for attempt in step.failed_attempts:
        parts.append(f"<div>unparseable: {escape(attempt.get('error', ''))}</div>{text_block(attempt.get('text', ''))}")
    parts.append(text_block(step.text, "reply"))
    parts.append(facts([("action", step.action), ("reward", step.reward)]))
    parts.append("</div>")
    return "\n".join(parts)


def episode_html(episode: Episode, title: str = "") -> str:
    """Episode `episode` as one HTML page (`title`: e.g. the run's name)."""
    heading = f"episode {episode.index}" + (f" &middot; {escape(title)}" if title else "")
    header = facts(
        [
            ("seed", episode.seed),
            ("policies", ", ".join(f"{seat}={policy}" for seat, policy in episode.policies.items())),
            ("returns", episode.returns),
            ("metrics", episode.metrics),
            ("turns", len(episode.steps)),
        ]
    )
    turns = "\n".join(turn_html(episode, step) for step in episode.steps)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>episode {episode.index}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{heading}</h1>\n{header}\n{turns}\n</body></html>\n"
    )


def write_replays(episodes: list[Episode], folder: Path, title: str = "") -> None:
    """One replay page per episode in `folder` (`replay_name`)."""
    for episode in episodes:
        (folder / replay_name(episode.index)).write_text(episode_html(episode, title), encoding="utf-8")
