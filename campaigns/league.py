"""A league in a training campaign: versions of the learner and fixed members play the other side.

`league:` in a train campaign names the seats a version drawn from the league plays (side B; the
learner's seats are side A). The population, win records and matchmaking rules are
`solvers.population`'s; this module holds the league's running state (`League`), routes a rollout's
turns to the versions that play them (`campaigns.payoff_cells`), and is the train loop's
collaborator (`LeagueOpponents`): it draws each iteration's opponents, records every game, snapshots
the learner, plays the payoff matrix between the versions in play, and saves and restores itself.
A campaign's `self_play: {seats, snapshot_every}` is this league with `matchmaking: latest`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agora.policy import Policy
from agora.rollout import policy_seed
from agora.run import build_policies
from agora.scenario import AgentSpec
from agora.trajectory import Episode
from campaigns.figures import league_figure, payoff_heatmap, payoff_table
from campaigns.leaderboard import games_table, leaderboard_markdown, leaderboard_rows, log_leaderboard, ratings_table
from campaigns.payoff_cells import (
    LeagueCellJob,
    LoRAVersions,
    PayoffPlan,
    VersionPool,
    VersionRouter,
    league_payoff_games,
    payoff_cells,
)
from solvers.population import MatchmakingRule, PolicyVersion, Population, WinRecord, matchmaking_distribution

if TYPE_CHECKING:
    from solvers.ratings import BradleyTerryFit


class PayoffSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(
        0,
        ge=0,
        le=100_000,
        description="payoff matrix after every N-th iteration (0: only after the last; always after the last)",
    )
    episodes_per_cell: int = Field(4, ge=1, le=100_000, description="games per (side A version, side B version) cell")
    seed: int = Field(2_000_003, ge=0, description="root seed of the payoff games (every cell plays the same seeds)")
    meta_solver: Literal["nash", "uniform", "replicator", "alpharank"] = Field(
        "nash", description="meta-strategy of the payoff matrix (psro matchmaking, exploitability)"
    )
    bootstrap: int = Field(
        200, ge=0, le=100_000, description="bootstrap resamples of the Bradley-Terry fit's 95% intervals (0: none)"
    )


class LeagueSpec(BaseModel):
    """`league: {seats: [...], matchmaking: pfsp, members: {...}, ...}`: a population of versions plays the other
    side."""

    model_config = ConfigDict(extra="forbid")
    seats: list[str] = Field(
        min_length=1,
        description="seats (names or glob patterns) played by a version drawn from the league: the other side",
    )
    matchmaking: MatchmakingRule = Field("pfsp", description="how opponents are drawn: latest | uniform | pfsp | psro")
    pfsp_weighting: Literal["hard", "variance"] = Field(
        "hard", description="pfsp: hard (1-x)^p favours opponents the learner loses to; variance x(1-x) even matches"
    )
    pfsp_exponent: float = Field(2.0, gt=0.0, le=100.0, description="pfsp hard weighting's exponent p")
    snapshot_every: int = Field(
        1,
        ge=1,
        le=100_000,
        description="add a LoRA snapshot of the learner to the league after every N-th iteration (and first)",
    )
    max_snapshots: int = Field(
        8, ge=1, le=10_000, description="snapshots kept in play (older ones stay in the lineage only)"
    )
    members: dict[str, AgentSpec] = Field(
        {}, description="name -> fixed policy (e.g. scripted) in the league from the start"
    )
    swap_sides: bool = Field(
        False, description="odd iterations: the learner plays league.seats and the league plays learner.seats"
    )
    side_names: list[str] = Field(
        ["a", "b"],
        min_length=2,
        max_length=2,
        description="names of the learner.seats side and the league.seats side in metrics",
    )
    payoff: PayoffSpec = PayoffSpec()


class SelfPlaySpec(BaseModel):
    """`self_play: {seats, snapshot_every}`: the same as `league: {seats, snapshot_every, matchmaking: latest,
    max_snapshots: 1}`."""

    model_config = ConfigDict(extra="forbid")
    seats: list[str] = Field(
        min_length=1, description="seats (names or glob patterns) played by a frozen snapshot of the learner"
    )
    snapshot_every: int = Field(
        1,
        ge=1,
        le=100_000,
        description="copy the learner's current weights into the snapshot before every N-th iteration",
    )

    def as_league(self) -> LeagueSpec:
        """One snapshot in play, the newest: the league's games, metrics and a 1x1 payoff matrix record it."""
        return LeagueSpec(seats=self.seats, matchmaking="latest", snapshot_every=self.snapshot_every, max_snapshots=1)


def side_score(returns: dict[str, float], side_a: Sequence[str], side_b: Sequence[str]) -> float:
    """Side A's result against side B in one game: 1 if its seats' mean return is higher, 1/2 if equal, 0 if lower.

    Werewolf: +1 to each winner and −1 to each loser, so this is the winning side (a draw, 0 all round, is 1/2);
    negotiation: who scored more.
    """
    a = float(np.mean([returns[s] for s in side_a]))
    b = float(np.mean([returns[s] for s in side_b]))
    return 1.0 if a > b else 0.5 if a == b else 0.0


@dataclass
class Match:
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
        from solvers.ratings import OpenSkillRatings

        self.population = Population(members)
        self.records = WinRecord()
        self.ratings = OpenSkillRatings()
        self.games: list[Match] = []
        self.adapters: dict[str, dict[str, Any]] = {}  # snapshot name -> LoRA state dict (only the active ones)
        self.since_snapshot: list[str] = []  # versions the learner played since the last snapshot, first-met order
        self.meta: dict[str, dict[str, float]] = {}  # "a" / "b" -> the meta-strategy over versions playing that side
        self.max_snapshots = max_snapshots
        self.leaderboard: list[dict[str, Any]] = []  # `campaigns.leaderboard` rows of every iteration so far

    def snapshots(self) -> list[str]:
        return [v.name for v in self.population if v.kind == "lora"]

    def candidates(self) -> list[str]:
        """The versions matchmaking draws from: every non-LoRA member, then the last `max_snapshots` snapshots (newest
        last)."""
        return [v.name for v in self.population if v.kind != "lora"] + self.snapshots()[-self.max_snapshots :]

    def snapshot(self, name: str, iteration: int, state: dict[str, Any]) -> PolicyVersion:
        """Add a LoRA snapshot of the learner: parent = the previous snapshot, opponents = the versions
        played since it. Snapshots beyond the last `max_snapshots` leave the pool (their weights are freed;
        they stay in the population for the lineage)."""
        previous = self.population.latest("lora")
        version = self.population.add(
            PolicyVersion(
                name,
                "lora",
                {"adapter": f"{name}.safetensors"},
                parent=previous.name if previous else None,
                opponents=list(self.since_snapshot),
                iteration=iteration,
            )
        )
        self.adapters[name] = state
        self.since_snapshot = []
        active = set(self.candidates())
        for old in [n for n in self.adapters if n not in active]:
            del self.adapters[old]
        return version

    def play(self, game: Match) -> None:
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
            "leaderboard": self.leaderboard,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], adapters: dict[str, dict[str, Any]]) -> League:
        league = cls(max_snapshots=int(data["max_snapshots"]))
        league.population = Population.from_dict(data["population"])
        league.records = WinRecord.from_dict(data["records"])
        for name, (mu, sigma) in data["ratings"].items():
            league.ratings.ratings[name] = league.ratings.model.rating(mu=mu, sigma=sigma, name=name)
        league.games = [Match(**g) for g in data["games"]]
        league.since_snapshot = list(data["since_snapshot"])
        league.meta = {k: dict(v) for k, v in data["meta"].items()}
        league.leaderboard = list(data.get("leaderboard", []))  # none in checkpoints of Agora 0.1
        league.adapters = dict(adapters)
        return league


# --- the train loop's collaborator --------------------------------------------------------------------


# (iteration, seat -> policy, seat -> id) -> episodes
Play = Callable[[int, dict[str, Policy], dict[str, str]], list[Episode]]


