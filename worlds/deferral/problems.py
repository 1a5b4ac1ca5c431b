"""The deferral world's problems: generated arithmetic, word and closed-world problems with exact
answers, the private fact table only the expert knows, the formula evaluator (exact, or a noisy
solver for scripted agents), and problem files (JSONL).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from agora.scenario import brief, parse_json, read_text
from agora.world import sanitize
from worlds.deferral.rules import MAX_EXPLANATION_CHARS, MAX_NOTE_CHARS, format_number, normalize_answer


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # normalized
    difficulty: int = 1  # 1 (one step) .. 3 (three steps or two private facts)
    kind: str = "file"  # arithmetic | word | closed | file
    formula: str = ""  # the question as arithmetic over [company|attribute] facts; read by scripted solvers
    note: str = ""  # what only the expert knows (the private facts the question needs)
    solution: str = ""  # the worked answer, e.g. '(34 + 12) * 7 - 15 = 307'


COMPANY_HEADS = [
    "Zor",
    "Qua",
    "Mar",
    "Vel",
    "Tri",
    "Bel",
    "Kor",
    "Nim",
    "Osk",
    "Pel",
    "Ryn",
    "Sol",
    "Tav",
    "Ul",
    "Wex",
    "Yar",
]
COMPANY_TAILS = ["vex", "lon", "brook", "dara", "tex", "mont", "quist", "wick", "ion", "ora"]
COMPANY_KINDS = ["Labs", "Systems", "Foods", "Motors", "Textiles", "Robotics", "Logistics", "Media"]
# attribute -> (low, high) of its values, and the sentence the expert knows it by
ATTRIBUTES: dict[str, tuple[int, int, str]] = {
    "employees": (40, 2000, "{c} has {v} employees."),
    "offices": (2, 30, "{c} has {v} offices."),
    "founded": (1950, 2015, "{c} was founded in {v}."),
    "products": (12, 80, "{c} sells {v} products."),
}


def fact_table(seed: int, companies: int) -> dict[tuple[str, str], int]:
    """The closed world: `companies` fictional companies and their attributes, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    while len(names) < companies:
        name = f"{rng.choice(COMPANY_HEADS)}{rng.choice(COMPANY_TAILS)} {rng.choice(COMPANY_KINDS)}"
        if name not in names:
            names.append(name)
    return {(c, a): int(rng.integers(lo, hi + 1)) for c in names for a, (lo, hi, _) in ATTRIBUTES.items()}


def fact_sentence(company: str, attribute: str, value: int) -> str:
    return ATTRIBUTES[attribute][2].format(c=company, v=value)


FACT = re.compile(r"\[([^\]|]+)\|([a-z]+)\]")


def evaluate_formula(
    formula: str, facts: dict[tuple[str, str], int], *, slip: float = 0.0, rng: np.random.Generator | None = None
) -> Fraction:
    """Value of `formula` ('(34 + 12) * 7', '[Zorvex Labs|employees] + 15'), exact with `slip` = 0.

    A noisy solver: each operation's result is off by ±1..9 with probability `slip`; a fact missing
    from `facts` is guessed uniformly from its attribute's range. Raises ValueError on anything
    but + - * / over integers and facts.
    """
    names: dict[str, tuple[str, str]] = {}

    def name_fact(match: re.Match) -> str:
        names[f"_f{len(names)}"] = (match.group(1), match.group(2))
        return f"_f{len(names) - 1}"

    tree = ast.parse(FACT.sub(name_fact, formula), mode="eval")
    ops = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b,
    }

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            key = names[node.id]
            if key in facts:
                return Fraction(facts[key])
            if rng is None or key[1] not in ATTRIBUTES:
                raise ValueError(f"unknown fact {key}")
            lo, hi, _ = ATTRIBUTES[key[1]]
            return Fraction(int(rng.integers(lo, hi + 1)))
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            result = ops[type(node.op)](value(node.left), value(node.right))
            if slip and rng is not None and rng.random() < slip:
                result += int(rng.choice([-1, 1])) * int(rng.integers(1, 10))
            return result
        raise ValueError(f"not a formula: {formula!r}")

    return value(tree.body)


def arithmetic_problem(rng: np.random.Generator, difficulty: int) -> Problem:
    """Difficulty 1: a ± b; 2: a·b ± c; 3: (a ± b)·c ± d (two-digit numbers, one-digit factors)."""

    def two():
        return int(rng.integers(10, 100))

    def one():
        return int(rng.integers(2, 10))

    def sign():
        return "+" if rng.random() < 0.5 else "-"

    if difficulty == 1:
        a, b = sorted((two(), two()), reverse=True)
        formula = f"{a} {sign()} {b}"
    elif difficulty == 2:
        formula = f"{two()} * {one()} {sign()} {two()}"
    else:
        a, b = sorted((two(), two()), reverse=True)
        formula = f"({a} {sign()} {b}) * {one()} {sign()} {two()}"
    answer = format_number(evaluate_formula(formula, {}))
    return Problem(f"What is {formula}?", answer, difficulty, "arithmetic", formula, "", f"{formula} = {answer}")


NAMES = ["Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jon", "Kemal", "Lena"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "stamps", "shells", "cards"]


