"""Populations of policy versions: lineage, win records, matchmaking and the league's figures.

A population holds named versions — a LoRA snapshot of the learner, a scripted policy, a tabular
or latent policy — each with its lineage: the version it was trained from (`parent`) and the
versions it was trained against (`opponents`). Campaigns add versions as they train and pick
opponents with a matchmaking rule:

- `latest`: the newest version (self-play against the latest snapshot);
- `uniform`: uniform over the league (fictitious self-play);
- `pfsp`: prioritised fictitious self-play (AlphaStar): P(o) ∝ f(x_o), x_o = P(learner beats o),
  with f_hard(x) = (1 − x)^p (focus on opponents the learner loses to) or f_var(x) = x(1 − x)
  (focus on even matches);
- `psro`: the meta-strategy σ of the empirical payoff matrix (PSRO's meta-strategy sampling).

The league graph (networkx) joins lineage edges (parent → child, opponent → trainee) and result
edges (a → b when a beats b more often than not, weighted by the win rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal, Sequence

import networkx as nx
import numpy as np

VersionKind = Literal["lora", "scripted", "llm", "tabular", "latent"]
MatchmakingRule = Literal["latest", "uniform", "pfsp", "psro"]


@dataclass
class PolicyVersion:
    """One member of a population: what rebuilds it (`spec`) and where it came from."""

    name: str
    kind: VersionKind
    spec: dict[str, Any] = field(
        default_factory=dict
    )  # scripted/llm: {"policy": id, **params}; lora: {"adapter": file}; tabular: {"strategy": [...]}
    parent: str | None = None  # the version it was trained from
    opponents: list[str] = field(default_factory=list)  # the versions it was trained against
    iteration: int | None = None  # the campaign iteration that produced it


class Population:
    """An ordered set of policy versions with lineage; serialisable to JSON for checkpoints."""

    def __init__(self, versions: Sequence[PolicyVersion] = ()):
        self._versions: dict[str, PolicyVersion] = {}
        for version in versions:
            self.add(version)

    def add(self, version: PolicyVersion) -> PolicyVersion:
        if version.name in self._versions:
            raise ValueError(f"the population already holds a version named {version.name!r}")
        for other in [version.parent, *version.opponents]:
            if other is not None and other not in self._versions:
                raise ValueError(f"version {version.name!r} refers to {other!r}, which is not in the population")
        self._versions[version.name] = version
        return version

    def __getitem__(self, name: str) -> PolicyVersion:
        return self._versions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._versions

    def __len__(self) -> int:
        return len(self._versions)

    def __iter__(self) -> Iterator[PolicyVersion]:
        return iter(self._versions.values())

    @property
    def names(self) -> list[str]:
        return list(self._versions)

    def latest(self, kind: VersionKind | None = None) -> PolicyVersion | None:
        """The most recently added version (of `kind`, if given)."""
        for version in reversed(self._versions.values()):
            if kind is None or version.kind == kind:
                return version
        return None

    def ancestors(self, name: str) -> list[str]:
        """The chain of parents of `name`, nearest first."""
        chain, parent = [], self._versions[name].parent
        while parent is not None:
            chain.append(parent)
            parent = self._versions[parent].parent
        return chain

    def to_dict(self) -> list[dict[str, Any]]:
        return [asdict(v) for v in self._versions.values()]

    @classmethod
    def from_dict(cls, data: list[dict[str, Any]]) -> Population:
        return cls([PolicyVersion(**v) for v in data])

    def graph(self, records: WinRecord | None = None) -> nx.MultiDiGraph:
        """Lineage edges (`trained_from`, `trained_against`) and, from `records`, `beats` edges a → b
        when a's win rate against b exceeds 1/2 (attribute `win_rate`, and `games`)."""
        g = nx.MultiDiGraph()
        for v in self:
            g.add_node(v.name, kind=v.kind, iteration=v.iteration)
        for v in self:
            if v.parent is not None:
                g.add_edge(v.parent, v.name, relation="trained_from")
            for o in v.opponents:
                g.add_edge(o, v.name, relation="trained_against")
        if records is not None:
            for a, b in records.pairs():
                if a in self and b in self:
                    rate = records.win_rate(a, b)
                    if rate > 0.5:
                        g.add_edge(a, b, relation="beats", win_rate=rate, games=records.games(a, b))
                    elif rate < 0.5:
                        g.add_edge(b, a, relation="beats", win_rate=1.0 - rate, games=records.games(a, b))
        return g


class WinRecord:
    """Head-to-head results: score(a vs b) summed (win 1, draw 1/2, loss 0) and game counts, symmetric."""

    def __init__(self):
        self._score: dict[tuple[str, str], float] = {}
        self._games: dict[tuple[str, str], int] = {}

    def record(self, a: str, b: str, score_a: float) -> None:
        """One game of a against b: score_a = 1 (a won), 1/2 (draw) or 0 (b won)."""
        if a == b:
            return
        for x, y, s in ((a, b, score_a), (b, a, 1.0 - score_a)):
            self._score[x, y] = self._score.get((x, y), 0.0) + s
            self._games[x, y] = self._games.get((x, y), 0) + 1

    def games(self, a: str, b: str) -> int:
        return self._games.get((a, b), 0)

    def win_rate(self, a: str, b: str, prior: float = 0.5) -> float:
        """a's mean score against b; `prior` when they never met."""
        n = self.games(a, b)
        return self._score[a, b] / n if n else prior

    def pairs(self) -> list[tuple[str, str]]:
        """Each pair that met once, in first-met order (a before b)."""
        seen, out = set(), []
        for a, b in self._games:
            if (b, a) not in seen:
                seen.add((a, b))
                out.append((a, b))
        return out

    def matrix(self, names: Sequence[str], prior: float = 0.5) -> np.ndarray:
        """W[i, j] = names[i]'s win rate against names[j] (1/2 on the diagonal)."""
        return np.array([[0.5 if a == b else self.win_rate(a, b, prior) for b in names] for a in names])

    def to_dict(self) -> list[list[Any]]:
        return [[a, b, self._score[a, b], self._games[a, b]] for a, b in self._games]

    @classmethod
    def from_dict(cls, rows: list[list[Any]]) -> WinRecord:
        out = cls()
        for a, b, score, games in rows:
            out._score[a, b], out._games[a, b] = float(score), int(games)
        return out


# --- matchmaking -------------------------------------------------------------------------------


def pfsp_weights(win_rates: np.ndarray, weighting: Literal["hard", "variance"] = "hard", p: float = 2.0) -> np.ndarray:
    """Prioritised fictitious self-play: P(o) ∝ f(x_o), x_o = P(learner beats o).

    f_hard(x) = (1 − x)^p; f_var(x) = x(1 − x). If every weight is 0 (the learner beats everyone,
    or every match is decided), fall back to uniform.
    """
    x = np.clip(np.asarray(win_rates, dtype=np.float64), 0.0, 1.0)
    w = (1.0 - x) ** p if weighting == "hard" else x * (1.0 - x)
    total = w.sum()
    return w / total if total > 0 else np.full(len(x), 1.0 / len(x))


def matchmaking_distribution(
    rule: MatchmakingRule,
    candidates: Sequence[str],
    *,
    learner: str | None = None,
    records: WinRecord | None = None,
    meta_strategy: dict[str, float] | None = None,
    weighting: Literal["hard", "variance"] = "hard",
    p: float = 2.0,
) -> np.ndarray:
    """The probability of drawing each candidate opponent (in `candidates`' order, last = latest)."""
    n = len(candidates)
    if n == 0:
        raise ValueError("matchmaking needs at least one candidate opponent")
    if rule == "latest":
        return np.eye(n)[n - 1]
    if rule == "uniform":
        return np.full(n, 1.0 / n)
    if rule == "pfsp":
        rates = [
            records.win_rate(learner, c) if records is not None and learner is not None else 0.5 for c in candidates
        ]
        return pfsp_weights(np.array(rates), weighting, p)
    if rule == "psro":
        if meta_strategy is None:
            raise ValueError("psro matchmaking needs the meta-strategy of the payoff matrix")
        w = np.array([max(meta_strategy.get(c, 0.0), 0.0) for c in candidates])
        return w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
    raise ValueError(f"unknown matchmaking rule {rule!r}; choose latest, uniform, pfsp or psro")


def sample_opponents(rng: np.random.Generator, candidates: Sequence[str], n: int, **kwargs: Any) -> list[str]:
    """`n` opponents drawn (with replacement) from `matchmaking_distribution(**kwargs)`."""
    probs = matchmaking_distribution(candidates=candidates, **kwargs)
    return [candidates[i] for i in rng.choice(len(candidates), size=n, p=probs)]
