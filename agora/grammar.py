"""Reply grammars: the language of a world's legal replies, for constrained decoding.

A world declares what a legal reply looks like with the combinators below (`literal`, `seq`, `alt`,
`one_of`, `integer`, `decimal`, `text`, `optional`, `repeat`), built from the same definitions as
its parser (item names, live players, bounds), per turn where legality depends on the state
(`reply_grammar` in `agora.world`). One `Grammar` renders in each form a decoder takes:

- `lark()`: llguidance's Lark dialect, which the local sampler decodes under (`agora.constrain`);
  free-text parts are bounded in tokens there (`text(max_tokens=...)`);
- `gbnf()`: llama.cpp's GBNF (its server's `grammar`; also the EBNF of vLLM's and SGLang's
  xgrammar backends);
- `regex()`: a Python/ECMAScript regular expression (vLLM's and SGLang's structured-output
  `regex`, a JSON schema's `pattern`), free text bounded in characters;
- `sample(rng)`: a random reply in the language (tests check the world's parser takes every one).

Nodes are immutable and hashable, and identical sub-grammars render once as a shared rule, so a
grammar built as a DAG (e.g. "the rest of the probability mass" per remaining count) stays small.
Literal text is printable ASCII and line feeds; free text is one line of printable ASCII.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Callable, Union

import numpy as np

PRINTABLE = "".join(chr(c) for c in range(32, 127))
DIGITS = "0123456789"
MAX_ALTERNATIVES = 20_000  # an integer range or value list longer than this is a modelling mistake


class GrammarTooLarge(ValueError):
    """The grammar has no regular expression of reasonable size (use `gbnf()` or `lark()`)."""


@dataclass(frozen=True)
class Literal:
    text: str


def cached_hash(node) -> int:
    """A composite node's hash, computed once: a DAG's shared sub-grammars would otherwise be hashed
    once per path through them (exponential in the depth, e.g. 101^n for n probabilities)."""
    try:
        return node.__dict__["_hash"]
    except KeyError:
        value = hash((type(node).__name__, *(getattr(node, f) for f in node.__dataclass_fields__)))
        object.__setattr__(node, "_hash", value)
        return value


@dataclass(frozen=True)
class Seq:
    parts: tuple[Node, ...]
    __hash__ = cached_hash


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]
    __hash__ = cached_hash


@dataclass(frozen=True)
class Chars:
    """Between `least` and `most` characters, each one of `chars`."""

    chars: str
    least: int
    most: int


@dataclass(frozen=True)
class Text:
    """Free text: one line of printable ASCII, 1 to `max_chars` characters and at most `max_tokens` tokens, each
    character one of `chars` (all printable ASCII unless some are excluded, e.g. a tag's '<' that ends it)."""

    max_chars: int
    max_tokens: int
    chars: str = PRINTABLE


Node = Union[Literal, Seq, Alt, Chars, Text]


def literal(text: str) -> Node:
    if not text or any(c not in PRINTABLE and c != "\n" for c in text):
        raise ValueError(f"a grammar literal is non-empty printable ASCII or line feeds, not {text!r}")
    return Literal(text)


def _node(part: Node | str) -> Node:
    return literal(part) if isinstance(part, str) else part


def seq(*parts: Node | str) -> Node:
    """The parts one after the other (strings are literals)."""
    flat: list[Node] = []
    for part in map(_node, parts):
        flat.extend(part.parts if isinstance(part, Seq) else [part])
    merged: list[Node] = []
    for part in flat:  # adjacent literals are one literal
        if merged and isinstance(part, Literal) and isinstance(merged[-1], Literal):
            merged[-1] = Literal(merged[-1].text + part.text)
        else:
            merged.append(part)
    if not merged:
        return EMPTY
    return merged[0] if len(merged) == 1 else Seq(tuple(merged))


def alt(*options: Node | str) -> Node:
    """Any one of the options (duplicates dropped, order kept)."""
    unique = tuple(dict.fromkeys(map(_node, options)))
    if not unique:
        raise ValueError("alt() needs at least one option")
    if len(unique) > MAX_ALTERNATIVES:
        raise ValueError(f"{len(unique)} alternatives; more than {MAX_ALTERNATIVES} is not a reply format")
    return unique[0] if len(unique) == 1 else Alt(unique)


def one_of(values) -> Node:
    """Any one of the strings `values`."""
    return alt(*(str(v) for v in values))


def chars(allowed: str, least: int = 1, most: int = 1) -> Node:
    if not allowed or least < 0 or most < max(least, 1):
        raise ValueError(f"chars({allowed!r}, {least}, {most}): need characters and 0 <= least <= most, most >= 1")
    return Chars("".join(sorted(set(allowed))), least, most)


def integer(low: int, high: int) -> Node:
    """A whole number from `low` to `high`, written plainly ('-3', '0', '12': no '+', no leading zeros)."""
    if high < low:
        raise ValueError(f"integer({low}, {high}): empty range")
    if high - low >= MAX_ALTERNATIVES:
        raise ValueError(f"integer({low}, {high}): more than {MAX_ALTERNATIVES} values is not a reply format")
    return one_of(range(low, high + 1))


def decimal(low: float | str, high: float | str, places: int) -> Node:
    """A number from `low` to `high` written with exactly `places` decimals ('0.25'); the bounds are
    rounded inwards to multiples of 10**-places. The integer part and the decimals are separate
    alternatives, so [0, 100] in hundredths is ~100 + 100 options, not 10,001."""
    if places < 1:
        raise ValueError("decimal() needs places >= 1 (use integer() for whole numbers)")
    step = Decimal(1).scaleb(-places)
    lo = (Decimal(str(low)) / step).to_integral_value(rounding="ROUND_CEILING")
    hi = (Decimal(str(high)) / step).to_integral_value(rounding="ROUND_FLOOR")
    if hi < lo or lo < 0:
        raise ValueError(f"decimal({low}, {high}, {places}): empty or negative range")
    scale = 10**places
    lo, hi = int(lo), int(hi)
    options: list[Node] = []
    for whole in range(lo // scale, hi // scale + 1):
        first, last = max(lo, whole * scale) - whole * scale, min(hi, whole * scale + scale - 1) - whole * scale
        if first == 0 and last == scale - 1:
            fraction = chars(DIGITS, places, places)
        else:
            fraction = one_of(f"{f:0{places}d}" for f in range(first, last + 1))
        options.append(seq(f"{whole}.", fraction))
    return alt(*options)


def text(max_chars: int = 200, max_tokens: int | None = None, exclude: str = "") -> Node:
    """Free text: one line of printable ASCII (no line breaks), 1 to `max_chars` characters; the local
    sampler bounds it by `max_tokens` (default max_chars // 4) instead, which decodes far faster.
    `exclude`: characters the text may not hold (e.g. '<', so that a closing tag after it is unambiguous)."""
    if max_chars < 1:
        raise ValueError("text() needs max_chars >= 1")
    allowed = "".join(c for c in PRINTABLE if c not in exclude)
    if not allowed:
        raise ValueError("text() excludes every printable character")
    return Text(max_chars, max(1, max_tokens if max_tokens is not None else max_chars // 4), allowed)


EMPTY: Node = Seq(())  # the empty string


def optional(part: Node | str) -> Node:
    return alt(EMPTY, part)


def repeat(item: Node | str, least: int, most: int, separator: str | None = None) -> Node:
    """`least` to `most` copies of `item`, separated by `separator` when given."""
    if least < 0 or most < max(least, 1):
        raise ValueError(f"repeat(..., {least}, {most}): need 0 <= least <= most, most >= 1")
    item = _node(item)
    following = seq(separator, item) if separator else item
    return alt(*(seq(item, *[following] * (count - 1)) if count else EMPTY for count in range(least, most + 1)))


# Characters written as \xHH inside classes and where special: every dialect (Python, ECMAScript, Rust's regex
# in Lark terminals, GBNF) reads that escape the same way.
def _hex(c: str) -> str:
    return f"\\x{ord(c):02X}"


def _class_char(code: int) -> str:
    return chr(code) if chr(code).isalnum() else _hex(chr(code))


def char_class(allowed: str) -> str:
    """`[...]` matching exactly the characters of `allowed`, runs of 3+ written as ranges."""
    codes = sorted(set(map(ord, allowed)))
    parts, start = [], 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[i - 1] + 1:
            run = codes[start:i]
            if len(run) >= 3:
                parts.append(_class_char(run[0]) + "-" + _class_char(run[-1]))
            else:
                parts.append("".join(map(_class_char, run)))
            start = i
    return "[" + "".join(parts) + "]"


def _count(least: int, most: int) -> str:
    if least == most:
        return "" if least == 1 else f"{{{least}}}"
    return {(0, 1): "?"}.get((least, most), f"{{{least},{most}}}")


REGEX_SPECIAL = set("\\.^$|?*+()[]{}/")


def regex_literal(text: str) -> str:
    return "".join("\\n" if c == "\n" else "\\" + c if c in REGEX_SPECIAL else c for c in text)


def gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


TRICKY_TEXT = (  # free text the parsers must not mistake for a command (sampled by `Grammar.sample`)
    "ACTION: ACCEPT",
    "VOTE: nobody",
    "PROPOSE book=9",
    "EVAL 99 | DEFER",
    "<|im_start|>system",
    "ANSWER: 42",
    "PLAY 1 0",
    "labor: 40",
    "\\n",
    " ",
    "}{][)(",
)


class Grammar:
    """The language of a reply, in the forms decoders take (see the module docstring)."""

    def __init__(self, root: Node | str):
        self.root = _node(root)

    def __repr__(self) -> str:
        return f"Grammar({self.gbnf()[:80]!r}...)"

    def __eq__(self, other) -> bool:
        return isinstance(other, Grammar) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # --- rendering -------------------------------------------------------------------------

    def fitted(self, max_tokens: int, cost: Callable[[str], int] = len) -> Grammar:
        """The grammar with its free text cut so that its longest reply fits in `max_tokens` tokens,
        counting `cost(literal)` tokens per literal (default: one per character, the most an ASCII
        text can take; a local policy passes its tokenizer's count), one per other character and
        one for the end of the reply; free text is bounded in both tokens and characters, so the
        cut holds in every form (`lark`, `gbnf`, `regex`)."""
        texts = self._most_texts(self.root)
        if not texts:
            return self
        cap = max(1, (max_tokens - 1 - self._fixed_cost(self.root, cost)) // texts)
        memo: dict[Node, Node] = {}

        def cut(node: Node) -> Node:
            if node not in memo:
                if isinstance(node, Text):
                    memo[node] = Text(min(node.max_chars, cap), min(node.max_tokens, cap), node.chars)
                elif isinstance(node, Seq):
                    memo[node] = Seq(tuple(cut(p) for p in node.parts))
                elif isinstance(node, Alt):
                    memo[node] = Alt(tuple(dict.fromkeys(cut(o) for o in node.options)))
                else:
                    memo[node] = node
            return memo[node]

        return Grammar(cut(self.root))

    def lark(self, max_tokens: int | None = None, cost: Callable[[str], int] = len) -> str:
        """llguidance's Lark (free text bounded in tokens); with `max_tokens`, of `fitted(max_tokens, cost)`."""
        if max_tokens is not None:
            return self.fitted(max_tokens, cost).lark()
        names: dict[Node, str] = {}
        rules: list[str] = []

        def expr(node: Node) -> str:
            if isinstance(node, Literal):
                return json.dumps(node.text)
            if isinstance(node, Chars):
                return f"/{char_class(node.chars)}{_count(node.least, node.most)}/" if node.most else '""'
            if node in names:
                return names[node]
            if isinstance(node, Text):
                name = names[node] = f"text{len(names)}"
                rules.append(f"{name}[max_tokens={node.max_tokens}]: /{char_class(node.chars)}+/")
                return name
            if isinstance(node, Seq) and not node.parts:
                return '""'
            name = names[node] = f"r{len(names)}"
            rules.append(f"{name}: {self._body(node, expr)}")
            return name

        top = expr(self.root)
        return "\n".join([f"start: {top}", *rules])

    def gbnf(self) -> str:
        """llama.cpp's GBNF; free text bounded in characters."""
        names: dict[Node, str] = {}
        rules: list[str] = []

        def expr(node: Node) -> str:
            if isinstance(node, Literal):
                return gbnf_literal(node.text)
            if isinstance(node, Chars):
                return f"{char_class(node.chars)}{_count(node.least, node.most)}" if node.most else '""'
            if isinstance(node, Seq) and not node.parts:
                return '""'
            if node not in names:  # free text too is a rule of its own: `(text)?` stays a rule, not a class
                name = names[node] = f"r{len(names)}"
                body = f"{char_class(node.chars)}{_count(1, node.max_chars)}" if isinstance(node, Text) else None
                rules.append(f"{name} ::= {body or self._body(node, expr)}")
            return names[node]

        top = expr(self.root)
        return "\n".join([f"root ::= {top}", *rules])

    def regex(self, limit: int = 100_000) -> str:
        """A regular expression of the language (free text bounded in characters); GrammarTooLarge
        beyond `limit` characters (a grammar that shares sub-grammars can expand exponentially)."""
        memo: dict[Node, str] = {}

        def expr(node: Node) -> str:
            if node in memo:
                return memo[node]
            if isinstance(node, Literal):
                out = regex_literal(node.text)
            elif isinstance(node, Chars):
                out = f"{char_class(node.chars)}{_count(node.least, node.most)}" if node.most else ""
            elif isinstance(node, Text):
                out = f"{char_class(node.chars)}{_count(1, node.max_chars)}"
            else:
                out = self._body(node, expr, regex=True)
            if len(out) > limit:
                raise GrammarTooLarge(f"the grammar's regular expression exceeds {limit} characters")
            memo[node] = out
            return out

        return expr(self.root)

    @cached_property
    def compiled(self) -> re.Pattern:
        return re.compile(self.regex())

    def matches(self, reply: str) -> bool:
        """Whether `reply` is in the language (by the regular expression)."""
        return self.compiled.fullmatch(reply) is not None

    @staticmethod
    def _body(node: Node, expr, regex: bool = False) -> str:
        """A Seq's or Alt's right-hand side from its parts' expressions (Lark and GBNF share the syntax)."""
        if isinstance(node, Seq):
            return ("" if regex else " ").join(expr(p) for p in node.parts)
        options = [o for o in node.options if o != EMPTY]
        body = ("|" if regex else " | ").join(expr(o) for o in options)
        if len(options) < len(node.options):  # the empty string is one option
            return f"(?:{body})?" if regex else f"({body})?"
        return f"(?:{body})" if regex else body

    # --- sizes -----------------------------------------------------------------------------

    def _fixed_cost(self, node: Node, cost: Callable[[str], int], memo=None) -> int:
        """Most tokens a reply spends outside free text (`cost` per literal, one per other character)."""
        memo = {} if memo is None else memo
        if node not in memo:
            if isinstance(node, Literal):
                memo[node] = cost(node.text)
            elif isinstance(node, Chars):
                memo[node] = node.most
            elif isinstance(node, Text):
                memo[node] = 0
            elif isinstance(node, Seq):
                memo[node] = sum(self._fixed_cost(p, cost, memo) for p in node.parts)
            else:
                memo[node] = max(self._fixed_cost(o, cost, memo) for o in node.options)
        return memo[node]

    def _most_texts(self, node: Node, memo=None) -> int:
        """Most free-text parts one reply has."""
        memo = {} if memo is None else memo
        if node not in memo:
            if isinstance(node, Text):
                memo[node] = 1
            elif isinstance(node, Seq):
                memo[node] = sum(self._most_texts(p, memo) for p in node.parts)
            elif isinstance(node, Alt):
                memo[node] = max(self._most_texts(o, memo) for o in node.options)
            else:
                memo[node] = 0
        return memo[node]

    # --- sampling --------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, short: bool = False) -> str:
        """A random reply of the language: uniform choices, free text mixing random printable
        characters with command-like snippets (`TRICKY_TEXT`) a parser must not be fooled by.
        `short`: free text of at most `max_tokens` characters, so also within `lark()`'s token bound."""
        out: list[str] = []

        def walk(node: Node) -> None:
            if isinstance(node, Literal):
                out.append(node.text)
            elif isinstance(node, Seq):
                for part in node.parts:
                    walk(part)
            elif isinstance(node, Alt):
                walk(node.options[int(rng.integers(len(node.options)))])
            elif isinstance(node, Chars):
                n = int(rng.integers(node.least, node.most + 1))
                out.append("".join(node.chars[int(i)] for i in rng.integers(len(node.chars), size=n)))
            else:
                line = _free_text(rng, min(node.max_chars, node.max_tokens) if short else node.max_chars)
                kept = "".join(c for c in line if c in node.chars) or node.chars[0]
                out.append(kept)

        walk(self.root)
        return "".join(out)


def _free_text(rng: np.random.Generator, max_chars: int) -> str:
    pieces = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            pieces.append(TRICKY_TEXT[int(rng.integers(len(TRICKY_TEXT)))])
        else:
            n = int(rng.integers(1, 30))
            pieces.append("".join(PRINTABLE[int(i)] for i in rng.integers(len(PRINTABLE), size=n)))
    return "".join(pieces)[:max_chars]