class LeagueOpponents:
    """The league side of a train campaign: the opponents of each iteration, the records of every game,
    snapshots of the learner, payoff matrices, and its part of each checkpoint.

    `campaign` is the resolved train campaign (its `league_spec`, `learner_seats`, `league_seats`,
    `league_members`, `train` scenario); `model` the learner's peft model, whose adapter weights are
    snapshotted; `fixed` the policies of the seats neither side plays. LoRA snapshots act through one
    frozen copy of the model, their adapters swapped in as their turns come.
    """

    def __init__(
        self, campaign: Any, model: Any, tokenizer: Any, *, fixed: dict[str, Policy], policy_ids: dict[str, str]
    ):
        self.campaign, self.rule, spec = campaign, campaign.league_spec, campaign.spec
        self.model, self.tokenizer, self.fixed, self.policy_ids = model, tokenizer, fixed, policy_ids
        self.versions = LoRAVersions(
            campaign.learner_config, spec.learner.lora, spec.seed, campaign.league_members, tokenizer=tokenizer
        )
        self.matchmaking: dict[str, tuple[float, float]] = {}  # version -> (probability, share drawn) this iteration
        self.payoff_metrics: dict[str, float] = {}  # of the newest payoff matrix this process played
        self.payoff_matrix: tuple[list[str], np.ndarray] | None = None  # its versions and U (P(side A wins))
        self.fit: BradleyTerryFit | None = None  # Bradley-Terry fit of every payoff game so far, at the newest matrix
        members = [
            PolicyVersion(
                name,
                "llm" if seat.entry.name == "llm" else "scripted",
                {"policy": seat.entry.name, **seat.config.model_dump(mode="json")},
            )
            for name, seat in campaign.league_members.items()
        ]
        self.league = League(members, max_snapshots=self.rule.max_snapshots)
        self.versions.adapters = self.league.adapters  # the snapshots in play act through `versions`
        self.snapshot(0)  # the learner before any update: the base model (LoRA B = 0)

    def snapshot(self, iteration: int) -> None:
        """Add the learner's current LoRA weights to the league as version `learner-<iteration>` (updates done)."""
        from agora.lora import adapter_state

        self.league.snapshot(
            f"{League.LEARNER}-{iteration}", iteration, {k: v.cpu() for k, v in adapter_state(self.model).items()}
        )

    def pool(self, key: str, seed: int) -> VersionPool:
        """Fresh, seeded policies of the league's versions for one rollout (`key` names it)."""
        return self.versions.pool(key, seed)

    def swapped(self, i: int) -> bool:
        return self.rule.swap_sides and i % 2 == 1

    def draw(self, i: int) -> tuple[list[str], np.ndarray, list[str]]:
        """(candidates, matchmaking probabilities, one drawn opponent per group) for iteration `i`, from a
        generator seeded by (seed, i): the same draws after a resume. psro draws from the meta-strategy of
        the side the opponents play."""
        spec, rule, league = self.campaign.spec, self.rule, self.league
        candidates = league.candidates()
        probs = matchmaking_distribution(
            rule.matchmaking,
            candidates,
            learner=League.LEARNER,
            records=league.records,
            meta_strategy=league.meta.get("a" if self.swapped(i) else "b", {}),
            weighting=rule.pfsp_weighting,
            p=rule.pfsp_exponent,
        )
        rng = np.random.default_rng(policy_seed(spec.seed, f"league/matchmaking/{i}"))
        return (
            candidates,
            probs,
            [candidates[k] for k in rng.choice(len(candidates), size=spec.groups_per_iteration, p=probs)],
        )

    def play(self, i: int, learner: Policy, train: Play) -> tuple[list[Episode], list[str], dict[str, float]]:
        """Iteration `i`'s training games: one opponent version per group, drawn by the matchmaking rule, all
        groups played together by `train`; every game recorded. Returns the episodes, the seats the learner
        played, and league/* metrics."""
        spec, rule, league, c = self.campaign.spec, self.rule, self.league, self.campaign
        swapped = self.swapped(i)
        mine, theirs = (c.league_seats, c.learner_seats) if swapped else (c.learner_seats, c.league_seats)
        candidates, probs, drawn = self.draw(i)
        assignment = {e: drawn[e // spec.group_size] for e in range(spec.groups_per_iteration * spec.group_size)}
        router = VersionRouter(self.pool(f"train/{i}", spec.seed), assignment)
        seats = {**{s: learner for s in mine}, **{s: router for s in theirs}, **self.fixed}
        ids = {s: "learner" if s in mine else "league" if s in theirs else self.policy_ids[s] for s in seats}
        episodes = train(i, seats, ids)
        wins: dict[str, list[float]] = {name: [] for name in rule.side_names}
        learner_scores = []
        for episode in episodes:
            opponent = assignment[episode.index]
            episode.policies.update({s: opponent for s in theirs})
            score = side_score(episode.returns, mine, theirs)  # the learner's
            a, b, score_a = (opponent, League.LEARNER, 1.0 - score) if swapped else (League.LEARNER, opponent, score)
            league.play(Match(i, "train", a, b, score_a))
            learner_scores.append(score)
            wins[rule.side_names[0]].append(score_a)
            wins[rule.side_names[1]].append(1.0 - score_a)
        self.matchmaking = {v: (float(q), drawn.count(v) / len(drawn)) for v, q in zip(candidates, probs)}
        metrics = {f"league/win_rate/{side}": float(np.mean(v)) for side, v in wins.items()}
        metrics["league/learner_win_rate"] = float(np.mean(learner_scores))
        metrics["league/learner_side"] = float(swapped)
        return episodes, mine, metrics

    def ratings(self) -> dict[str, float]:
        """The population's size and the live learner's rating (every version's: the leaderboard table)."""
        league, learner = self.league, League.LEARNER
        out = {"league/population": float(len(league.population)), "league/in_play": float(len(league.candidates()))}
        if learner in league.ratings.ratings:
            out["league/learner_rating"] = league.ratings.mu(learner)
            out["league/learner_rating_sigma"] = league.ratings.sigma(learner)
        return out

    def after_iteration(
        self,
        i: int,
        log: Callable[[dict[str, float], int], None],
        tracker: Any,
        before_payoff: Callable[[], None] | None = None,
    ) -> None:
        """Snapshot the learner every `snapshot_every` iterations, the payoff matrix every `payoff.every` (both after
        the last; `before_payoff()` first: the train campaign frees its Ray rollout workers' resources for the
        matrix's workers), then log the ratings: a few scalars, and the leaderboard of every version."""
        rule, last = self.rule, i + 1 == self.campaign.spec.iterations
        if (i + 1) % rule.snapshot_every == 0 or last:
            self.snapshot(i + 1)
        payoff = (rule.payoff.every and (i + 1) % rule.payoff.every == 0) or last
        if payoff:
            if before_payoff:
                before_payoff()
            self.payoff_metrics = self.payoff(i + 1, tracker)
            log(self.payoff_metrics, i + 1)
        log(self.ratings(), i + 1)  # after this iteration's games (and payoff games): step = iterations done
        league = self.league
        league.leaderboard = [r for r in league.leaderboard if r["step"] <= i]  # an iteration redone on resume
        league.leaderboard += leaderboard_rows(
            league,
            i + 1,
            matchmaking=self.matchmaking,
            meta=league.meta if payoff else None,
            side_names=rule.side_names,
        )
        if tracker:
            log_leaderboard(tracker, league.leaderboard, f"{self.campaign.name}: league ratings per iteration")

    def payoff(self, step: int, tracker: Any) -> dict[str, float]:
        """The empirical payoff matrix between the versions in play, every cell's games played together.

        U[k, l] = P(side A wins) with version k on side A (learner.seats) and version l on side B (league.seats),
        over `episodes_per_cell` games on the same seeds in every cell; the meta-game is constant-sum
        (U_A = U, U_B = 1 − U). Logs the heatmap and table, the meta-strategy σ = MSS(U), its
        exploitability and NashConv within the population, a Bradley–Terry fit of the payoff games with
        bootstrap 95% intervals, and the league graph.
        """
        from solvers.meta import exploitability, nash_conv
        from solvers.psro import meta_strategy
        from solvers.ratings import bradley_terry

        c, spec, payoff, league = self.campaign, self.campaign.spec, self.rule.payoff, self.league
        side_a, side_b = c.learner_seats, c.league_seats
        name_a, name_b = self.rule.side_names
        versions = league.candidates()
        root = policy_seed(payoff.seed, f"step/{step}")
        plan = PayoffPlan(
            versions,
            payoff_cells(len(versions)),
            payoff.episodes_per_cell,
            root,
            f"payoff/{step}",
            payoff.seed,
            side_a,
            side_b,
            {s: name_a if s in side_a else name_b if s in side_b else self.policy_ids[s] for s in c.train.seats},
            spec.concurrency,
            spec.max_retries,
        )
        start = time.perf_counter()
        played = league_payoff_games(
            plan,
            c.train,
            self.versions,
            build_policies(c.train, skip=side_a + side_b, seed=root),
            spec.execution,
            lambda: LeagueCellJob(c.train, c.learner_config, spec.learner.lora, spec.seed, c.league_members),
        )
        U = np.zeros((len(versions), len(versions)))
        for index, returns in played.games:  # game e of cell c is episode e * n_cells + c
            k, l = plan.cells[index % len(plan.cells)]
            score = side_score(returns, side_a, side_b)
            U[k, l] += score / plan.per_cell
            league.play(Match(step, "payoff", versions[k], versions[l], score))
        seconds = time.perf_counter() - start
        self.payoff_matrix = (versions, U)
        x, y = meta_strategy(U, 1.0 - U, payoff.meta_solver)
        league.meta = {"a": dict(zip(versions, map(float, x))), "b": dict(zip(versions, map(float, y)))}
        metrics = {
            "league/exploitability": exploitability(U, 1.0 - U, x, y),
            "league/nash_conv": nash_conv(U, 1.0 - U, x, y),
            "league/payoff_games": float(len(played.games)),
            "perf/payoff_seconds": seconds,
        }
        games = [(g.a, g.b, g.score_a) for g in league.games if g.kind == "payoff" and g.a != g.b]
        self.fit = None
        if games:
            rng = np.random.default_rng(policy_seed(payoff.seed, f"bootstrap/{step}"))
            self.fit = bradley_terry(games, bootstrap=payoff.bootstrap, rng=rng)
        if played.workers:
            metrics.update(
                {"perf/payoff_workers": float(played.workers), "perf/payoff_worker_restarts": float(played.restarts)}
            )
        if tracker:
            tag = f"step-{step:04d}"
            title = (
                f"P({name_a} side wins): row version plays {name_a}, column version plays {name_b}; after "
                f"iteration {step}"
            )
            tracker.log_figure(
                payoff_heatmap(U, versions, versions, title=title, label=f"P({name_a} wins)"),
                f"league/payoff/{tag}.png",
            )
            tracker.log_table(payoff_table(U, versions, versions), f"league/payoff/{tag}.json")
            if fit := self.fit:
                tracker.log_table(
                    {
                        "version": fit.players,
                        "elo": fit.elo.tolist(),
                        "ci95_low": fit.lower.tolist(),
                        "ci95_high": fit.upper.tolist(),
                        "games": [sum(p in (a, b) for a, b, _ in games) for p in fit.players],
                    },
                    f"league/bradley_terry/{tag}.json",
                )
            tracker.log_figure(
                league_figure(league.population.graph(league.records), title=f"league after iteration {step}"),
                f"league/graph/{tag}.png",
            )
        return metrics

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the snapshots' adapter weights into `folder/league/`; returns the rest of the league's state (JSON)."""
        from safetensors.torch import save_file

        (folder / "league").mkdir()
        for name, weights in self.league.adapters.items():
            save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "league" / f"{name}.safetensors"))
        return self.league.to_dict()

    def restore(self, folder: Path, state: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        adapters = {path.stem: load_file(str(path)) for path in sorted((folder / "league").glob("*.safetensors"))}
        self.league = League.from_dict(state, adapters)
        self.versions.adapters, self.versions.loaded = self.league.adapters, None

    def overview(self) -> str:
        """The newest leaderboard as markdown (the run's description)."""
        return leaderboard_markdown(self.league.leaderboard, self.rule.side_names, self.payoff_metrics)

    def finish(self, tracker: Any) -> None:
        """The league's records of the whole campaign: every game and the ratings table."""
        if tracker:
            tracker.log_table(games_table(self.league), "league/games.json")
            tracker.log_table(ratings_table(self.league), "league/ratings.json")
