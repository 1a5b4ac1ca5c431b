"""Counterfactual regret minimisation (CFR, CFR+) and best-response exploitability on game trees.

Games are the explicit trees of solvers/games.py (two players, zero-sum; a terminal's `utility`
is player 0's payoff). A policy maps an information-set key to action probabilities, aligned with
that information set's legal actions. The update follows OpenSpiel's `open_spiel/python/algorithms/
cfr.py` (CFR: "Regret Minimization in Games with Incomplete Information", NeurIPS 2007; CFR+: arXiv 1407.5042), so both
produce the same policies iteration by iteration:

- counterfactual value  v_i(σ, I) = Σ_{h∈I} π_{−i}^σ(h)·Σ_z π^σ(h→z)·u_i(z)
- regret                R_T(I, a) += π_{−i}(h)·(v_i(ha) − v_i(h)),  CFR+: R ← max(R, 0) after each update
- regret matching       σ_{T+1}(I, a) = R_T^+(I, a) / Σ_b R_T^+(I, b), uniform if the sum is 0
- average strategy      σ̄(I, a) ∝ Σ_t w_t·π_i^{σ_t}(h)·σ_t(I, a), w_t = 1 (CFR) or t (CFR+, linear averaging)
"""

from __future__ import annotations

import numpy as np

from solvers.games import CHANCE, TERMINAL, Game, Node

TabularPolicy = dict[str, np.ndarray]  # information set -> its actions' probabilities (OpenSpiel's tabular policy)


def uniform_policy(game: Game) -> TabularPolicy:
    return {key: np.full(len(actions), 1 / len(actions)) for key, (_, actions) in game.infosets().items()}


def regret_matching(regrets: list[float]) -> list[float]:
    """σ(a) = R⁺(a) / Σ_b R⁺(b), or uniform when no regret is positive."""
    positive = [r if r > 0 else 0.0 for r in regrets]
    total = sum(positive)
    return [r / total for r in positive] if total > 0 else [1 / len(regrets)] * len(regrets)


class CFRSolver:
    """Tabular CFR on a game tree; `CFRPlusSolver` is this with regret matching+ and linear averaging.

    Alternating updates (default): player 0's regrets are updated in one traversal, the current
    policy recomputed, then player 1's; simultaneous updates update both in one traversal.
    """

    def __init__(
        self,
        game: Game,
        *,
        regret_matching_plus: bool = False,
        linear_averaging: bool = False,
        alternating_updates: bool = True,
    ):
        self.game = game
        self.regret_matching_plus, self.linear_averaging = regret_matching_plus, linear_averaging
        self.alternating_updates = alternating_updates
        infosets = game.infosets()
        self.cumulative_regret = {key: [0.0] * len(actions) for key, (_, actions) in infosets.items()}
        self.cumulative_policy = {key: [0.0] * len(actions) for key, (_, actions) in infosets.items()}
        self.current = {key: [1 / len(actions)] * len(actions) for key, (_, actions) in infosets.items()}
        self.iteration = 0

    def evaluate_and_update_policy(self) -> None:
        """One CFR iteration."""
        self.iteration += 1
        for player in (0, 1) if self.alternating_updates else (None,):
            self._traverse(self.game.root, player, 1.0, 1.0, 1.0)
            if self.regret_matching_plus:
                for regrets in self.cumulative_regret.values():
                    regrets[:] = [r if r > 0 else 0.0 for r in regrets]
            self.current = {key: regret_matching(r) for key, r in self.cumulative_regret.items()}

    def solve(self, iterations: int) -> TabularPolicy:
        for _ in range(iterations):
            self.evaluate_and_update_policy()
        return self.average_policy()

    def current_policy(self) -> TabularPolicy:
        return {key: np.asarray(p) for key, p in self.current.items()}

    def average_policy(self) -> TabularPolicy:
        """σ̄(I) = cumulative policy / its sum, uniform where the information set was never reached."""
        out = {}
        for key, weights in self.cumulative_policy.items():
            total = sum(weights)
            out[key] = np.asarray(weights) / total if total > 0 else np.full(len(weights), 1 / len(weights))
        return out

    def _traverse(self, node: Node, player: int | None, reach0: float, reach1: float, chance: float) -> float:
        """Player 0's value of `node` under the current policy; updates regrets and average policy on the way."""
        if node.player == TERMINAL:
            return node.utility
        if reach0 == 0.0 and reach1 == 0.0:
            return 0.0  # no player reaches here: nothing below can change (OpenSpiel prunes the same way)
        if node.player == CHANCE:
            return sum(
                p * self._traverse(c, player, reach0, reach1, chance * p) for p, c in zip(node.probs, node.children)
            )
        policy = self.current[node.infoset]
        acting = node.player
        values = []
        for p, child in zip(policy, node.children):
            if acting == 0:
                values.append(self._traverse(child, player, reach0 * p, reach1, chance))
            else:
                values.append(self._traverse(child, player, reach0, reach1 * p, chance))
        value = sum(p * v for p, v in zip(policy, values))
        if player is None or acting == player:
            sign = 1.0 if acting == 0 else -1.0
            own, counterfactual = (reach0, reach1 * chance) if acting == 0 else (reach1, reach0 * chance)
            regrets, averages = self.cumulative_regret[node.infoset], self.cumulative_policy[node.infoset]
            weight = self.iteration if self.linear_averaging else 1.0
            for a, (p, v) in enumerate(zip(policy, values)):
                regrets[a] += counterfactual * sign * (v - value)
                averages[a] += weight * own * p
        return value


