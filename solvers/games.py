"""Small two-player zero-sum extensive-form games as explicit game trees: Kuhn and Leduc poker.

A game is built once into a tree of `Node`s; solvers (solvers/cfr.py) walk the tree. Action ids
and chance outcomes follow OpenSpiel's `kuhn_poker` / `leduc_poker` (so policies can be compared
with OpenSpiel's), and information-set keys are readable strings (private card(s) + public history).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHANCE, TERMINAL = -1, -2


@dataclass
class Node:
    """A history. `player` is 0/1 (a decision), CHANCE or TERMINAL.

    Decisions: `infoset` key, `actions` (ids) aligned with `children`. Chance: `actions` are the
    outcomes, `probs` their probabilities. Terminal: `utility` is player 0's payoff (player 1 gets −utility).
    """

    player: int
    infoset: str = ""
    actions: list[int] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    utility: float = 0.0


@dataclass
class Game:
    name: str
    root: Node
    action_names: dict[int, str]

    def infosets(self) -> dict[str, tuple[int, list[int]]]:
        """Every information set: key -> (player, legal action ids)."""
        found: dict[str, tuple[int, list[int]]] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.player >= 0:
                found.setdefault(node.infoset, (node.player, node.actions))
            stack.extend(node.children)
        return found


# --- Kuhn poker -------------------------------------------------------------------------------
# Cards J=0, Q=1, K=2; ante 1; actions pass=0, bet=1 (bet size 1). Histories: pp, pbp, pbb, bp, bb.

KUHN_PASS, KUHN_BET = 0, 1


def kuhn_poker() -> Game:
    """Kuhn poker; its Nash value for player 0 is −1/18."""

    def decision(cards: tuple[int, int], history: str) -> Node:
        if history in ("pp", "bb", "pbb"):  # showdown
            stake = 1 if history == "pp" else 2
            return Node(TERMINAL, utility=stake if cards[0] > cards[1] else -stake)
        if history in ("bp", "pbp"):  # a fold: the bettor wins the ante
            bettor = 0 if history == "bp" else 1
            return Node(TERMINAL, utility=1.0 if bettor == 0 else -1.0)
        player = len(history) % 2
        children = [decision(cards, history + c) for c in "pb"]
        return Node(player, f"{cards[player]}{history}", [KUHN_PASS, KUHN_BET], children)

    def deal(dealt: tuple[int, ...]) -> Node:
        if len(dealt) == 2:
            return decision(dealt, "")  # type: ignore[arg-type]
        left = [c for c in range(3) if c not in dealt]
        return Node(
            CHANCE, actions=left, children=[deal(dealt + (c,)) for c in left], probs=[1 / len(left)] * len(left)
        )

    return Game("kuhn_poker", deal(()), {KUHN_PASS: "pass", KUHN_BET: "bet"})


# --- Leduc poker ------------------------------------------------------------------------------
# Six cards 0..5 of ranks card // 2 (two suits of J, Q, K); ante 1; one private card each, one
# public card after round 1. Actions fold=0, call=1 (check when nothing to call), raise=2; raises
# are 2 in round 1 and 4 in round 2, at most 2 per round; player 0 acts first in each round.
# Showdown: a pair with the public card wins, else the higher rank; equal ranks split the pot.

LEDUC_FOLD, LEDUC_CALL, LEDUC_RAISE = 0, 1, 2


def _leduc_strength(private: int, public: int) -> tuple[int, int]:
    return (int(private // 2 == public // 2), private // 2)


def leduc_poker() -> Game:
    """Leduc poker as in OpenSpiel's `leduc_poker` defaults (its Nash value for player 0 is ≈ −0.0856)."""
    letters = {LEDUC_FOLD: "f", LEDUC_CALL: "c", LEDUC_RAISE: "r"}

    def betting(private: tuple[int, int], public: int | None, spent: list[int], rounds: list[str]) -> Node:
        round_index = len(rounds) - 1
        history = rounds[-1]
        player = len(history) % 2
        raises = history.count("r")
        to_call = spent[1 - player] - spent[player]
        actions = ([LEDUC_FOLD] if to_call > 0 else []) + [LEDUC_CALL] + ([LEDUC_RAISE] if raises < 2 else [])
        seen = f"{private[player]}" + ("" if public is None else f":{public}")
        key = f"{seen}|{'/'.join(rounds)}"
        children = []
        for action in actions:
            new_spent = list(spent)
            line = history + letters[action]
            if action == LEDUC_FOLD:
                winner = 1 - player
                gain = new_spent[1 - winner]  # the winner takes the folder's money
                children.append(Node(TERMINAL, utility=gain if winner == 0 else -gain))
                continue
            if action == LEDUC_CALL:
                new_spent[player] += to_call
            else:
                new_spent[player] += to_call + (2 if round_index == 0 else 4)
            round_over = action == LEDUC_CALL and len(line) >= 2
            if not round_over:
                children.append(betting(private, public, new_spent, rounds[:-1] + [line]))
            elif round_index == 0:
                children.append(deal_public(private, new_spent, [line]))
            else:
                children.append(showdown(private, public, new_spent))  # type: ignore[arg-type]
        return Node(player, key, actions, children)

    def showdown(private: tuple[int, int], public: int, spent: list[int]) -> Node:
        s0, s1 = _leduc_strength(private[0], public), _leduc_strength(private[1], public)
        if s0 == s1:
            return Node(TERMINAL, utility=0.0)
        return Node(TERMINAL, utility=float(spent[1]) if s0 > s1 else -float(spent[0]))

    def deal_public(private: tuple[int, int], spent: list[int], rounds: list[str]) -> Node:
        left = [c for c in range(6) if c not in private]
        children = [betting(private, c, spent, rounds + [""]) for c in left]
        return Node(CHANCE, actions=left, children=children, probs=[1 / len(left)] * len(left))

    def deal_private(dealt: tuple[int, ...]) -> Node:
        if len(dealt) == 2:
            return betting(dealt, None, [1, 1], [""])  # type: ignore[arg-type]
        left = [c for c in range(6) if c not in dealt]
        return Node(
            CHANCE, actions=left, children=[deal_private(dealt + (c,)) for c in left], probs=[1 / len(left)] * len(left)
        )

    return Game("leduc_poker", deal_private(()), {LEDUC_FOLD: "fold", LEDUC_CALL: "call", LEDUC_RAISE: "raise"})
