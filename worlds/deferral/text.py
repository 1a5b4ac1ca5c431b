"""The deferral world's text interface: team and expert prompts, the worked example, the reply
grammar and the strict reply parser.

The canonical replies (`ANSWER: <answer>` in round 0; `EVAL <agent>`, `CREATE <answer>` or `DEFER`
later; the expert's `ANSWER: <answer>` with an optional `EXPLANATION: <text>` line) are defined once
below: `reply_grammar` builds the language of a legal reply from them, `render_action` writes them,
and `parse` reads a reply in that language by its structure first (so free text inside an answer or
an explanation, e.g. 'DEFER' or 'EVAL 0', is never taken for a command), other replies tolerantly.

`DeferralText` is a mixin of `raw_env` (worlds/deferral/world.py); it reads the env's `config`,
`team`, `round` and `problem`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np

from agora.grammar import DIGITS, Grammar, Node, alt, chars, one_of, optional, seq, text
from agora.world import ParseError, cached_per_agent, check_reply, sanitize
from worlds.deferral.rules import (
    ACTION_NAMES,
    CREATE,
    DEFER,
    EVAL,
    EXPERT,
    EXPLAINS,
    MAX_ANSWER_CHARS,
    MAX_EXPLANATION_CHARS,
    NUMBER,
    is_numeric,
    normalize_answer,
)

ANSWER_LABEL = re.compile(r"\banswer\b\s*(?:is\s*|=\s*|:\s*)+|final answer\s*[:=]?", re.IGNORECASE)
EXPLANATION_LABEL = re.compile(r"\bexplanation\s*:", re.IGNORECASE)
ACTION_WORD = re.compile(r"\b(eval|evaluate|adopt|create|defer)\b", re.IGNORECASE)
PLAIN_TEXT = re.compile(r"[\x20-\x7e\t\n\r]*")  # printable ASCII and line breaks
MAX_UNLABELLED_CHARS = 2_000  # an answer without a label is a short reply ('42', 'The total is 42 apples.')
ACTION_ALIASES = {"eval": EVAL, "evaluate": EVAL, "adopt": EVAL, "create": CREATE, "defer": DEFER}
# The agent an EVAL names: 'EVAL 2', 'eval agent 2', '**Eval: agent_1**'. No two neighbouring parts match the same
# characters (linear time); no '-' before the number ('EVAL -1' names no agent).
# Its tail is what follows the number when that is no agent number: a letter ('EVAL 2nd') or a fraction ('EVAL
# 1.9', 'EVAL 1,5', 'EVAL 1/2'). One regex pass finds them all (no Python loop per EVAL).
EVAL_REF = re.compile(
    r"\b(?:eval|evaluate|adopt)\b[\s:*_`#(\[]*(?:(?:agent|player)[\s_#:-]*)?([0-9]+)([^\W_]|[.,/][0-9])?", re.IGNORECASE
)

# --- the canonical replies, shared by the grammar, the renderer and the parser --------------------

ANSWER_PREFIX = "ANSWER: "
EXPLANATION_PREFIX = "\nEXPLANATION: "  # the expert's optional second line
EVAL_PREFIX, CREATE_PREFIX, DEFER_REPLY = "EVAL ", "CREATE ", "DEFER"
WHOLE_DIGITS, FRACTION_DIGITS = 12, 6  # a numeric answer's digits before and after its '.' or '/'
ANSWER_TOKENS, EXPLANATION_TOKENS = 24, 80  # the local sampler's bounds on the free-text parts
ALPHANUMERIC = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def answer_grammar(numeric: bool) -> Node:
    """An answer as a canonical reply writes it. Numeric problems: one plain number ('-12', '12.5', '1/3').
    Others: one line of free text that starts with a letter or digit (so it never normalises to nothing),
    at most MAX_ANSWER_CHARS characters."""
    if numeric:
        # (alternatives rather than optional(chars(...)): llguidance's GBNF reader misreads '([0-9]{1,5})?')
        denominator = alt(chars(DIGITS[1:]), seq(chars(DIGITS[1:]), chars(DIGITS, 1, FRACTION_DIGITS - 1)))
        tail = alt(seq(".", chars(DIGITS, 1, FRACTION_DIGITS)), seq("/", denominator))
        return seq(optional("-"), chars(DIGITS, 1, WHOLE_DIGITS), optional(tail))
    first = chars(ALPHANUMERIC)
    return alt(first, seq(first, text(MAX_ANSWER_CHARS - 1, ANSWER_TOKENS)))


@lru_cache(maxsize=256)
def team_grammar(first_round: bool, me: int, team_size: int, numeric: bool) -> Grammar:
    """Round 0: `ANSWER: <answer>` (an empty answer, how the fallback writes 'no answer', included).
    Later rounds: `EVAL <another agent of the team>`, `CREATE <answer>` or `DEFER`."""
    answer = answer_grammar(numeric)
    if first_round:
        return Grammar(seq(ANSWER_PREFIX, optional(answer)))
    others = one_of(i for i in range(team_size) if i != me)
    return Grammar(alt(seq(EVAL_PREFIX, others), seq(CREATE_PREFIX, answer), DEFER_REPLY))


@lru_cache(maxsize=4)
def expert_grammar(numeric: bool) -> Grammar:
    """`ANSWER: <answer>` (possibly empty), then optionally `EXPLANATION: <free text>` on a second line."""
    explanation = seq(EXPLANATION_PREFIX, text(MAX_EXPLANATION_CHARS, EXPLANATION_TOKENS))
    return Grammar(seq(ANSWER_PREFIX, optional(answer_grammar(numeric)), optional(explanation)))


class DeferralText:
    """Prompts, demonstrations, parsing and rendering of replies for the deferral world."""

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
                f"Reply with '{ANSWER_PREFIX}<your answer>' on the first line. You may add a short explanation for "
                f"the team on a second line: '{EXPLANATION_PREFIX.strip()}<explanation>'.",
                "",
                f"Question: {observation['question']}",
            ]
            if observation["note"]:
                lines.append(f"What you know (the team does not): {observation['note']}")
            shown = [f"  agent {i}: {a}" for i, a in enumerate(answers) if a]
            lines += ["The team's answers so far:", *shown] if shown else ["The team has no answers yet."]
            answer, why = (
                ("42", "40 + 2 = 42") if is_numeric(observation["reference"]) else ("Paris", "it is the capital")
            )
            example = f"{ANSWER_PREFIX}{answer}{EXPLANATION_PREFIX}{why}"
            lines += [f"Round {int(observation['round']) + 1} of {c.rounds}.", "", "Example reply:", example]
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
        answer_obs = {
            "round": 0,
            "self": me,
            "question": "What is 12 + 30?",
            "answers": ("",) * n,
            "from_expert": [0] * n,
            "history": "",
        }
        disagree = tuple(str(20 + 7 * i) for i in range(n))
        decide_obs = {
            "round": 1,
            "self": me,
            "question": "How many employees does Ulmont Labs have?",
            "answers": disagree,
            "from_expert": [0] * n,
            "history": "",
        }
        answer_turn = [
            {"role": "user", "content": self.prompt(agent, answer_obs)},
            {"role": "assistant", "content": f"{ANSWER_PREFIX}42"},
        ]
        if self.config.rounds == 1:  # no decision rounds to show
            return answer_turn
        return [
            *answer_turn,
            {"role": "user", "content": self.prompt(agent, decide_obs)},
            {"role": "assistant", "content": DEFER_REPLY},
        ]

    def extract_answer(self, text: str) -> str:
        """The answer in `text`. With an 'ANSWER:' / 'answer is' label: the first non-empty line after it,
        and on that line what follows the last '=' ('ANSWER: 12 x 4 = 48' -> 48), its first number for
        numeric problems. Without a label: exactly one number for numeric problems, else the first line, and
        only from plain text (a digit in binary noise is no answer). A bare 'ANSWER:' is no answer ('')."""
        labelled = ANSWER_LABEL.search(text)
        if not labelled and (len(text) > MAX_UNLABELLED_CHARS or not PLAIN_TEXT.fullmatch(text)):
            raise ParseError("without an 'ANSWER:' label, reply with a short plain answer; e.g. 'ANSWER: 42'")
        body = re.sub(r"[*_`]", " ", text[labelled.end() :] if labelled else text).strip()
        if labelled and not body and not text[: labelled.start()].strip():
            return ""  # a bare 'ANSWER:' gives no answer (how the fallback of round 0 and of the expert is written)
        if labelled:
            body = body.split("\n", 1)[0].rsplit("=", 1)[-1]  # `body` is stripped: its first line is not empty
        if self.numeric():
            first = NUMBER.search(body)  # labelled: the first number is the answer
            numbers = list(dict.fromkeys(NUMBER.findall(body))) if not labelled else [first.group(0)] if first else []
            if any(len(x) > MAX_ANSWER_CHARS for x in numbers):
                raise ParseError(f"a number longer than {MAX_ANSWER_CHARS} characters is no answer here")
            values = list(dict.fromkeys(normalize_answer(x) for x in numbers))
            if not values:
                raise ParseError("no number in your answer; reply e.g. 'ANSWER: 42'")
            if len(values) > 1 and not labelled:
                raise ParseError(
                    f"several numbers ({', '.join(values[:4])}); give exactly one, e.g. 'ANSWER: {values[0]}'"
                )
            return values[0]
        answer = normalize_answer(body.split("\n", 1)[0])
        if not answer:
            raise ParseError("empty answer; reply e.g. 'ANSWER: <your answer>'")
        return answer

    def parse(self, agent: str, text: str) -> dict[str, Any]:
        """Team, round 0: an answer ('ANSWER: 42', 'The answer is 42.', '42').
        Team, later rounds: exactly one of EVAL <agent> ('EVAL 2', 'eval agent_2'), CREATE <answer>, DEFER.
        Expert: 'ANSWER: <answer>' + 'EXPLANATION: ...' (the form asked), or '<answer>[; explanation]'.
        A reply in `reply_grammar`'s language is read by its structure (`read_canonical`); others tolerantly:
        case, markdown emphasis, labels and filler words. Not guessed: two different actions, EVAL of
        oneself or of no agent, a missing or ambiguous answer.
        """
        text = check_reply(text)
        if not text.strip():
            raise ParseError("empty reply")
        canonical = self.read_canonical(agent, text)
        if canonical is not None:
            return canonical
        if agent == EXPERT:
            return self._parse_expert(text)
        me = self.team.index(agent)
        if self.round == 0:
            if any(ACTION_ALIASES[word.lower()] != CREATE for word in set(ACTION_WORD.findall(text))):
                raise ParseError(
                    "in round 0 every agent answers on its own (no EVAL or DEFER yet); reply 'ANSWER: <your answer>'"
                )
            return {"type": CREATE, "target": 0, "answer": self.extract_answer(text)}
        kinds = {ACTION_ALIASES[word.lower()] for word in set(ACTION_WORD.findall(text))}
        if not kinds:
            raise ParseError(
                f"no action; reply with one of: EVAL <agent> (e.g. EVAL {(me + 1) % len(self.team)}), CREATE "
                "<answer>, DEFER"
            )
        if len(kinds) > 1:
            raise ParseError(
                "more than one action (" + ", ".join(ACTION_NAMES[k] for k in sorted(kinds)) + "); choose exactly one"
            )
        kind = kinds.pop()
        if kind == DEFER:
            return {"type": DEFER, "target": 0, "answer": ""}
        if kind == CREATE:
            rest = text[ACTION_WORD.search(text).end() :].split("\n", 1)[0]
            if not re.search(r"[^\W_]", rest):
                raise ParseError("CREATE needs your new answer on the same line, e.g. 'CREATE 42'")
            return {"type": CREATE, "target": 0, "answer": self.extract_answer(rest)}
        targets = set()
        for number, tail in set(EVAL_REF.findall(text)):
            if tail[:1] in (".", ",", "/"):
                raise ParseError(f"agents are numbered 0 to {len(self.team) - 1}; EVAL names one by its whole number")
            if tail:
                continue  # a number glued to a word ('EVAL 2nd')
            if len(number) > 6:
                raise ParseError(f"there is no agent {number[:8]}...; the agents are 0 to {len(self.team) - 1}")
            targets.add(int(number))
        if not targets:
            raise ParseError(f"EVAL needs the agent whose answer you adopt, e.g. 'EVAL {(me + 1) % len(self.team)}'")
        if len(targets) > 1:
            raise ParseError("EVAL names more than one agent; name exactly one")
        target = targets.pop()
        if target == me:
            raise ParseError(
                f"you are agent {me}: EVAL adopts another agent's answer; EVAL another agent, CREATE or DEFER"
            )
        if not 0 <= target < len(self.team):
            raise ParseError(f"there is no agent {target}; the agents are 0 to {len(self.team) - 1}")
        return {"type": EVAL, "target": target, "answer": ""}

    def _parse_expert(self, text: str) -> dict[str, str]:
        explained = EXPLANATION_LABEL.search(text)
        head = text[: explained.start()] if explained else text
        anchor = ANSWER_LABEL.search(head) or re.search(r"\S", head)  # the labelled line, else the first non-empty
        start = head.rfind("\n", 0, anchor.start()) + 1 if anchor else 0
        end = head.find("\n", start) if anchor else 0
        end = len(head) if end < 0 else end
        answer_part, _, after = head[start:end].partition(";")
        explanation = explained and text[explained.end() :] or after or head[:start] + head[end:]
        return {"answer": self.extract_answer(answer_part), "explanation": sanitize(explanation, MAX_EXPLANATION_CHARS)}

    def reply_grammar(self, agent: str, observation: Any = None) -> Grammar:
        """The language of `agent`'s legal replies now (see `team_grammar`, `expert_grammar`): the
        agents it may EVAL are the other members of this team, answers are numbers when the problem's are."""
        if agent == EXPERT:
            return expert_grammar(self.numeric())
        return team_grammar(self.round == 0, self.team.index(agent), len(self.team), self.numeric())

    def read_canonical(self, agent: str, text: str) -> dict[str, Any] | None:
        """The action a reply in `reply_grammar`'s language names, read by its structure: the keyword
        prefix, then the answer or explanation as written; None for any other reply."""
        if not self.reply_grammar(agent).matches(text):
            return None
        if agent == EXPERT:
            head, _, explanation = text.partition(EXPLANATION_PREFIX)  # the answer is one line
            answer = normalize_answer(head.removeprefix(ANSWER_PREFIX))
            return {"answer": answer, "explanation": sanitize(explanation, MAX_EXPLANATION_CHARS)}
        if text == DEFER_REPLY:
            return {"type": DEFER, "target": 0, "answer": ""}
        if text.startswith(EVAL_PREFIX):
            return {"type": EVAL, "target": int(text.removeprefix(EVAL_PREFIX)), "answer": ""}
        answer = text.removeprefix(CREATE_PREFIX if self.round else ANSWER_PREFIX)
        return {"type": CREATE, "target": 0, "answer": normalize_answer(answer)}

    def render_action(self, agent: str, action: dict[str, Any]) -> str:
        if agent == EXPERT:
            explanation = action.get("explanation", "")
            return f"{ANSWER_PREFIX}{action['answer']}" + (f"{EXPLANATION_PREFIX}{explanation}" if explanation else "")
        kind = int(action["type"])
        if self.round == 0:
            return f"{ANSWER_PREFIX}{action['answer']}"
        if kind == EVAL:
            return f"{EVAL_PREFIX}{int(action['target'])}"
        return f"{CREATE_PREFIX}{action['answer']}" if kind == CREATE else DEFER_REPLY

    def fallback_action(self, agent: str, rng: np.random.Generator) -> dict[str, Any]:
        """Round 0 and the expert: no answer. Later rounds: EVAL of a uniformly drawn other agent (free)."""
        if agent == EXPERT:
            return {"answer": "", "explanation": ""}
        if self.round == 0:
            return {"type": CREATE, "target": 0, "answer": ""}
        me = self.team.index(agent)
        others = [i for i in range(len(self.team)) if i != me]
        return {"type": EVAL, "target": int(rng.choice(others)), "answer": ""}
