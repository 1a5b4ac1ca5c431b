"""The economy's text interface: worker and planner prompts, the reply grammars, the strict reply
parsers, rendering.

The canonical replies (`LABOR: <hours>`, the democratic `STAND: <changes>` / `STAND: NO` and
`VOTE: <candidate>` lines, the planner's `DELTAS: <changes>`) are defined once below: `reply_grammar`
builds the language of a legal reply from them per turn (phase, bracket count, candidates, the
planner's current rates) and `render_action` writes them; the parsers read them and more.

`EconomyText` is a mixin of `parallel_env` (worlds/economy/world.py); it reads the env's `config`,
`cutoffs`, `rates`, `candidates` and `phase()`. The worked example (`demonstration`) lives with the
env, which it plays.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np

from agora.grammar import DIGITS, Grammar, Node, alt, chars, integer, one_of, seq
from agora.world import ParseError, check_reply
from worlds.economy.rules import (
    MAX_LABOR,
    PERSONAS,
    PLANNER,
    PLANNER_DELTAS,
    STAND,
    VOTE,
    WORK,
    action_field,
    action_labor,
    platform_deltas,
)


def money(x: float) -> str:
    """Dollars as prompts write them: whole from $100 up (and $0), else with cents."""
    return f"${x:,.0f}" if abs(x) >= 100 or x == 0 else f"${x:,.2f}"


def signed(delta) -> str:
    """A change in percentage points as replies write it: '+10', '-20', '0'."""
    return f"{int(round(float(delta))):+d}" if round(float(delta)) else "0"


# One line each, labels tolerant of case, markdown emphasis and quotes; the value follows the ':' (or '=').
# No two neighbouring parts can match the same characters, so a match costs time linear in the line.
LINE = re.IGNORECASE | re.MULTILINE
LABOR_LINE = re.compile(r'^[ \t>*_`{"\']*labou?r["\' \t*_`]*[:=](.*)', LINE)
DELTAS_LINE = re.compile(r"^[ \t>*_`]*deltas?[ \t*_`]*:(.*)", LINE)
STAND_LINE = re.compile(r"^[ \t>*_`]*stand[ \t*_`]*:(.*)", LINE)
VOTE_LINE = re.compile(r"^[ \t>*_`]*vote[ \t*_`]*:(.*)", LINE)
SATISFIED_LINE = re.compile(r"^[ \t>*_`]*satisfied[ \t*_`]*:(.*)", LINE)
HOURS_PLACES = 24  # the most decimals of hours a reply may write
# plain decimals: no '4,5', no '4e9'
HOURS = re.compile(rf"-?(?:[0-9]{{1,12}}(?:\.[0-9]{{0,{HOURS_PLACES}}})?|\.[0-9]{{1,{HOURS_PLACES}}})")
MAX_JSON_CHARS, MAX_JSON_DEPTH = 4096, 8  # a JSON reply is read only when this small and flat


def labor_value(body: str) -> str | None:
    """The hours after 'LABOR:' as written ('**40** hours.' -> '40'), or None when they are not one plain number."""
    value = body.lstrip(" \t*_`\"'").rstrip(" \t*_`\"'},.").lower()
    for unit in ("hours", "hour", "h"):
        if value.endswith(unit):
            value = value.removesuffix(unit).rstrip(" \t")
            break
    return value if HOURS.fullmatch(value) else None


def vote_value(body: str) -> int | None:
    """The candidate number after 'VOTE:' ('Candidate #2.' -> 2), or None when it is not one small number."""
    value = body.strip(" \t*_`.").lower().removeprefix("candidate").strip(" \t").removeprefix("#").strip(" \t")
    return int(value) if re.fullmatch(r"[0-9]{1,4}", value) else None


def json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in `text` read as JSON (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def json_object(text: str) -> dict | None:
    """`text` as a small, shallow JSON object, else None: bounded in size, depth and digits, so that no reply
    can exhaust the recursion limit or Python's limit on the digits of an integer."""
    if not text.startswith("{") or len(text) > MAX_JSON_CHARS or json_depth(text) > MAX_JSON_DEPTH:
        return None
    try:
        data = json.loads(text, parse_int=lambda digits: float(digits), parse_constant=lambda name: float("nan"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- the canonical replies, shared by the grammars and the renderer ------------------------------

LABOR_PREFIX, DELTAS_PREFIX = "LABOR: ", "DELTAS: "
STAND_PREFIX, VOTE_PREFIX = "\nSTAND: ", "\nVOTE: "  # the democratic second line
SATISFIED_PREFIX, SATISFIED_ANSWERS = "\nSATISFIED: ", ("YES", "NO")  # persona scaling: the last line
DECLINE = "NO"  # STAND: NO
SEPARATOR = ", "  # between the changes of a DELTAS or STAND line


def hours_text(hours: float) -> str:
    """Hours as replies write them: plain decimals, the shortest that reads back exactly ('40', '37.25'),
    at most HOURS_PLACES decimals."""
    return np.format_float_positional(float(hours) + 0.0, precision=HOURS_PLACES, unique=True, trim="-")


REPLY_PLACES = 2  # decimals of hours in the reply grammar: more is noise, and 24 digits would not fit a reply's tokens


def hours_grammar() -> Node:
    """Hours from 0 to MAX_LABOR, written plainly with up to REPLY_PLACES decimals ('40', '37.25', '100.0'): a
    part of what the parser reads (up to HOURS_PLACES), short enough that a STAND or VOTE line still fits."""
    top = int(MAX_LABOR)
    # (alternatives rather than optional(...) of a lone character class: llguidance's GBNF reader misreads
    # '([0-9]{1,24})?')
    below = integer(0, top - 1)
    return alt(
        below, seq(below, ".", chars(DIGITS, 1, REPLY_PLACES)), str(top), seq(f"{top}.", chars("0", 1, REPLY_PLACES))
    )


def example_changes(brackets: int) -> str:
    """The prompts' example line of changes ('+10, 0, -10, +20, -20, +10, ...')."""
    return SEPARATOR.join(signed((10, 0, -10, 20, -20)[i % 5]) for i in range(brackets))


def planner_moves(rate: float) -> tuple[int, ...]:
    """The planner's changes of a bracket at `rate` that keep it within [0, 100]: one per resulting rate,
    the smallest where several reach the same bound (at 0%: 0, +10, +20; at 5%: -10, 0, +10, +20)."""
    reached: dict[float, int] = {}
    for delta in sorted(PLANNER_DELTAS, key=abs):
        reached.setdefault(float(np.clip(rate + delta, 0.0, 100.0)), delta)
    return tuple(d for d in PLANNER_DELTAS if d in reached.values())


def planner_move(rate: float, target: float) -> int | None:
    """The change in `planner_moves(rate)` that gives `target`, else None."""
    return next((d for d in planner_moves(rate) if np.isclose(np.clip(rate + d, 0.0, 100.0), target)), None)


def changes_grammar(options: list[tuple[int, ...]]) -> Node:
    """One change per bracket, in order, from each bracket's options ('+10, 0, -20')."""
    parts: list[Node | str] = []
    for k, deltas in enumerate(options):
        parts += [SEPARATOR] * (k > 0) + [one_of(signed(d) for d in deltas)]
    return seq(*parts)


@lru_cache(maxsize=64)
def worker_grammar(phase: int, brackets: int, candidates: int, satisfied: bool = False) -> Grammar:
    """`LABOR: <hours>`; on a stand step also `STAND: <a change per bracket>` or `STAND: NO`; on a vote step
    with candidates also `VOTE: <1 to candidates>`; with persona scaling a last `SATISFIED: YES|NO` line."""
    reply = seq(LABOR_PREFIX, hours_grammar())
    if phase == STAND:
        reply = seq(reply, STAND_PREFIX, alt(changes_grammar([PLANNER_DELTAS] * brackets), DECLINE))
    elif phase == VOTE and candidates:
        reply = seq(reply, VOTE_PREFIX, integer(1, candidates))
    if satisfied:
        reply = seq(reply, SATISFIED_PREFIX, one_of(SATISFIED_ANSWERS))
    return Grammar(reply)


@lru_cache(maxsize=256)
def planner_grammar(rates: tuple[float, ...]) -> Grammar:
    """`DELTAS: <a change per bracket>`, each one of `planner_moves` of that bracket's rate."""
    return Grammar(seq(DELTAS_PREFIX, changes_grammar([planner_moves(r) for r in rates])))


def rates_text(rates) -> str:
    return "[" + ", ".join(f"{r:.0f}%" for r in rates) + "]"


def planner_feedback(obs: dict) -> list[str]:
    """The in-context planner's feedback (as in the paper): what its last change did to welfare, and the best
    schedule so far. The period under the current rates is still running at a decision step; its welfare is
    `period_swf`, the one before it is `periods[0]`."""
    if int(obs["step"]) == 0 or int(obs["periods_len"]) == 0:
        return []
    now, rates = float(obs["period_swf"][0]), np.asarray(obs["rates"], dtype=np.float64)
    before = obs["periods"][0]
    change = SEPARATOR.join(signed(d) for d in rates - before[:-1])
    verb = "raised" if now > before[-1] else "lowered" if now < before[-1] else "did not change"
    lines = [f"Your last change ({change}) {verb} welfare per step from {before[-1]:.3f} to {now:.3f}."]
    past = [(float(row[-1]), row[:-1]) for row in obs["periods"][: int(obs["periods_len"])]]
    best_swf, best_rates = max([(now, rates), *past], key=lambda item: item[0])
    lines.append(f"Best so far: rates {rates_text(best_rates)} gave welfare {best_swf:.3f} per step.")
    return lines


def worker_feedback(obs: dict) -> list[str]:
    """A worker's feedback on its own last change of hours (the paper's 'increasing labor decreased utility'):
    from the two most recent steps of its history."""
    if int(obs["history_len"]) < 2:
        return []
    hours, _, _, _, u = obs["history"][0:5]
    previous_hours, _, _, _, previous_u = obs["history"][5:10]
    if round(float(hours)) == round(float(previous_hours)):
        return []
    more = "more" if hours > previous_hours else "fewer"
    verb = "raised" if u > previous_u else "lowered" if u < previous_u else "did not change"
    return [f"Working {abs(hours - previous_hours):.0f} {more} hours than the step before {verb} your utility."]


class EconomyText:
    """Prompts, parsing and rendering of replies for the economy world."""

    def _schedule_lines(self, cutoffs, rates) -> list[str]:
        uppers = [*cutoffs[1:], None]
        return [
            f"  {money(lo)} to {money(hi)}: {r:.0f}%" if hi is not None else f"  above {money(lo)}: {r:.0f}%"
            for lo, hi, r in zip(cutoffs, uppers, rates)
        ]

    def prompt(self, agent: str, observation: dict) -> str:
        return self._planner_prompt(observation) if agent == PLANNER else self._worker_prompt(observation)

    def _worker_prompt(self, obs: dict) -> str:
        c, delta, _ = (float(x) for x in obs["utility_params"])
        # Fixed instructions and the (episode-wide) schedule first: prompts of one batch share that prefix.
        lines = [
            "You are a worker in a simulated economy. Each step you choose how many hours to work, from 0 to 100.",
            "Your income is your hourly wage times your hours. Income is taxed by brackets (marginal rates below),",
            "and all tax collected is shared equally among all workers as a rebate.",
            f"Your utility = income - tax + rebate - {c:g} * hours^{delta:g}. Long hours get very tiring.",
            "Choose the hours that give you the highest utility.",
            "Tax brackets (the rate applies to the part of income inside each bracket):",
            *self._schedule_lines(obs["cutoffs"], obs["rates"]),
            "Reply with one line: LABOR: <hours>",
            "",
        ]
        age, job, household, attitude = (PERSONAS[k][int(i)] for k, i in zip(PERSONAS, obs["persona"]))
        lines.append(f"About you: age {age}, {job}, {household}; {attitude}.")
        lines.append(f"Your hourly wage: {money(float(obs['skill']))}.")
        lines.append(f"This is step {int(obs['step']) + 1} of {self.config.steps}.")
        for k in range(int(obs["history_len"])):
            hours, income, paid, rebate, u = obs["history"][5 * k : 5 * k + 5]
            when = "Last step" if k == 0 else f"{k + 1} steps ago"
            lines.append(
                f"{when}: you worked {hours:.0f} h, earned {money(income)}, paid {money(paid)} tax, "
                f"got a {money(rebate)} rebate; utility {u:,.0f}."
            )
        lines.extend(worker_feedback(obs))
        lines.extend(self._election_lines(obs))
        if self.config.persona_scaling:
            lines.append(
                "Then a last line: as the person described above, are you satisfied with the current tax policy? "
                "SATISFIED: YES or SATISFIED: NO"
            )
        return "\n".join(lines)

    def _standing(self, obs: dict) -> np.ndarray:
        return np.flatnonzero(obs["candidates"])

    def _election_lines(self, obs: dict) -> list[str]:
        """The closing lines: the reply format, with the election's stand/vote line in democratic mode."""
        labor = "Reply now with one line, hours from 0 to 100: LABOR: <hours>"  # small models follow the last line best
        phase = int(obs.get("phase", WORK))
        b = len(obs["rates"])
        if phase == STAND:
            return [
                "Election: next step the workers vote on how to change each bracket's rate by -20, -10, 0, +10 or "
                "+20 points.",
                f"You may stand as a candidate with a platform of {b} change{'s' if b > 1 else ''}, one per "
                "bracket in order, or decline.",
                "Reply now with two lines, hours from 0 to 100 and your platform or NO:",
                "LABOR: <hours>",
                f"{STAND_PREFIX.lstrip()}{example_changes(b)}   (or {STAND_PREFIX.lstrip()}{DECLINE})",
            ]
        standing = self._standing(obs) if phase == VOTE else []
        if len(standing) == 0:
            return [labor]
        lines = ["Election: the candidate with the most votes changes each bracket's rate by its platform (points):"]
        for k, c in enumerate(standing):
            lines.append(f"  Candidate {k + 1}: " + ", ".join(signed(d) for d in platform_deltas(obs["platforms"][c])))
        lines += [
            f"Reply now with two lines, hours from 0 to 100 and the candidate you vote for (1-{len(standing)}):",
            "LABOR: <hours>",
            "VOTE: <candidate number>",
        ]
        return lines

    def _planner_prompt(self, obs: dict) -> str:
        n, k = self.config.num_workers, self.config.tax_period
        welfare = (
            "the sum over workers of utility divided by income (it weighs low incomes most)"
            if self.config.welfare == "inverse_income"
            else "the sum of the workers' utilities"
        )
        b = len(obs["rates"])
        lines = [
            f"You are the tax planner of an economy of {n} workers. Every {k} steps you change the marginal tax rate",
            f"of each income bracket by one of {', '.join(f'{d:+d}' if d else '0' for d in PLANNER_DELTAS)} "
            "percentage points (rates stay within 0-100%).",
            "Workers choose their hours in response. All tax collected is returned to the workers in equal shares.",
            f"Your goal: maximise social welfare, {welfare}.",
            f"Reply with one line with {b} change{'s' if b > 1 else ''}, one per bracket in order, e.g.:",
            DELTAS_PREFIX + example_changes(b),
            "",
            "Current brackets and rates:",
            *self._schedule_lines(obs["cutoffs"], obs["rates"]),
        ]
        incomes, labor = obs["incomes"], obs["labor"]
        if int(obs["step"]) > 0:
            p10, p50, p90 = np.percentile(incomes, [10, 50, 90])
            lines.append(
                f"Last step: mean income {money(incomes.mean())} (10th/50th/90th percentile "
                f"{money(p10)}/{money(p50)}/{money(p90)}), "
                f"mean hours {labor.mean():.1f}."
            )
            lines.append(f"Social welfare per step since your last decision: {float(obs['period_swf'][0]):.3f}.")
        for j in range(int(obs["periods_len"])):
            row = obs["periods"][j]
            rates = ", ".join(f"{r:.0f}%" for r in row[:-1])
            lines.append(f"Period {j + 1} back: rates [{rates}] gave welfare {row[-1]:.3f} per step.")
        lines.extend(planner_feedback(obs))
        lines.append(f"Reply now with one line of {b} changes, each -20, -10, 0, +10 or +20: DELTAS: <changes>")
        return "\n".join(lines)

    def parse(self, agent: str, text: str):
        text = check_reply(text)
        return self._parse_deltas(text) if agent == PLANNER else self._parse_worker(text)

    def _parse_worker(self, text: str):
        """Labor; in democratic mode also the STAND line (stand step) or the VOTE line (vote step with candidates);
        with persona scaling also the SATISFIED line."""
        hours = self._parse_labor(text)
        satisfied = {"satisfied": self._parse_satisfied(text)} if self.config.persona_scaling else {}
        if not self.config.democratic:
            return {"labor": hours, **satisfied} if satisfied else hours
        action = {
            "labor": hours,
            "stand": 0,
            "platform": np.zeros(len(self.cutoffs), dtype=np.int64),
            "vote": -1,
            **satisfied,
        }
        phase = self.phase()
        if phase == STAND:
            bodies = {body.strip().strip("*_`[]() .") for body in set(STAND_LINE.findall(text))}
            if len(bodies) != 1:
                raise ParseError(
                    "give exactly one 'STAND:' line: your platform, e.g. 'STAND: "
                    + ", ".join(["0"] * len(self.cutoffs))
                    + "', or 'STAND: NO'"
                )
            body = bodies.pop()
            if body.lower() not in ("no", "none", "decline"):
                deltas = self._delta_tokens(body, "STAND")
                action.update(stand=1, platform=np.array([PLANNER_DELTAS.index(d) for d in deltas], dtype=np.int64))
        elif phase == VOTE and len(standing := np.flatnonzero(self.candidates)):
            found = {vote_value(body) for body in set(VOTE_LINE.findall(text))}
            if len(found) != 1 or None in found:
                raise ParseError(
                    f"give exactly one 'VOTE: <candidate number>' line, a number from 1 to {len(standing)}"
                )
            k = found.pop()
            if not 1 <= k <= len(standing):
                raise ParseError(f"there are {len(standing)} candidates; vote with a number from 1 to {len(standing)}")
            action["vote"] = int(standing[k - 1])
        return action

    def _parse_satisfied(self, text: str) -> int:
        """`SATISFIED: YES` -> 1, `SATISFIED: NO` -> 0 (case, markdown and a closing '.' tolerated)."""
        found = {body.strip(" \t*_`'\".").lower() for body in set(SATISFIED_LINE.findall(text))}
        if len(found) != 1 or not found <= {"yes", "no"}:
            raise ParseError("end with exactly one line 'SATISFIED: YES' or 'SATISFIED: NO'")
        return int(found.pop() == "yes")

    def _parse_labor(self, text: str) -> np.ndarray:
        """`LABOR: 40` (or the paper's JSON `{"LABOR": 40}`): one number of hours in [0, 100].

        Tolerated: case, 'LABOUR', markdown emphasis, quotes, 'h'/'hours', a closing '.', the same value twice.
        Not guessed: no line with a plain number ('4,5', '1,,0', '4e9', 'forty'), two different values.
        """
        data = json_object(text.strip())
        if data is not None:
            values = [v for k, v in data.items() if str(k).strip().lower() in ("labor", "labour")]
            if len(values) == 1 and isinstance(values[0], float):
                return self._hours(str(values[0]))
        found = [labor_value(body) for body in dict.fromkeys(LABOR_LINE.findall(text))]
        numbers = [f for f in found if f is not None]
        if not numbers:
            raise ParseError("no 'LABOR: <hours>' line with a plain number of hours; reply e.g. 'LABOR: 40'")
        if len({float(f) for f in numbers}) > 1:
            raise ParseError("more than one different LABOR value; give exactly one")
        return self._hours(numbers[0])

    def _hours(self, raw: str) -> np.ndarray:
        hours = float(raw)
        if not np.isfinite(hours) or not 0 <= hours <= MAX_LABOR:
            raise ParseError(
                f"{raw[:12]} hours is not possible: LABOR must be hours from 0 to 100 (a step has 100 hours at "
                "most); reply e.g. 'LABOR: 45'"
            )
        return np.array(hours)

    def _parse_deltas(self, text: str) -> np.ndarray:
        """`DELTAS: +10, 0, -10, ...`: one change per bracket from {−20, −10, 0, +10, +20} -> the new rates.

        Tolerated: markdown emphasis, brackets, '%' signs, Unicode minus and dashes (models write '–10')."""
        bodies = {body.strip().strip("*_`[]() .") for body in set(DELTAS_LINE.findall(text))}
        b = len(self.cutoffs)
        example = "DELTAS: " + ", ".join(["0"] * b)
        if not bodies:
            raise ParseError(f"no 'DELTAS:' line; reply e.g. '{example}'")
        if len(bodies) > 1:
            raise ParseError("more than one different DELTAS line; give exactly one")
        deltas = self._delta_tokens(bodies.pop(), "DELTAS")
        return np.clip(self.rates + np.array(deltas, dtype=np.float64), 0.0, 100.0)

    def _delta_tokens(self, body: str, keyword: str) -> list[int]:
        """One legal change per bracket from a line's body ('+10, 0, -10')."""
        b = len(self.cutoffs)
        example = f"{keyword}: " + ", ".join(["0"] * b)
        tokens = [t for t in re.split(r"[\s,;]+", re.sub("[\u2212\u2013\u2014]", "-", body)) if t]  # −, –, — as minus
        if len(tokens) != b:
            raise ParseError(
                f"give exactly {b} change{'s' if b > 1 else ''} (one per bracket), got {len(tokens)}; e.g. '{example}'"
            )
        deltas = []
        for token in tokens:
            clean = token.rstrip("%")
            if not re.fullmatch(r"[+-]?[0-9]{1,3}", clean) or int(clean) not in PLANNER_DELTAS:
                raise ParseError(f"'{token[:10]}' is not a legal change; each must be one of -20, -10, 0, +10, +20")
            deltas.append(int(clean))
        return deltas

    def reply_grammar(self, agent: str, observation=None) -> Grammar:
        """The language of `agent`'s legal replies now: a worker's by the step's phase, the bracket count
        and the standing candidates; the planner's by the current rates (see `worker_grammar`, `planner_grammar`)."""
        if agent == PLANNER:
            return planner_grammar(tuple(float(r) for r in self.rates))
        return worker_grammar(
            self.phase(), len(self.cutoffs), int(np.count_nonzero(self.candidates)), self.config.persona_scaling
        )

    def render_action(self, agent: str, action) -> str:
        if agent != PLANNER:
            text = LABOR_PREFIX + hours_text(action_labor(action))
            phase = self.phase()
            if phase == STAND:
                stand = action_field(action, "stand", 0) == 1
                platform = platform_deltas(action["platform"]) if stand else []
                text += STAND_PREFIX + (SEPARATOR.join(signed(d) for d in platform) if stand else DECLINE)
            elif phase == VOTE and self.candidates.any():
                standing, vote = np.flatnonzero(self.candidates).tolist(), action_field(action, "vote", -1)
                text += VOTE_PREFIX + (str(standing.index(vote) + 1) if vote in standing else "(none)")
            if self.config.persona_scaling:
                text += SATISFIED_PREFIX + SATISFIED_ANSWERS[action_field(action, "satisfied", 1) != 1]
            return text
        rates = np.asarray(action, dtype=np.float64).reshape(-1)
        moves = [planner_move(r, t) for r, t in zip(self.rates, rates)] if rates.shape == self.rates.shape else [None]
        if None not in moves:
            return DELTAS_PREFIX + SEPARATOR.join(signed(d) for d in moves)
        return "RATES: " + ", ".join(f"{r:.2f}" for r in rates)  # a scripted baseline setting rates directly

    def fallback_action(self, agent: str, rng: np.random.Generator) -> np.ndarray:
        """Workers: uniform hours in [0, 100], in hundredths (as the reply grammar writes them; democratic:
        decline to stand; vote for a uniform candidate; persona scaling: satisfied or not with even odds); the planner:
        a uniform legal change per bracket."""
        if agent == PLANNER:
            return np.clip(self.rates + rng.choice(PLANNER_DELTAS, size=len(self.cutoffs)), 0.0, 100.0)
        hours = np.array(round(float(rng.uniform(0.0, MAX_LABOR)), REPLY_PLACES))
        satisfied = {"satisfied": int(rng.integers(2))} if self.config.persona_scaling else {}
        if not self.config.democratic:
            return {"labor": hours, **satisfied} if satisfied else hours
        standing = np.flatnonzero(self.candidates)
        vote = int(rng.choice(standing)) if self.phase() == VOTE and len(standing) else -1
        platform = np.zeros(len(self.cutoffs), dtype=np.int64)
        return {"labor": hours, "stand": 0, "platform": platform, "vote": vote, **satisfied}
