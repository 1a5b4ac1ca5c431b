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
    spec: dict[str, Any] = field(default_factory=dict)  # scripted/llm: {"policy": id, **params}; lora: {"adapter": file}; tabular: {"strategy": [...]}
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
        rates = [records.win_rate(learner, c) if records is not None and learner is not None else 0.5 for c in candidates]
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


# --- figures and tables --------------------------------------------------------------------------


def payoff_heatmap(U: np.ndarray, rows: Sequence[str], columns: Sequence[str], *, title: str = "empirical payoff", label: str = "row's payoff"):
    """A heatmap of a payoff matrix with each cell's value written in it (matplotlib Figure, no pyplot)."""
    from matplotlib.figure import Figure

    U = np.asarray(U, dtype=np.float64)
    size = max(4.0, 0.6 * max(U.shape) + 2.5)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(U, cmap="RdYlGn", aspect="auto")
    figure.colorbar(image, ax=ax, label=label)
    ax.set_xticks(range(len(columns)), list(columns), rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set(title=title, xlabel="column player", ylabel="row player")
    if U.size <= 400:
        middle = (np.nanmax(U) + np.nanmin(U)) / 2 if U.size else 0.0
        for (i, j), value in np.ndenumerate(U):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="black" if abs(value - middle) < 0.35 * (np.ptp(U) or 1) else "white")
    return figure