class CFRPlusSolver(CFRSolver):
    """CFR+: regret matching+ (R ← max(R + r, 0)), alternating updates, linear averaging (weight t)."""

    def __init__(self, game: Game):
        super().__init__(game, regret_matching_plus=True, linear_averaging=True, alternating_updates=True)


def expected_value(game: Game, policy: TabularPolicy) -> float:
    """Player 0's expected payoff when both players follow `policy` (player 1 gets the negative)."""

    def value(node: Node) -> float:
        if node.player == TERMINAL:
            return node.utility
        probs = node.probs if node.player == CHANCE else policy[node.infoset]
        return sum(p * value(c) for p, c in zip(probs, node.children) if p > 0)

    return value(game.root)


def best_response_value(game: Game, policy: TabularPolicy, player: int) -> float:
    """max_{π'} u_player(π', policy_{−player}): the value of a best response, chosen per information set.

    Best action at I = argmax_a Σ_{h∈I} π_{−player}(h)·v(ha) (opponent and chance reach), computed
    bottom-up; perfect recall makes the recursion well founded.
    """
    sign = 1.0 if player == 0 else -1.0
    members: dict[str, list[tuple[Node, float]]] = {}

    def collect(node: Node, reach: float) -> None:  # reach = opponent's × chance's reach probability
        if node.player == TERMINAL:
            return
        if node.player == player:
            members.setdefault(node.infoset, []).append((node, reach))
            for child in node.children:
                collect(child, reach)
            return
        probs = node.probs if node.player == CHANCE else policy[node.infoset]
        for p, child in zip(probs, node.children):
            collect(child, reach * p)

    collect(game.root, 1.0)
    best_action: dict[str, int] = {}
    memo: dict[int, float] = {}

    def value(node: Node) -> float:
        key = id(node)
        if key in memo:
            return memo[key]
        if node.player == TERMINAL:
            result = sign * node.utility
        elif node.player == player:
            if node.infoset not in best_action:
                scores = [
                    sum(w * value(h.children[a]) for h, w in members[node.infoset]) for a in range(len(node.actions))
                ]
                best_action[node.infoset] = int(np.argmax(scores))
            result = value(node.children[best_action[node.infoset]])
        else:
            probs = node.probs if node.player == CHANCE else policy[node.infoset]
            result = sum(p * value(c) for p, c in zip(probs, node.children))
        memo[key] = result
        return result

    return value(game.root)


def nash_conv(game: Game, policy: TabularPolicy) -> float:
    """NashConv = Σ_i [u_i(BR_i, σ_{−i}) − u_i(σ)]; the utilities sum to 0 in these zero-sum games."""
    return best_response_value(game, policy, 0) + best_response_value(game, policy, 1)


def exploitability(game: Game, policy: TabularPolicy) -> float:
    """Exploitability = NashConv / 2 (OpenSpiel's `exploitability` for 2-player zero-sum games)."""
    return nash_conv(game, policy) / 2.0