def word_problem(rng: np.random.Generator, difficulty: int) -> Problem:
    """One, two or three arithmetic steps told as a story; divisions come out exact."""
    name, item = str(rng.choice(NAMES)), str(rng.choice(ITEMS))
    if difficulty == 1:
        a, b = int(rng.integers(10, 60)), int(rng.integers(2, 30))
        if rng.random() < 0.5:
            question, formula = (
                f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
                f"{a} + {b}",
            )
        else:
            a += b
            question, formula = (
                f"{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?",
                f"{a} - {b}",
            )
    elif difficulty == 2:
        a, b, c = int(rng.integers(2, 10)), int(rng.integers(3, 13)), int(rng.integers(2, 10))
        question = (
            f"{name} buys {a} boxes with {b} {item} in each box and gives {c} {item} to a friend. How many "
            f"{item} does {name} keep?"
        )
        formula = f"{a} * {b} - {c}"
    else:
        a, b, d = int(rng.integers(2, 10)), int(rng.integers(3, 13)), int(rng.integers(2, 7))
        c = (-a * b) % d or d  # makes a*b + c divisible by d
        question = (
            f"{name} buys {a} boxes with {b} {item} in each box, gets {c} more as a gift, and shares all of them "
            f"equally among {d} friends. How many {item} does each friend get?"
        )
        formula = f"({a} * {b} + {c}) / {d}"
    answer = format_number(evaluate_formula(formula, {}))
    return Problem(question, answer, difficulty, "word", formula, "", f"{formula} = {answer}")


def closed_world_problem(rng: np.random.Generator, difficulty: int, facts: dict[tuple[str, str], int]) -> Problem:
    """Questions about the private fact table: one fact (1), a fact and a number (2), two facts (3)."""
    companies = sorted({c for c, _ in facts})
    company = str(rng.choice(companies))
    attribute = str(rng.choice(list(ATTRIBUTES)))
    fact = f"[{company}|{attribute}]"
    if difficulty == 1:
        question = {
            "employees": f"How many employees does {company} have?",
            "offices": f"How many offices does {company} have?",
            "founded": f"In what year was {company} founded?",
            "products": f"How many products does {company} sell?",
        }[attribute]
        formula, used = fact, [(company, attribute)]
    elif difficulty == 2:
        n = int(rng.integers(2, 10))
        question, formula = {
            "employees": (
                f"{company} will hire {n} more people. How many employees will it have then?",
                f"{fact} + {n}",
            ),
            "offices": (
                f"Each office of {company} has {n} meeting rooms. How many meeting rooms does {company} have in all?",
                f"{fact} * {n}",
            ),
            "founded": (f"How old will {company} be in 2030, in years?", f"2030 - {fact}"),
            "products": (
                f"{company} will stop selling {n} of its products. How many products will it still sell?",
                f"{fact} - {n}",
            ),
        }[attribute]
        used = [(company, attribute)]
    else:
        other = str(rng.choice([c for c in companies if c != company]))
        a, b = sorted((company, other), key=lambda c: (facts[(c, attribute)], c), reverse=True)
        verb = "sell" if attribute == "products" else "have"
        if attribute == "founded":  # a has the later year
            question, formula = f"How many years before {a} was {b} founded?", f"[{a}|founded] - [{b}|founded]"
        elif rng.random() < 0.5:
            question, formula = (
                f"How many {attribute} do {a} and {b} {verb} together?",
                f"[{a}|{attribute}] + [{b}|{attribute}]",
            )
        else:
            question, formula = (
                f"How many more {attribute} does {a} {verb} than {b}?",
                f"[{a}|{attribute}] - [{b}|{attribute}]",
            )
        used = [(a, attribute), (b, attribute)]
    answer = format_number(evaluate_formula(formula, facts))
    note = " ".join(fact_sentence(c, attr, facts[(c, attr)]) for c, attr in used)
    worked = FACT.sub(lambda m: str(facts[(m.group(1), m.group(2))]), formula)
    return Problem(
        question, answer, difficulty, "closed", formula, note, f"{worked} = {answer}" if worked != answer else answer
    )


def load_problems(path: str | Path) -> list[Problem]:
    """Problems from a JSONL file: one object per line with `question`, `answer`, and optional
    `note` (what only the expert knows), `difficulty` (1-3, default 1), `explanation`. Read with
    Agora's limits for user files (`agora.scenario.read_text`, `parse_json`); a `ValueError` naming
    the line otherwise."""
    try:
        text = read_text(path)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "answer" not in row:
            raise ValueError(f"{path} line {number}: expected an object with 'question' (text) and 'answer'")
        unknown = set(row) - {"question", "answer", "note", "difficulty", "explanation"}
        if unknown:
            raise ValueError(
                f"{path} line {number}: unknown keys {brief(sorted(unknown))}; allowed: question, answer, note, "
                "difficulty, explanation"
            )
        if isinstance(row["answer"], (bool, list, dict)) or row["answer"] is None:
            raise ValueError(f"{path} line {number}: the answer must be text or a number")
        if not all(isinstance(row.get(key, ""), str) for key in ("note", "explanation")):
            raise ValueError(f"{path} line {number}: 'note' and 'explanation' must be text")
        difficulty = row.get("difficulty", 1)
        if isinstance(difficulty, bool) or difficulty not in (1, 2, 3):
            raise ValueError(f"{path} line {number}: difficulty must be 1, 2 or 3 (got {brief(difficulty)})")
        answer = normalize_answer(row["answer"])
        if not answer:
            raise ValueError(f"{path} line {number}: the answer is empty")
        problems.append(
            Problem(
                sanitize(row["question"], 1000),
                answer,
                difficulty,
                "file",
                "",
                sanitize(row.get("note", ""), MAX_NOTE_CHARS),
                sanitize(row.get("explanation", ""), MAX_EXPLANATION_CHARS),
            )
        )
    if not problems:
        raise ValueError(f"{path}: no problems in the file")
    return problems