def payoff_table(U: np.ndarray, rows: Sequence[str], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The payoff matrix as table columns (`Tracker.log_table`): `row`, then one column per opponent."""
    out: dict[str, list[Any]] = {"row": list(rows)}
    for j, name in enumerate(columns):
        out[str(name)] = [float(v) for v in np.asarray(U)[:, j]]
    return out


def league_figure(graph: nx.MultiDiGraph, *, title: str = "league"):
    """The league graph: versions in order of creation left to right, lineage edges solid grey,
    `beats` edges red with width by win rate."""
    from matplotlib.figure import Figure

    nodes = list(graph.nodes)
    figure = Figure(figsize=(max(6.0, 1.2 * len(nodes)), 5), layout="constrained")
    ax = figure.subplots()
    ax.set_axis_off()
    ax.set_title(title)
    if not nodes:
        return figure
    pos = nx.circular_layout(graph) if len(nodes) > 2 else {n: (i, 0) for i, n in enumerate(nodes)}
    kinds = nx.get_node_attributes(graph, "kind")
    palette = {"lora": "#4c72b0", "scripted": "#dd8452", "llm": "#937860", "tabular": "#55a868", "latent": "#8172b3"}
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=[palette.get(kinds.get(n), "#999999") for n in nodes], node_size=900)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8)
    lineage = [(a, b) for a, b, d in graph.edges(data=True) if d.get("relation") == "trained_from"]
    against = [(a, b) for a, b, d in graph.edges(data=True) if d.get("relation") == "trained_against"]
    beats = [(a, b, d) for a, b, d in graph.edges(data=True) if d.get("relation") == "beats"]
    nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=lineage, edge_color="#444444", width=2.0, node_size=900, arrowsize=15)
    nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=against, edge_color="#aaaaaa", style="dotted", node_size=900, arrowsize=10)
    nx.draw_networkx_edges(
        graph, pos, ax=ax, edgelist=[(a, b) for a, b, _ in beats], edge_color="#c44e52", style="dashed",
        width=[1.0 + 4.0 * (d["win_rate"] - 0.5) * 2 for _, _, d in beats], node_size=900, arrowsize=12,
        connectionstyle="arc3,rad=0.15",
    )
    from matplotlib.lines import Line2D

    legend = [
        Line2D([], [], color="#444444", lw=2, label="trained from"),
        Line2D([], [], color="#aaaaaa", ls="dotted", label="trained against"),
        Line2D([], [], color="#c44e52", ls="dashed", label="beats (width: win rate)"),
    ]
    legend += [Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in palette.items() if k in kinds.values()]
    ax.legend(handles=legend, loc="lower left", fontsize=8)
    return figure


# --- a league in a training campaign -----------------------------------------------------------


def side_score(returns: dict[str, float], side_a: Sequence[str], side_b: Sequence[str]) -> float:
    """Side A's result against side B in one game: 1 if its seats' mean return is higher, 1/2 if equal, 0 if lower.

    Werewolf: +1 to each winner and −1 to each loser, so this is the winning side (a draw, 0 all round, is 1/2);
    negotiation: who scored more.
    """
    a = float(np.mean([returns[s] for s in side_a]))
    b = float(np.mean([returns[s] for s in side_b]))
    return 1.0 if a > b else 0.5 if a == b else 0.0


@dataclass
class Game:
    """One game between two versions, one per side (a side may hold several seats: a werewolf team)."""

    iteration: int
    kind: Literal["train", "payoff"]  # a training game of the live learner, or a payoff-matrix game
    a: str  # the version on side A (learner.seats)
    b: str  # the version on side B (league.seats)
    score_a: float  # 1 A won, 1/2 draw, 0 B won


class League:
    """The running state of a league: population with lineage, win records, OpenSkill ratings, the game
    log, the LoRA snapshots' adapter weights and the last meta-strategy. `learner` names the live learner."""

    LEARNER = "learner"

    def __init__(self, members: Sequence[PolicyVersion] = (), *, max_snapshots: int = 8):
        from trainers.ratings import OpenSkillRatings

        self.population = Population(members)
        self.records = WinRecord()
        self.ratings = OpenSkillRatings()
        self.games: list[Game] = []
        self.adapters: dict[str, dict[str, Any]] = {}  # snapshot name -> LoRA state dict (only the active ones)
        self.since_snapshot: list[str] = []  # versions the learner played since the last snapshot, first-met order
        self.meta: dict[str, dict[str, float]] = {}  # "a" / "b" -> the meta-strategy over versions playing that side
        self.max_snapshots = max_snapshots

    def snapshots(self) -> list[str]:
        return [v.name for v in self.population if v.kind == "lora"]

    def candidates(self) -> list[str]:
        """The versions matchmaking draws from: every non-LoRA member, then the last `max_snapshots` snapshots (newest last)."""
        return [v.name for v in self.population if v.kind != "lora"] + self.snapshots()[-self.max_snapshots :]

    def snapshot(self, name: str, iteration: int, state: dict[str, Any]) -> PolicyVersion:
        """Add a LoRA snapshot of the learner: parent = the previous snapshot, opponents = the versions
        played since it. Snapshots beyond the last `max_snapshots` leave the pool (their weights are freed;
        they stay in the population for the lineage)."""
        previous = self.population.latest("lora")
        version = self.population.add(
            PolicyVersion(name, "lora", {"adapter": f"{name}.safetensors"}, parent=previous.name if previous else None,
                          opponents=list(self.since_snapshot), iteration=iteration)
        )
        self.adapters[name] = state
        self.since_snapshot = []
        active = set(self.candidates())
        for old in [n for n in self.adapters if n not in active]:
            del self.adapters[old]
        return version

    def play(self, game: Game) -> None:
        """Record one game: the log, the win record and the OpenSkill ratings (two teams of one version each;
        a version against itself changes no rating)."""
        self.games.append(game)
        opponent = game.b if game.a == self.LEARNER else game.a
        if game.kind == "train" and opponent not in self.since_snapshot:
            self.since_snapshot.append(opponent)
        if game.a == game.b:
            return
        self.records.record(game.a, game.b, game.score_a)
        ranks = [0, 1] if game.score_a > 0.5 else [1, 0] if game.score_a < 0.5 else [0, 0]
        self.ratings.rate([[game.a], [game.b]], ranks=ranks)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the adapter weights (those go to files), as JSON."""
        return {
            "population": self.population.to_dict(),
            "records": self.records.to_dict(),
            "ratings": {n: [self.ratings.mu(n), self.ratings.sigma(n)] for n in self.ratings.ratings},
            "games": [asdict(g) for g in self.games],
            "since_snapshot": list(self.since_snapshot),
            "meta": self.meta,
            "max_snapshots": self.max_snapshots,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], adapters: dict[str, dict[str, Any]]) -> League:
        league = cls(max_snapshots=int(data["max_snapshots"]))
        league.population = Population.from_dict(data["population"])
        league.records = WinRecord.from_dict(data["records"])
        for name, (mu, sigma) in data["ratings"].items():
            league.ratings.ratings[name] = league.ratings.model.rating(mu=mu, sigma=sigma, name=name)
        league.games = [Game(**g) for g in data["games"]]
        league.since_snapshot = list(data["since_snapshot"])
        league.meta = {k: dict(v) for k, v in data["meta"].items()}
        league.adapters = dict(adapters)
        return league


class VersionRouter:
    """A policy that plays each episode with the version assigned to it (`assignment[episode index]`).

    The rollout engine batches every pending turn of a seat's policy into one `act` call; the router
    splits that batch by version and passes each part to the version's policy (`pool(version, requests)`),
    so all groups (or all payoff cells) of a rollout are stepped together whatever version plays them.
    `expensive` / `uses_text` are those of the versions it routes to.
    """

    def __init__(self, pool: Any, assignment: dict[int, str]):
        from agora.policy import PolicyStats

        self.pool, self.assignment = pool, assignment
        policies = [pool.policy(v) for v in dict.fromkeys(assignment.values())]
        self.expensive = any(p.expensive for p in policies)
        self.uses_text = any(p.uses_text for p in policies)
        self.stats = PolicyStats()

    def act(self, requests: list) -> list:
        by_version: dict[str, list[int]] = {}
        for k, request in enumerate(requests):
            by_version.setdefault(self.assignment[request.episode], []).append(k)
        responses: list[Any] = [None] * len(requests)
        for version, indices in by_version.items():
            for k, response in zip(indices, self.pool.act(version, [requests[k] for k in indices])):
                responses[k] = response
        return responses

    def close(self) -> None:
        pass


class VersionPool:
    """The policies of a league's versions for one rollout, built on first use by `build(version)`.

    LoRA snapshots all act through ONE frozen model: `swap_in(version)` loads that version's adapter
    weights into it before its turns are sampled (a no-op when they are loaded already)."""

    def __init__(self, build: Any, swap_in: Any):
        self.build, self.swap_in = build, swap_in
        self.policies: dict[str, Any] = {}

    def policy(self, version: str) -> Any:
        if version not in self.policies:
            self.policies[version] = self.build(version)
        return self.policies[version]

    def act(self, version: str, requests: list) -> list:
        self.swap_in(version)
        return self.policy(version).act(requests)


def payoff_cells(n: int) -> list[tuple[int, int]]:
    """Every (row, column) pair of an n-version payoff matrix, row-major."""
    return [(k, l) for k in range(n) for l in range(n)]
