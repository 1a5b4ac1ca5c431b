"""Team problem solving with deferral to an expert (HILA, arXiv 2603.07972), as a PettingZoo AECEnv.

A team of `team_size` agents solves one problem over `rounds` rounds. Round 0: every agent answers
on its own. In each later round every agent picks one metacognitive action, all of them looking
at the answers as they stood when the round began:

- EVAL j: adopt agent j's latest answer (j is another agent), free;
- CREATE: give a new answer of its own, at `create_cost`;
- DEFER: ask the expert, at `defer_cost`.

When anyone deferred in a round, the expert (a seat of its own, which acts only then) gets one
turn at the end of that round and its answer becomes the answer of every agent that deferred.
The team's answer is the majority of the agents' last answers (ties broken by the episode seed).
Each team agent's return is 1[team correct] − defer_cost·#DEFER − create_cost·#CREATE; the
costs are paid on the step of the decision, the team reward on the last step. The expert gets 0.

Problems are generated with exact answers: arithmetic and word problems at difficulty 1-3, and
closed-world problems about fictional companies whose facts (a private table drawn from
`facts_seed`) only the expert knows. A problem set can also be read from a JSONL file.
Answers are compared after `normalize_answer` (numbers, whitespace, case).

An illegal action (EVAL of oneself or of no agent, anything but CREATE in round 0) keeps the
agent's previous answer at no cost and is flagged `info["illegal_action"]`; the text interface
never produces one.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agora.world import PRINTABLE, ParseError, Report, cached_per_agent, sanitize, world_config

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


# --- problems ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # normalized
    difficulty: int = 1  # 1 (one step) .. 3 (three steps or two private facts)
    kind: str = "file"  # arithmetic | word | closed | file
    formula: str = ""  # the question as arithmetic over [company|attribute] facts; read by scripted solvers
    note: str = ""  # what only the expert knows (the private facts the question needs)
    solution: str = ""  # the worked answer, e.g. '(34 + 12) * 7 - 15 = 307'


COMPANY_HEADS = ["Zor", "Qua", "Mar", "Vel", "Tri", "Bel", "Kor", "Nim", "Osk", "Pel", "Ryn", "Sol", "Tav", "Ul", "Wex", "Yar"]
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
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}

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
    two = lambda: int(rng.integers(10, 100))
    one = lambda: int(rng.integers(2, 10))
    sign = lambda: "+" if rng.random() < 0.5 else "-"
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
            question, formula = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?", f"{a} + {b}"
        else:
            a += b
            question, formula = f"{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?", f"{a} - {b}"
    elif difficulty == 2:
        a, b, c = int(rng.integers(2, 10)), int(rng.integers(3, 13)), int(rng.integers(2, 10))
        question = f"{name} buys {a} boxes with {b} {item} in each box and gives {c} {item} to a friend. How many {item} does {name} keep?"
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
            "employees": (f"{company} will hire {n} more people. How many employees will it have then?", f"{fact} + {n}"),
            "offices": (f"Each office of {company} has {n} meeting rooms. How many meeting rooms does {company} have in all?", f"{fact} * {n}"),
            "founded": (f"How old will {company} be in 2030, in years?", f"2030 - {fact}"),
            "products": (f"{company} will stop selling {n} of its products. How many products will it still sell?", f"{fact} - {n}"),
        }[attribute]
        used = [(company, attribute)]
    else:
        other = str(rng.choice([c for c in companies if c != company]))
        a, b = sorted((company, other), key=lambda c: (facts[(c, attribute)], c), reverse=True)
        verb = "sell" if attribute == "products" else "have"
        if attribute == "founded":  # a has the later year
            question, formula = f"How many years before {a} was {b} founded?", f"[{a}|founded] - [{b}|founded]"
        elif rng.random() < 0.5:
            question, formula = f"How many {attribute} do {a} and {b} {verb} together?", f"[{a}|{attribute}] + [{b}|{attribute}]"
        else:
            question, formula = f"How many more {attribute} does {a} {verb} than {b}?", f"[{a}|{attribute}] - [{b}|{attribute}]"
        used = [(a, attribute), (b, attribute)]
    answer = format_number(evaluate_formula(formula, facts))
    note = " ".join(fact_sentence(c, attr, facts[(c, attr)]) for c, attr in used)
    worked = FACT.sub(lambda m: str(facts[(m.group(1), m.group(2))]), formula)
    return Problem(question, answer, difficulty, "closed", formula, note, f"{worked} = {answer}" if worked != answer else answer)


def load_problems(path: str | Path) -> list[Problem]:
    """Problems from a JSONL file: one object per line with `question`, `answer`, and optional
    `note` (what only the expert knows), `difficulty` (1-3, default 1), `explanation`."""
    problems = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "answer" not in row:
            raise ValueError(f"{path} line {number}: expected an object with 'question' (text) and 'answer'")
        unknown = set(row) - {"question", "answer", "note", "difficulty", "explanation"}
        if unknown:
            raise ValueError(f"{path} line {number}: unknown keys {sorted(unknown)}; allowed: question, answer, note, difficulty, explanation")
        difficulty = row.get("difficulty", 1)
        if difficulty not in (1, 2, 3):
            raise ValueError(f"{path} line {number}: difficulty must be 1, 2 or 3 (got {difficulty!r})")
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


class DeferralConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team_size: int = Field(3, ge=2, le=9, description="agents in the team (seats agent_0 ...); the expert is one more seat")
    rounds: int = Field(3, ge=1, le=10, description="round 0 (everyone answers) plus rounds-1 rounds of EVAL/CREATE/DEFER")
    defer_cost: float = Field(0.3, ge=0.0, le=10.0, description="reward paid for each DEFER")
    create_cost: float = Field(0.1, ge=0.0, le=10.0, description="reward paid for each CREATE after round 0")
    kinds: dict[str, float] = Field(
        {"arithmetic": 0.4, "word": 0.3, "closed": 0.3}, description="generated problem kinds (arithmetic, word, closed) -> weight"
    )
    difficulties: list[int] = Field([1, 2, 3], min_length=1, description="difficulty levels drawn uniformly (1-3)")
    facts_seed: int = Field(0, ge=0, description="seed of the closed world's private fact table (fixed across episodes)")
    companies: int = Field(8, ge=2, le=100, description="fictional companies in the fact table")
    problems_file: str | None = Field(
        None,
        description="JSONL problems (question, answer, optional note/difficulty/explanation) used instead of generated ones; "
        "the path is relative to the working directory",
    )
    oracle_observations: bool = Field(False, description="add the true answer to team observations (only for the `oracle` baseline)")

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: dict[str, float]) -> dict[str, float]:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown problem kinds {sorted(unknown)}; allowed: {', '.join(KINDS)}")
        if any(w < 0 for w in kinds.values()) or sum(kinds.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return kinds

    @field_validator("difficulties")
    @classmethod
    def _difficulties(cls, levels: list[int]) -> list[int]:
        if any(d not in (1, 2, 3) for d in levels):
            raise ValueError("difficulty levels are 1, 2 and 3")
        return levels

    @model_validator(mode="after")
    def _file(self) -> DeferralConfig:
        if self.problems_file is not None:
            if not Path(self.problems_file).is_file():
                raise ValueError(f"problems_file {self.problems_file!r} is not a file")
            load_problems(self.problems_file)
        return self


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(AECEnv):
    metadata = {"name": "deferral_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "accuracy": "team accuracy",
        "reward": "mean reward",
        "deferral_rate": "deferral rate (per decision)",
        "expert_calls": "expert calls per problem",
        "cost": "cost per problem",
        "round0_correct": "right in round 0",
        "p_defer_given_team_wrong": "P(defer | team wrong)",
        "p_defer_given_team_right": "P(defer | team right)",
    }
    Config = DeferralConfig

    def __init__(self, config: DeferralConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__()
        self.config = world_config(DeferralConfig, config, kwargs)
        self.team = [f"agent_{i}" for i in range(self.config.team_size)]
        self.possible_agents = [*self.team, EXPERT]
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.facts = fact_table(self.config.facts_seed, self.config.companies)
        self.bank = load_problems(self.config.problems_file) if self.config.problems_file else None
        self.agents = []
        self.log: list[str] = []

    # --- spaces -------------------------------------------------------------------------

    def _text(self, limit: int, lines: bool = False) -> spaces.Text:
        return spaces.Text(max_length=limit, min_length=0, charset=PRINTABLE + ("\n" if lines else ""))

    def _history_chars(self) -> int:
        return self.config.rounds * (self.config.team_size * (MAX_ANSWER_CHARS + 40) + MAX_EXPLANATION_CHARS + 80)

    @cached_per_agent
    def observation_space(self, agent: str) -> spaces.Space:
        n, c = self.config.team_size, self.config
        answers = spaces.Tuple([self._text(MAX_ANSWER_CHARS)] * n)
        common = {
            "round": spaces.Discrete(c.rounds),
            "question": self._text(1000),
            "difficulty": spaces.Discrete(4),
            "answers": answers,  # every agent's answer as the round began ('' before round 1)
            "from_expert": spaces.MultiBinary(n),  # which of those answers the expert gave
            "history": self._text(self._history_chars(), lines=True),
        }
        if agent == EXPERT:
            return spaces.Dict(
                {
                    **common,
                    "deferred": spaces.MultiBinary(n),  # who asked this round
                    "note": self._text(MAX_NOTE_CHARS),
                    "reference": self._text(MAX_ANSWER_CHARS),
                    "solution": self._text(MAX_NOTE_CHARS),
                }
            )
        extra = {"reference": self._text(MAX_ANSWER_CHARS)} if c.oracle_observations else {}
        return spaces.Dict({**common, "self": spaces.Discrete(n), "formula": self._text(300), **extra})

    @cached_per_agent
    def action_space(self, agent: str) -> spaces.Space:
        if agent == EXPERT:
            return spaces.Dict({"answer": self._text(MAX_ANSWER_CHARS), "explanation": self._text(MAX_EXPLANATION_CHARS)})
        return spaces.Dict(
            {"type": spaces.Discrete(3), "target": spaces.Discrete(self.config.team_size), "answer": self._text(MAX_ANSWER_CHARS)}
        )

    # --- AEC API ------------------------------------------------------------------------

    def draw_problem(self) -> Problem:
        rng = self.np_random
        if self.bank is not None:
            return self.bank[int(rng.integers(len(self.bank)))]
        kinds = [k for k in KINDS if self.config.kinds.get(k, 0) > 0]
        weights = np.array([self.config.kinds[k] for k in kinds], dtype=float)
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        difficulty = int(rng.choice(self.config.difficulties))
        if kind == "arithmetic":
            return arithmetic_problem(rng, difficulty)
        if kind == "word":
            return word_problem(rng, difficulty)
        return closed_world_problem(rng, difficulty, self.facts)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.problem = self.draw_problem()
        n = self.config.team_size
        self.agents = list(self.possible_agents)
        self.round = 0
        self.answers = [""] * n  # as the round began
        self.from_expert = [0] * n
        self.next_answers = [""] * n  # as they will be when the round ends
        self.next_from_expert = [0] * n
        self.deferred: list[int] = []
        self.round_actions: list[str] = [""] * n
        self.log = []
        self.explanations: list[str] = []
        self.answer_history: list[list[str]] = []  # answers after each round
        self.decisions: list[dict[str, Any]] = []  # one per team decision in rounds >= 1
        self.expert_answers: list[str] = []
        self.costs = {a: 0.0 for a in self.team}
        self.illegal = 0
        self.team_answer: str | None = None
        self.correct = False
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = self.team[0]

    def observe(self, agent: str) -> dict[str, Any]:
        obs = {
            "round": self.round,
            "question": self.problem.question,
            "difficulty": self.problem.difficulty,
            "answers": tuple(self.answers),
            "from_expert": np.array(self.from_expert, dtype=np.int8),
            "history": "\n".join(self.log),
        }
        if agent == EXPERT:
            deferred = np.zeros(self.config.team_size, dtype=np.int8)
            deferred[self.deferred] = 1
            obs.update(deferred=deferred, note=self.problem.note, reference=self.problem.answer, solution=self.problem.solution)
            return obs
        obs.update({"self": self.team.index(agent), "formula": self.problem.formula})
        if self.config.oracle_observations:
            obs["reference"] = self.problem.answer
        return obs

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if agent == EXPERT:
            self._expert_step(action)
        else:
            self._team_step(agent, action)
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def _team_step(self, agent: str, action: Any) -> None:
        i = self.team.index(agent)
        kind, target, answer = self._decode(action)
        c = self.config
        if self.round == 0:
            legal = kind == CREATE
            self.next_answers[i] = answer if legal else ""
            self.round_actions[i] = f"answered {answer or '(nothing)'}" if legal else "ILLEGAL"
        else:
            legal = kind == CREATE or kind == DEFER or (kind == EVAL and target is not None and target != i)
            self.decisions.append(
                {
                    "round": self.round,
                    "agent": agent,
                    "action": ACTION_NAMES[kind] if legal else "ILLEGAL",
                    "team_right_before": team_would_be_right(self.answers, self.problem.answer),
                    "own_right_before": self.answers[i] == self.problem.answer,
                }
            )
            if not legal:
                self.round_actions[i] = "ILLEGAL (kept its answer)"
            elif kind == EVAL:
                self.next_answers[i], self.next_from_expert[i] = self.answers[target], self.from_expert[target]
                self.round_actions[i] = f"EVAL agent {target} -> {self.answers[target] or '(nothing)'}"
            elif kind == CREATE:
                self.next_answers[i], self.next_from_expert[i] = answer, 0
                self.rewards[agent] -= c.create_cost
                self.round_actions[i] = f"CREATE {answer or '(nothing)'}"
            else:
                self.deferred.append(i)
                self.rewards[agent] -= c.defer_cost
                self.round_actions[i] = "DEFER"
        if not legal:
            self.illegal += 1
            self.infos[agent]["illegal_action"] = True
        self.costs[agent] -= self.rewards[agent]
        if i + 1 < len(self.team):
            self.agent_selection = self.team[i + 1]
        elif self.deferred:
            self.agent_selection = EXPERT
        else:
            self._end_round()

    def _expert_step(self, action: Any) -> None:
        if isinstance(action, dict):
            answer = normalize_answer(action.get("answer", ""))
            explanation = sanitize(action.get("explanation", ""), MAX_EXPLANATION_CHARS)
        else:
            answer, explanation = "", ""
        for i in self.deferred:
            self.next_answers[i], self.next_from_expert[i] = answer, 1
            self.round_actions[i] = f"DEFER -> expert: {answer or '(nothing)'}"
        self.expert_answers.append(answer)
        if explanation:
            self.explanations.append(explanation)
        self._end_round(explanation)

    def _end_round(self, explanation: str = "") -> None:
        self.answers, self.from_expert = list(self.next_answers), list(self.next_from_expert)
        self.answer_history.append(list(self.answers))
        actions = "; ".join(f"agent {i} {a}" for i, a in enumerate(self.round_actions))
        self.log.append(f"round {self.round}: {actions}" + (f"{EXPLAINS}{explanation}" if explanation else ""))
        self.deferred, self.round_actions = [], [""] * len(self.team)
        self.round += 1
        if self.round < self.config.rounds:
            self.agent_selection = self.team[0]
            return
        self.round = self.config.rounds - 1  # stays a valid observation
        self.team_answer = majority_answer(self.answers, self.np_random)
        self.correct = bool(self.team_answer) and self.team_answer == self.problem.answer
        for agent in self.team:
            self.rewards[agent] += float(self.correct)
        self.terminations = {a: True for a in self.agents}
        self.agent_selection = self.team[0]

    def _decode(self, action: Any) -> tuple[int | None, int | None, str]:
        """(kind, target or None if out of range, normalized answer) of a team action dict."""
        if not isinstance(action, dict):
            return None, None, ""
        try:
            kind = int(action.get("type"))
        except (TypeError, ValueError, OverflowError):
            kind = None
        try:
            target = int(action.get("target", -1))
        except (TypeError, ValueError, OverflowError):
            target = None
        if kind not in (EVAL, CREATE, DEFER):
            kind = None
        if target is not None and not 0 <= target < len(self.team):
            target = None
        return kind, target, normalize_answer(action.get("answer", ""))

    def render(self) -> str | None:
        if self.render_mode is None or not hasattr(self, "problem"):
            return None
        lines = [f"question ({self.problem.kind}, difficulty {self.problem.difficulty}): {self.problem.question}", *self.log]
        if self.team_answer is not None:
            lines.append(f"team answer: {self.team_answer or '(none)'}, true answer: {self.problem.answer}, correct: {self.correct}")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass

    # --- text interface -----------------------------------------------------------------

    def numeric(self) -> bool:
        """Whether answers to this problem are numbers (then replies must name exactly one)."""
        return is_numeric(self.problem.answer)

    def prompt(self, agent: str, observation: dict[str, Any]) -> str:
        """Rules, the question, the answers as the round began and the reply format; built from `observation`.

        Team agents never see the expert's private note or the true answer; the expert sees the note
        (what a human expert is told) but not the true answer, which only the simulated expert reads
        from its structured observation.
        """
        c, n = self.config, self.config.team_size
        answers = observation["answers"]
        if agent == EXPERT:
            asked = [i for i in range(n) if observation["deferred"][i]]
            lines = [
                "You are the expert helping a team of agents answer a question.",
                f"Agent{'s' if len(asked) > 1 else ''} {', '.join(str(i) for i in asked)} asked you for the answer.",
                "Reply with your answer on the first line. You may add a short explanation for the team after a ';'.",
                "",
                f"Question: {observation['question']}",
            ]
            if observation["note"]:
                lines.append(f"What you know (the team does not): {observation['note']}")
            shown = [f"  agent {i}: {a}" for i, a in enumerate(answers) if a]
            lines += ["The team's answers so far:", *shown] if shown else ["The team has no answers yet."]
            example = "42; 40 + 2 = 42" if is_numeric(observation["reference"]) else "Paris; it is the capital"
            lines += [f"Round {int(observation['round']) + 1} of {c.rounds}.", "", f"Example reply: {example}"]
            return "\n".join(lines)
        me = int(observation["self"])
        if int(observation["round"]) == 0:
            lines = [
                f"You are agent {me} in a team of {n} agents answering a question. Give your own answer.",
                "Reply with one line:",
                "ANSWER: <your answer>",
                "",
                f"Question: {observation['question']}",
            ]
            return "\n".join(lines)
        others = [i for i in range(n) if i != me]
        lines = [
            f"You are agent {me} in a team of {n} agents answering a question. The team's answer is the majority "
            f"of the agents' answers; everyone scores 1 if it is right.",
            "Choose ONE action for this round:",
            f"EVAL <agent>      adopt that agent's answer, e.g. EVAL {others[0]} (free)",
            f"CREATE <answer>   give a new answer of your own (costs {c.create_cost:g})",
            f"DEFER             ask the expert, who knows facts you do not (costs {c.defer_cost:g})",
            f"Reply with one line, e.g.: EVAL {others[-1]} or CREATE 42 or DEFER",
            "",
            f"Question: {observation['question']}",
            "Answers now:",
        ]
        for i, answer in enumerate(answers):
            source = " (from the expert)" if observation["from_expert"][i] else ""
            lines.append(f"  agent {i}{' (you)' if i == me else ''}: {answer or '(no answer)'}{source}")
        explained = [line.split(EXPLAINS, 1)[1] for line in observation["history"].split("\n") if EXPLAINS in line]
        lines += [f"The expert explained: {e}" for e in explained]
        lines.append(f"Round {int(observation['round']) + 1} of {c.rounds}.")
        return "\n".join(lines)

    @cached_per_agent
    def demonstration(self, agent: str) -> list[dict[str, str]]:
        """Worked replies on fixed examples (nothing from the real episode): an answer, then a deferral
        on a question that needs a private fact while the team disagrees."""
        if agent == EXPERT:
            return []
        me, n = self.team.index(agent), self.config.team_size
        answer_obs = {"round": 0, "self": me, "question": "What is 12 + 30?", "answers": ("",) * n, "from_expert": [0] * n, "history": ""}
        disagree = tuple(str(20 + 7 * i) for i in range(n))
        decide_obs = {
            "round": 1,
            "self": me,
            "question": "How many employees does Ulmont Labs have?",
            "answers": disagree,
            "from_expert": [0] * n,
            "history": "",
        }
        answer_turn = [{"role": "user", "content": self.prompt(agent, answer_obs)}, {"role": "assistant", "content": "ANSWER: 42"}]
        if self.config.rounds == 1:  # no decision rounds to show
            return answer_turn
        return [*answer_turn, {"role": "user", "content": self.prompt(agent, decide_obs)}, {"role": "assistant", "content": "DEFER"}]

    def extract_answer(self, text: str) -> str:
        """The answer in `text`. With an 'ANSWER:' / 'answer is' label: the first non-empty line after it,
        and on that line what follows the last '=' ('ANSWER: 12 x 4 = 48' -> 48), its first number for
        numeric problems. Without a label: exactly one number for numeric problems, else the first line."""
        labelled = ANSWER_LABEL.search(text)
        body = re.sub(r"[*_`]", " ", text[labelled.end() :] if labelled else text).strip()
        if labelled:
            body = next((line for line in body.splitlines() if line.strip()), "").rsplit("=", 1)[-1]
        if self.numeric():
            numbers = [m.group(0) for m in NUMBER.finditer(body)]
            values = list(dict.fromkeys(normalize_answer(x) for x in numbers))
            if not values:
                raise ParseError("no number in your answer; reply e.g. 'ANSWER: 42'")
            if len(values) > 1 and not labelled:
                raise ParseError(f"several numbers ({', '.join(values[:4])}); give exactly one, e.g. 'ANSWER: {values[0]}'")
            return values[0]
        first = next((line for line in body.splitlines() if line.strip()), "")
        answer = normalize_answer(first)
        if not answer:
            raise ParseError("empty answer; reply e.g. 'ANSWER: <your answer>'")
        return answer

    def parse(self, agent: str, text: str) -> dict[str, Any]:
        """Team, round 0: an answer ('ANSWER: 42', 'The answer is 42.', '42').
        Team, later rounds: exactly one of EVAL <agent> ('EVAL 2', 'eval agent_2'), CREATE <answer>, DEFER.
        Expert: '<answer>[; explanation]' or 'ANSWER: <answer>' + 'EXPLANATION: ...'.
        Tolerated: case, markdown emphasis, labels and filler words. Not guessed: two different
        actions, EVAL of oneself or of no agent, a missing or ambiguous answer.
        """
        if not isinstance(text, str):
            raise ParseError("the reply must be text")
        if not text.strip():
            raise ParseError("empty reply")
        if agent == EXPERT:
            return self._parse_expert(text)
        me = self.team.index(agent)
        if self.round == 0:
            if any(ACTION_ALIASES[m.group(1).lower()] != CREATE for m in ACTION_WORD.finditer(text)):
                raise ParseError("in round 0 every agent answers on its own (no EVAL or DEFER yet); reply 'ANSWER: <your answer>'")
            return {"type": CREATE, "target": 0, "answer": self.extract_answer(text)}
        found = [(m.group(1).lower(), m) for m in ACTION_WORD.finditer(text)]
        kinds = {ACTION_ALIASES[word] for word, _ in found}
        if not kinds:
            raise ParseError(f"no action; reply with one of: EVAL <agent> (e.g. EVAL {(me + 1) % len(self.team)}), CREATE <answer>, DEFER")
        if len(kinds) > 1:
            raise ParseError("more than one action (" + ", ".join(ACTION_NAMES[k] for k in sorted(kinds)) + "); choose exactly one")
        kind = kinds.pop()
        if kind == DEFER:
            return {"type": DEFER, "target": 0, "answer": ""}
        if kind == CREATE:
            rest = text[found[0][1].end() :].split("\n", 1)[0]
            if not re.sub(r"[\W_]", "", rest):
                raise ParseError("CREATE needs your new answer on the same line, e.g. 'CREATE 42'")
            return {"type": CREATE, "target": 0, "answer": self.extract_answer(rest)}
        targets = set()
        for _, match in found:
            ref = AGENT_REF.match(text, match.end())
            if ref:
                targets.add(int(ref.group(1)))
        if not targets:
            raise ParseError(f"EVAL needs the agent whose answer you adopt, e.g. 'EVAL {(me + 1) % len(self.team)}'")
        if len(targets) > 1:
            raise ParseError("EVAL names more than one agent; name exactly one")
        target = targets.pop()
        if target == me:
            raise ParseError(f"you are agent {me}: EVAL adopts another agent's answer; EVAL another agent, CREATE or DEFER")
        if not 0 <= target < len(self.team):
            raise ParseError(f"there is no agent {target}; the agents are 0 to {len(self.team) - 1}")
        return {"type": EVAL, "target": target, "answer": ""}

    def _parse_expert(self, text: str) -> dict[str, str]:
        explained = EXPLANATION_LABEL.search(text)
        head = text[: explained.start()] if explained else text
        lines = [line for line in head.splitlines() if line.strip()]
        labelled = next((line for line in lines if ANSWER_LABEL.search(line)), None)
        answer_line = labelled or (lines[0] if lines else "")
        answer_part, _, after = answer_line.partition(";")
        explanation = explained and text[explained.end() :] or after or "\n".join(l for l in lines if l is not answer_line)
        return {"answer": self.extract_answer(answer_part), "explanation": sanitize(explanation, MAX_EXPLANATION_CHARS)}

    def render_action(self, agent: str, action: dict[str, Any]) -> str:
        if agent == EXPERT:
            explanation = action.get("explanation", "")
            return f"ANSWER: {action['answer']}" + (f"\nEXPLANATION: {explanation}" if explanation else "")
        kind = int(action["type"])
        if self.round == 0:
            return f"ANSWER: {action['answer']}"
        if kind == EVAL:
            return f"EVAL {int(action['target'])}"
        return f"CREATE {action['answer']}" if kind == CREATE else "DEFER"

    def fallback_action(self, agent: str, rng: np.random.Generator) -> dict[str, Any]:
        """Round 0 and the expert: no answer. Later rounds: EVAL of a uniformly drawn other agent (free)."""
        if agent == EXPERT:
            return {"answer": "", "explanation": ""}
        if self.round == 0:
            return {"type": CREATE, "target": 0, "answer": ""}
        me = self.team.index(agent)
        others = [i for i in range(len(self.team)) if i != me]
        return {"type": EVAL, "target": int(rng.choice(others)), "answer": ""}

    # --- outcomes -----------------------------------------------------------------------

    def episode_metrics(self) -> dict[str, float]:
        """Per episode: `correct`, `deferrals` and `deferral_rate` (of the team's decisions), `creates`,
        `cost` and `reward` (means per team agent), `expert_calls`, `round0_correct` (the team's strict
        plurality after round 0 was right), `illegal`, `difficulty`."""
        decisions = len(self.decisions)
        defers = sum(d["action"] == "DEFER" for d in self.decisions)
        n = len(self.team)
        round0 = self.answer_history[0] if self.answer_history else []
        return {
            "correct": float(self.correct),
            "deferrals": float(defers),
            "deferral_rate": defers / decisions if decisions else 0.0,
            "creates": float(sum(d["action"] == "CREATE" for d in self.decisions)),
            "cost": sum(self.costs.values()) / n,
            "reward": float(self.correct) - sum(self.costs.values()) / n,
            "expert_calls": float(len(self.expert_answers)),
            "round0_correct": float(team_would_be_right(round0, self.problem.answer)),
            "illegal": float(self.illegal),
            "difficulty": float(self.problem.difficulty),
        }

    def episode_info(self) -> dict[str, Any]:
        return {
            "problem": asdict(self.problem),
            "answers_by_round": self.answer_history,
            "decisions": self.decisions,
            "expert_answers": self.expert_answers,
            "team_answer": self.team_answer,
            "correct": self.correct,
            "costs": self.costs,
        }

    def run_report(self, episodes: list) -> Report:
        """Accuracy by difficulty and kind, deferral calibration, and a figure of both.

        Calibration of deferral, pooled over every decision of the run: P(DEFER | team would be wrong)
        and P(DEFER | team would be right), where 'right' means the true answer held a strict
        plurality of the answers when the round began.
        """
        from matplotlib.figure import Figure

        infos = [e.info for e in episodes if e.info.get("problem")]
        if not infos:
            return Report()
        metrics: dict[str, float] = {}
        by_difficulty: dict[int, list[float]] = {}
        defer_by_difficulty: dict[int, list[float]] = {}
        for info in infos:
            d = info["problem"]["difficulty"]
            by_difficulty.setdefault(d, []).append(float(info["correct"]))
            defer_by_difficulty.setdefault(d, []).extend(float(x["action"] == "DEFER") for x in info["decisions"])
        for d, values in sorted(by_difficulty.items()):
            metrics[f"eval/accuracy/difficulty_{d}"] = float(np.mean(values))
        for kind in {i["problem"]["kind"] for i in infos}:
            metrics[f"eval/accuracy/{kind}"] = float(np.mean([i["correct"] for i in infos if i["problem"]["kind"] == kind]))
        decisions = [x for info in infos for x in info["decisions"]]
        wrong = [x["action"] == "DEFER" for x in decisions if not x["team_right_before"]]
        right = [x["action"] == "DEFER" for x in decisions if x["team_right_before"]]
        metrics["eval/accuracy"] = float(np.mean([i["correct"] for i in infos]))
        if wrong:
            metrics["eval/p_defer_given_team_wrong"] = float(np.mean(wrong))
        if right:
            metrics["eval/p_defer_given_team_right"] = float(np.mean(right))
        figure = Figure(figsize=(8, 3.5))
        left, rightax = figure.subplots(1, 2)
        levels = sorted(by_difficulty)
        left.bar([str(d) for d in levels], [np.mean(by_difficulty[d]) for d in levels], color="tab:blue")
        left.set(xlabel="difficulty", ylabel="team accuracy", ylim=(0, 1), title="accuracy by difficulty")
        rightax.bar(
            ["team would be wrong", "team would be right"],
            [np.mean(wrong) if wrong else 0.0, np.mean(right) if right else 0.0],
            color=["tab:red", "tab:green"],
        )
        rightax.set(ylabel="P(DEFER)", ylim=(0, 1), title=f"deferral calibration ({len(decisions)} decisions)")
        figure.tight_layout()
        table = {
            "episode": [e.index for e in episodes for _ in e.info.get("decisions", [])],
            **{
                key: [x[key] for e in episodes for x in e.info.get("decisions", [])]
                for key in ("round", "agent", "action", "team_right_before", "own_right_before")
            },
        }
        return Report(
            metrics=metrics, figures={"deferral/accuracy_and_calibration.png": figure}, tables={"deferral/decisions.json": table}
        )


ANSWER_LABEL = re.compile(r"\banswer\b\s*(?:is\s*|=\s*|:\s*)+|final answer\s*[:=]?", re.IGNORECASE)
EXPLANATION_LABEL = re.compile(r"\bexplanation\s*:", re.IGNORECASE)
ACTION_WORD = re.compile(r"\b(eval|evaluate|adopt|create|defer)\b", re.IGNORECASE)
ACTION_ALIASES = {"eval": EVAL, "evaluate": EVAL, "adopt": EVAL, "create": CREATE, "defer": DEFER}
AGENT_REF = re.compile(r"[\s:*_`#(\[-]*(?:agent|player)?[\s_#:-]*(\d{1,3})\b", re.IGNORECASE)


def tradeoff_figure(rows: list[dict[str, Any]]):
    """Team accuracy against the mean cost paid per agent, one point per policy (rows: name, accuracy, cost)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4))
    ax = figure.subplots()
    for row in rows:
        ax.scatter(row["cost"], row["accuracy"], s=40)
        ax.annotate(row["name"], (row["cost"], row["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    costs = [row["cost"] for row in rows]
    ax.set_xlim(min(costs) - 0.05, max(costs) * 1.3 + 0.05)  # room for the labels
    ax.set(xlabel="mean cost paid per agent (deferrals and creates)", ylabel="team accuracy", ylim=(0, 1.05), title="accuracy vs deferral cost")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure
