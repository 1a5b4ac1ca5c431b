"""The deferral world's rules as data and pure functions: the actions, answer limits, and how answers
are normalised, compared and combined into the team's answer.

The world itself is told in the package docstring (worlds/deferral/__init__.py).
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np

from agora.world import sanitize

EVAL, CREATE, DEFER = 0, 1, 2
ACTION_NAMES = ("EVAL", "CREATE", "DEFER")
EXPERT = "expert"
KINDS = ("arithmetic", "word", "closed")
MAX_ANSWER_CHARS = 60
MAX_EXPLANATION_CHARS = 300
MAX_NOTE_CHARS = 500
EXPLAINS = "; expert explains: "  # marks the expert's explanation in the history log


# --- answers ----------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?")
WHOLE_NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?")


def number_value(text: str) -> Fraction | None:
    """The exact value of a number written like '1,234', '$12.50', '-3', '3/4' or '15%', else None."""
    body = text.strip().replace("$", "").replace(",", "").replace(" ", "")
    if not WHOLE_NUMBER.fullmatch(text.strip().replace(" ", "")):
        return None
    percent = body.endswith("%")
    try:
        value = Fraction(body.rstrip("%"))
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def format_number(value: Fraction) -> str:
    """12 -> '12', 25/2 -> '12.5', 1/3 -> '1/3' (terminating decimals as decimals)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    return f"{float(value):.{digits}f}"


def normalize_answer(text: Any) -> str:
    """The canonical form answers are compared in: numbers by value ('1,234.0' -> '1234',
    '$12.50' -> '12.5'), other text lowercased with single spaces and no surrounding punctuation."""
    line = sanitize(text, 4 * MAX_ANSWER_CHARS).rstrip(".!").strip()
    value = number_value(line)
    if value is not None:
        return format_number(value)[:MAX_ANSWER_CHARS]
    return line.lower().strip(" \"'`*_.,;:!?()[]")[:MAX_ANSWER_CHARS]


def is_numeric(answer: str) -> bool:
    return number_value(answer) is not None


def majority_answer(answers: list[str], rng: np.random.Generator) -> str:
    """The most frequent non-empty answer; a tie is broken uniformly with `rng` ('' when nobody answered)."""
    counts = Counter(a for a in answers if a)
    if not counts:
        return ""
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)
    return tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]


def team_would_be_right(answers: list[str], truth: str) -> bool:
    """The true answer holds a strict plurality of `answers` (the team is right without a tie-break)."""
    counts = Counter(a for a in answers if a)
    return counts.get(truth, 0) > max((c for a, c in counts.items() if a != truth), default=0)
