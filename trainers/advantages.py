"""Trajectories -> groups -> advantages: one interface for GRPO and GiGPO (GRPO: arXiv 2402.03300; GiGPO: arXiv
2505.10978).

`training_samples(episodes, learner_seats, config)` turns the learner's decisions into `Sample`s,
each carrying the exact tokens the sampler used, log pi_old of each completion token, and one
scalar advantage broadcast over its tokens.

Groups. A GRPO group is every trajectory of one seat played from the same initial state (the
same episode seed): the `group_size` rollouts a campaign plays of each seed. In a multi-agent
episode each learner seat is its own trajectory, credited with its own return (`credit: own`)
or with the sum of all seats' returns (`credit: team`, for cooperative worlds).

- GRPO (outcome): A_i = (R_i - mean_g R) / (std_g R + eps), std division switchable, statistics
  over the group or over the whole batch (verl-agent `compute_mean_std_cross_all_data`).
- GiGPO: A = A^E + omega * A^S. A^E is the episode-level GRPO advantage above; A^S groups the
  steps of one GRPO group whose anchor state (the world's observation, no prompt history added)
  is the same (`exact`) or similar (`similarity`: difflib ratio >= threshold, greedy clustering
  on each cluster's first member), and normalises their discounted returns
  R_t = sum_{k>=t} gamma^(k-t) r_k within each anchor group; singletons get A^S = 0.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from agora.trajectory import Episode, Step

EPS = 1e-6


@dataclass
class Sample:
    """One learner decision, ready for the policy-gradient loss."""

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]  # log pi_old per completion token, as the sampler recorded it
    advantage: float
    group: str  # uid of the GRPO group: initial state (seed) + seat
    episode: int
    agent: str
    turn: int
    ret: float  # the trajectory's credited return R_i
    fallback: bool = False  # the world took its fallback action after this (unparseable) completion
    temperature: float | None = None  # the sampler's temperature, which `old_logprobs` are under
    grammar: str | None = None  # the Lark grammar it was decoded under (`Step.grammar`): rescored under its masks
    # One advantage per completion token (HiPER's levels: switch, subgoal and action tokens credited apart), which
    # replaces `advantage` in the loss; None: `advantage` on every token.
    token_advantages: list[float] | None = None

    @classmethod
    def from_step(
        cls, step: Step, *, advantage: float, group: str, episode: int, ret: float, token_advantages=None
    ) -> "Sample":
        """The learner decision `step` (played by `step.agent` in episode `episode`) with its tokens, the sampler's
        log-probs, temperature and grammar, and the advantage(s) it is credited with."""
        return cls(
            prompt_ids=list(step.prompt_ids),
            completion_ids=list(step.completion_ids),
            old_logprobs=list(step.logprobs),
            advantage=float(advantage),
            group=group,
            episode=episode,
            agent=step.agent,
            turn=step.turn,
            ret=ret,
            fallback=step.fallback,
            temperature=step.temperature,
            grammar=step.grammar,
            token_advantages=token_advantages,
        )

    def credited(self) -> bool:
        """Whether some token of it has a non-zero advantage (else, without a KL term, it has no gradient)."""
        if self.token_advantages is not None:
            return any(a != 0.0 for a in self.token_advantages)
        return self.advantage != 0.0


def group_advantages(
    returns: np.ndarray,
    groups: list[Any],
    *,
    std_normalize: bool = True,
    statistics: Literal["group", "batch"] = "group",
    eps: float = EPS,
) -> np.ndarray:
    """A_i = (R_i - mean R) / (std R + eps) with mean/std over i's group (or the whole batch).

    std is the sample standard deviation (ddof = 1, as torch.std in verl/TRL); a group of one has
    mean = its value (A = 0). Without `std_normalize` the division is dropped (Dr. GRPO).
    """
    returns = np.asarray(returns, dtype=np.float64)
    advantages = np.zeros_like(returns)
    if statistics == "batch":
        members = {None: np.arange(len(returns))}
    else:
        index: dict[Any, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            index[g].append(i)
        members = {g: np.array(ix) for g, ix in index.items()}
    for ix in members.values():
        values = returns[ix]
        centred = values - values.mean()
        if std_normalize:
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            centred = centred / (std + eps)
        advantages[ix] = centred
    return advantages


def zero_variance_fraction(returns: np.ndarray, groups: list[Any]) -> float:
    """Share of groups whose returns are all equal (no learning signal under GRPO)."""
    by_group: dict[Any, list[float]] = defaultdict(list)
    for r, g in zip(returns, groups):
        by_group[g].append(float(r))
    if not by_group:
        return 0.0
    return sum(max(v) - min(v) < 1e-12 for v in by_group.values()) / len(by_group)


def discounted_returns(rewards: list[float], gamma: float) -> np.ndarray:
    """R_t = sum_{k>=t} gamma^(k-t) r_k."""
    out = np.zeros(len(rewards))
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def anchor_key(observation: Any, fields: list[str] | None = None) -> str:
    """A hashable, canonical rendering of an observation (GiGPO's `to_hashable(anchor_obs)`); with `fields`, of
    those keys of a mapping observation only (an abstracted state: e.g. the offer on the table without the chat
    history, which would make every state unique)."""
    if fields is not None and isinstance(observation, dict):
        observation = {k: observation.get(k) for k in fields}
    return json.dumps(observation, sort_keys=True, separators=(",", ":"))


def similarity_clusters(keys: list[str], threshold: float) -> list[int]:
    """Cluster id per key: greedy, each key joins the first cluster whose first member has
    difflib.SequenceMatcher ratio >= threshold with it, else opens a new cluster."""
    heads: list[str] = []
    out = []
    for key in keys:
        for c, head in enumerate(heads):
            if head == key or difflib.SequenceMatcher(None, head, key).ratio() >= threshold:
                out.append(c)
                break
        else:
            heads.append(key)
            out.append(len(heads) - 1)
    return out


def anchor_groups(
    anchors: list[str],
    groups: list[Any],
    *,
    key: Literal["exact", "similarity"] = "exact",
    similarity_threshold: float = 0.95,
) -> list[list[int]]:
    """GiGPO's step groups G^S: indices of the steps of one episode group whose anchor state is the same (`exact`)
    or similar (`similarity`, `similarity_clusters`), singletons included."""
    by_group: dict[Any, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    out = []
    for ix in by_group.values():
        if key == "exact":
            labels = [anchors[i] for i in ix]
        else:
            labels = similarity_clusters([anchors[i] for i in ix], similarity_threshold)
        members: dict[Any, list[int]] = defaultdict(list)
        for i, label in zip(ix, labels):
            members[label].append(i)
        out += list(members.values())
    return out


def normalized_within(
    step_returns: np.ndarray, members: list[list[int]], *, std_normalize: bool = True, eps: float = EPS
) -> np.ndarray:
    """A^S = (R_t - mean) / F_norm within each step group of `members`; steps alone in theirs get 0."""
    step_returns = np.asarray(step_returns, dtype=np.float64)
    out = np.zeros_like(step_returns)
    for ix in members:
        if len(ix) < 2:
            continue
        values = step_returns[ix]
        centred = values - values.mean()
        if std_normalize:
            centred = centred / (values.std(ddof=1) + eps)
        out[ix] = centred
    return out


def step_advantages(
    step_returns: np.ndarray,
    anchors: list[str],
    groups: list[Any],
    *,
    std_normalize: bool = True,
    key: Literal["exact", "similarity"] = "exact",
    similarity_threshold: float = 0.95,
    eps: float = EPS,
) -> np.ndarray:
    """GiGPO's A^S: steps of one episode group with the same (or similar) anchor state are
    normalised against each other, (R_t - mean) / F_norm; steps alone in their anchor group get 0."""
    members = anchor_groups(anchors, groups, key=key, similarity_threshold=similarity_threshold)
    return normalized_within(step_returns, members, std_normalize=std_normalize, eps=eps)


def credited_return(episode: Episode, agent: str, credit: Literal["own", "team"]) -> float:
    """The agent's own return, or the team's (sum over every seat) in cooperative worlds."""
    return float(sum(episode.returns.values()) if credit == "team" else episode.returns.get(agent, 0.0))


def training_samples(
    episodes: list[Episode],
    learner_seats: Callable[[Episode], list[str]],
    *,
    estimator: Literal["grpo", "gigpo"] = "grpo",
    std_normalize: bool = True,
    statistics: Literal["group", "batch"] = "group",
    credit: Literal["own", "team"] = "own",
    gamma: float = 1.0,
    step_weight: float = 1.0,
    anchor: Literal["exact", "similarity"] = "exact",
    similarity_threshold: float = 0.95,
    anchor_fields: list[str] | None = None,
    invalid_action_penalty: float = 0.0,
    trajectory_rewards: dict[tuple[int, str], float] | None = None,
) -> tuple[list[Sample], dict[str, float]]:
    """Samples with advantages for every learner decision that has token ids, plus group statistics
    (`train/zero_variance_groups`, `train/groups`, `train/mean_group_size`; GiGPO: `train/anchor_groups` and
    `train/anchor_singletons`, the share of steps alone in their anchor group, whose A^S is 0).

    `invalid_action_penalty` is subtracted from a trajectory's return, and from the reward of the
    step, for each of its decisions whose text could not be parsed (the world's fallback acted).

    GiGPO's step returns R_t = sum_{k>=t} gamma^(k-t) r_k use the seat's own step rewards r_k. Under
    `credit: team` the other seats' rewards (team return - own rewards) are added to the seat's last
    step: when they arrived relative to this seat's decisions is not recorded, so they count as a
    terminal reward, discounted from the trajectory's end (gamma^(T-1-t) at step t); with gamma = 1,
    R_0 is then the credited return that A^E uses.

    `trajectory_rewards` ((episode index, seat) -> reward, e.g. SPO win rates or ArenaRL rank
    rewards from `trainers.tournament`) replace the credited returns.
    """
    trajectories = []  # (episode, agent, group uid, R, learner steps)
    for episode in episodes:
        for agent in learner_seats(episode):
            steps = [s for s in episode.steps if s.agent == agent]
            penalty = invalid_action_penalty * sum(s.fallback for s in steps)
            if trajectory_rewards is not None:
                ret = trajectory_rewards[(episode.index, agent)] - penalty
            else:
                ret = credited_return(episode, agent, credit) - penalty
            trajectories.append((episode, agent, f"{episode.seed}:{agent}", ret, steps))
    returns = np.array([t[3] for t in trajectories])
    groups = [t[2] for t in trajectories]
    episode_adv = group_advantages(returns, groups, std_normalize=std_normalize, statistics=statistics)

    rows = []  # (trajectory index, step, step return, anchor)
    for k, (episode, agent, uid, ret, steps) in enumerate(trajectories):
        rewards = [s.reward - invalid_action_penalty * s.fallback for s in steps]
        if credit == "team" and rewards:  # the other seats' rewards count too: credited to the last step
            rewards[-1] += ret - sum(rewards)
        for step, r_t in zip(steps, discounted_returns(rewards, gamma)):
            rows.append((k, step, r_t, anchor_key(step.observation, anchor_fields)))
    a_step, step_stats = np.zeros(len(rows)), {}
    if estimator == "gigpo" and rows:
        members = anchor_groups(
            [r[3] for r in rows],
            [trajectories[r[0]][2] for r in rows],
            key=anchor,
            similarity_threshold=similarity_threshold,
        )
        a_step = normalized_within(np.array([r[2] for r in rows]), members, std_normalize=std_normalize)
        step_stats = {
            "train/anchor_groups": float(len(members)),
            "train/anchor_singletons": sum(len(m) == 1 for m in members) / len(rows),  # share of steps, A^S = 0
        }

    samples = []
    for (k, step, _, _), a_s in zip(rows, a_step):
        if not step.completion_ids or step.logprobs is None or step.prompt_ids is None:
            continue  # scripted turns, or a policy that records no tokens
        episode, _, uid, ret, _ = trajectories[k]
        samples.append(
            Sample.from_step(
                step, advantage=episode_adv[k] + step_weight * a_s, group=uid, episode=episode.index, ret=ret
            )
        )
    sizes = defaultdict(int)
    for g in groups:
        sizes[g] += 1
    stats = {
        "train/groups": float(len(sizes)),
        "train/mean_group_size": float(np.mean(list(sizes.values()))) if sizes else 0.0,
        "train/zero_variance_groups": zero_variance_fraction(returns, groups),
        **step_stats,
    }
    return samples, stats
