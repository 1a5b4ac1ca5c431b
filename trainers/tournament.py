"""Group rewards from a pairwise judge: SPO win rates and ArenaRL's seeded single elimination (SPO: arXiv 2401.04056;
ArenaRL: arXiv 2601.06487).

Both replace the return of each trajectory of a GRPO group (the rollouts of one seat from one
initial state) with a reward computed from comparisons inside the group; the GRPO advantage then
normalises it within the group as usual.

- SPO (Minimaximalist, arXiv 2401.04056): r_i = 1/(G-1) * sum_{j != i} P(xi_i > xi_j), from
  G(G-1)/2 judge calls (P(j > i) = 1 - P(i > j)).
- ArenaRL (arXiv 2601.06487, `qqr/reward_models/arena/single_elimination.py`), O(G) calls:
  1. seeding: every i >= 1 is judged against the anchor, rollout 0 (G-1 calls); i scores
     P(i > 0), the anchor the mean of its P(0 > i);
  2. rollouts sorted by that score (stable) fill a standard bracket of size 2^k >= G (seed 1 vs
     2^k, 2^k/2 vs 2^k/2+1, ...; `seeded_bracket`); the missing seeds are byes, whose opponents
     advance without a call;
  3. knockout rounds (G-1 calls; a tie P = 0.5 goes to the better seed); every match adds
     P and 1 - P to the two players' points;
  4. ranking: champion first, then the losers round by round from the final backwards, losers of
     one round ordered by their mean points (then by seed);
  5. reward 1 - rank / (G-1) (the group normalisation (r - mean) / (std + 1e-6) is GRPO's).
  qqr drops the byes from the bracket list and pairs its neighbours; here a bye is a slot, so a
  top seed's bye is exactly the one the standard bracket gives it. The anchor is rollout 0, which
  campaigns decode greedily for the learner's seats (`GroupRollout(anchor_seats=...)`), its
  logprobs taken under the sampling temperature like every other rollout's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agora.trajectory import Episode
from trainers.judges import Candidate, Judge


def spo_win_rates(group: list[Candidate], judge: Judge) -> np.ndarray:
    """r_i = 1/(G-1) * sum_{j != i} P(i > j), one judge call per unordered pair."""
    n = len(group)
    if n < 2:
        return np.zeros(n)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    wins = np.zeros(n)
    for (i, j), p in zip(pairs, judge.compare([(group[i], group[j]) for i, j in pairs])):
        wins[i] += p
        wins[j] += 1.0 - p
    return wins / (n - 1)


def seeded_bracket(n: int) -> list[int | None]:
    """Seed (0 = best) in each slot of a standard single-elimination bracket of size 2^k >= n; None = bye.

    Built by doubling: each seed s of the smaller bracket meets 2m - 1 - s, so seeds 0 and 1 can
    only meet in the final. n = 8: [0, 7, 3, 4, 1, 6, 2, 5].
    """
    slots, size = [0], 1
    while size < n:
        slots = [t for s in slots for t in (s, 2 * size - 1 - s)]
        size *= 2
    return [s if s < n else None for s in slots]


@dataclass
class Tournament:
    rewards: np.ndarray  # 1 - rank / (G-1), by rollout index
    ranking: list[int]  # rollout indices, champion first
    seeding: list[int]  # rollout indices by seeding score, best first
    points: list[list[float]]  # per rollout: the judge's P of each of its comparisons
    matches: list[tuple[int, int, float]] = field(default_factory=list)  # (i, j, P(i > j)), seeding included
    calls: int = 0


def arena_tournament(group: list[Candidate], judge: Judge) -> Tournament:
    """ArenaRL's anchor-seeded single elimination over one group (module docstring), 2G - 2 judge calls."""
    n = len(group)
    if n < 2:
        return Tournament(np.zeros(n), list(range(n)), list(range(n)), [[] for _ in range(n)])
    points: list[list[float]] = [[] for _ in range(n)]
    matches: list[tuple[int, int, float]] = []
    # 1. seeding against the anchor, rollout 0
    seeding_p = judge.compare([(group[i], group[0]) for i in range(1, n)])
    for i, p in zip(range(1, n), seeding_p):
        points[i].append(p)
        matches.append((i, 0, p))
    points[0].append(float(np.mean([1.0 - p for p in seeding_p])))
    mean_points = lambda i: float(np.mean(points[i])) if points[i] else 0.0  # noqa: E731
    seeding = sorted(range(n), key=lambda i: -mean_points(i))  # stable: ties keep rollout order
    seed_of = {i: s for s, i in enumerate(seeding)}
    # 2.-3. bracket and knockout rounds
    active: list[int | None] = [seeding[s] if s is not None else None for s in seeded_bracket(n)]
    eliminated: list[list[int]] = []
    calls = n - 1
    while len(active) > 1:
        pairs = [(active[k], active[k + 1]) for k in range(0, len(active), 2)]
        played = [(a, b) for a, b in pairs if a is not None and b is not None]
        results = dict(zip(played, judge.compare([(group[a], group[b]) for a, b in played])))
        calls += len(played)
        winners, losers = [], []
        for a, b in pairs:
            if a is None or b is None:  # a bye: the other advances
                winners.append(a if b is None else b)
                continue
            p = results[(a, b)]
            points[a].append(p)
            points[b].append(1.0 - p)
            matches.append((a, b, p))
            a_wins = p > 0.5 or (p == 0.5 and seed_of[a] < seed_of[b])
            winners.append(a if a_wins else b)
            losers.append(b if a_wins else a)
        if losers:
            eliminated.append(losers)
        active = winners
    # 4. ranking, 5. rewards
    ranking = [active[0]]
    for losers in reversed(eliminated):
        ranking += sorted(losers, key=lambda i: (-mean_points(i), seed_of[i]))
    rewards = np.zeros(n)
    for rank, i in enumerate(ranking):
        rewards[i] = 1.0 - rank / (n - 1)
    return Tournament(rewards, ranking, seeding, points, matches, calls)


def judged_groups(episodes: list[Episode], learner_seats: list[str]) -> dict[str, list[Candidate]]:
    """GRPO group uid (seed:seat) -> its candidates in rollout order (episode index; rollout 0 first)."""
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for episode in sorted(episodes, key=lambda e: e.index):
        for seat in learner_seats:
            groups[f"{episode.seed}:{seat}"].append(Candidate(episode, (seat,)))
    return groups


def group_rewards(
    episodes: list[Episode], learner_seats: list[str], judge: Judge, method: Literal["spo", "arena"]
) -> dict[tuple[int, str], float]:
    """(episode index, seat) -> the trajectory's SPO win rate or ArenaRL rank reward within its group."""
    out: dict[tuple[int, str], float] = {}
    for group in judged_groups(episodes, learner_seats).values():
        rewards = spo_win_rates(group, judge) if method == "spo" else arena_tournament(group, judge).rewards
        for candidate, r in zip(group, rewards):
            out[(candidate.episode.index, candidate.seats[0])] = float(r)
    return out
