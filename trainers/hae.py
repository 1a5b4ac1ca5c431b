"""Hierarchical advantage estimation (HAE) of HiPER ("HiPER: Hierarchical Plan-Execute Reinforcement learning for
LLM agents", arXiv 2602.16165), for one trajectory: one seat's turns in one episode.

Each reply carries `<switch>KEEP|SWITCH</switch><subgoal>...</subgoal><action>...</action>`. A segment k (the
turns s_k .. e_k - 1, d_k = e_k - s_k of them) starts at turn 0 and at every SWITCH. A critic with three heads
gives V_H (read at a segment's first turn), V_L and V_term at every turn. With `next_high(k)`, the value the
segment hands over to, V_H(s_{k+1}) if a next segment exists; for the last one 0 if the episode ended, its own
V_H(s_k) if it was truncated and `bootstrap_truncated`, else 0:

    low level (turn GAE, cut at segment boundaries):
        delta_t = r_t + gamma * V_L(t+1) - V_L(t)           (V_L(t+1) := next_high(k) at t = e_k - 1)
        A_L,t   = delta_t + gamma * lambda_turn * A_L,t+1   (A_L,e_k := 0)
    high level (SMDP GAE over segments):
        R_k     = sum_{j < d_k} gamma^j r_{s_k + j}
        delta_k = R_k + gamma^{d_k} next_high(k) - V_H(s_k)
        A_H,k   = delta_k + gamma^{d_k} lambda_segment A_H,k+1   (0 after the last segment)
    termination (the form HiPER's code uses; the paper writes (q_t - beta_t)(V_H - V_L)):
        G_t^seg  = sum_{j=t}^{e_k-1} gamma^{j-t} r_j + gamma^{e_k - t} next_high(k)
        A_term,t = G_t^seg - V_term(t)

HiPER puts A_L on the `<action>` tokens, A_H on the `<subgoal>` tokens of a segment's first turn and A_term on
the `<switch>` tokens of every turn; the value heads regress on `low_targets`, `high_targets` and
`termination_targets`. Note: HiPER's code bootstraps the low level of a truncated last segment from the last
turn's own V_L; here all three levels use `next_high(k)` as defined above, so that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class HAE:
    """Per-turn arrays of one trajectory (one seat's turns in one episode), length T."""

    low: np.ndarray  # A_L,t: turn-level GAE inside the segment
    high: np.ndarray  # A_H,k placed at each segment's first turn; 0.0 on other turns
    termination: np.ndarray  # A_term,t on every turn
    low_targets: np.ndarray  # value target of V_L at turn t: A_L,t + V_L(t)
    high_targets: np.ndarray  # value target of V_H at a segment's first turn: A_H,k + V_H(s_k); NaN on other turns
    termination_targets: np.ndarray  # G_t^seg (the target of V_term at turn t)
    boundary: np.ndarray  # bool: turn t starts a segment


def segment_starts(switches: Sequence[bool]) -> np.ndarray:
    """Bool per turn: the turn starts a segment (it said SWITCH, or it is turn 0, whatever it said)."""
    starts = switch_flags(switches).copy()
    if len(starts):
        starts[0] = True
    return starts


def segments(switches: Sequence[bool]) -> list[tuple[int, int]]:
    """[s_k, e_k) for each segment k, in order; they tile 0 .. T - 1."""
    starts = np.flatnonzero(segment_starts(switches)).tolist()
    ends = starts[1:] + [len(switches)]
    return list(zip(starts, ends))


def switch_flags(switches: Sequence[bool]) -> np.ndarray:
    """The switches as a 1-D bool array; ValueError unless every entry is a bool or 0/1."""
    raw = np.asarray(switches)
    if raw.ndim != 1:
        raise ValueError(f"switches must be 1-D (one flag per turn), got shape {raw.shape}")
    if raw.dtype != bool and (raw.dtype.kind not in "iuf" or not np.isin(raw, (0, 1)).all()):
        raise ValueError(f"switches must be bools (or 0/1), got {raw.tolist()}")
    return raw.astype(bool)


def per_turn(name: str, values: Sequence[float], length: int) -> np.ndarray:
    """`values` as a finite 1-D float array of `length` entries; ValueError naming `name` otherwise."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per turn), got shape {arr.shape}")
    if len(arr) != length:
        raise ValueError(f"{name} has {len(arr)} entries but rewards has {length}: give one per turn")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got non-finite entries at turns {np.flatnonzero(~np.isfinite(arr))}")
    return arr


def hierarchical_advantages(
    rewards: Sequence[float],
    switches: Sequence[bool],
    v_high: Sequence[float],
    v_low: Sequence[float],
    v_term: Sequence[float],
    *,
    gamma: float = 1.0,
    lambda_turn: float = 1.0,
    lambda_segment: float = 0.95,
    done: bool = True,
    bootstrap_truncated: bool = True,
) -> HAE:
    """A_L, A_H, A_term and the three value targets of one trajectory (formulas in the module docstring).

    `done`: the episode ended after the last turn (else it was truncated). Linear in T.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1 or len(rewards) == 0:
        raise ValueError(f"rewards must be a non-empty 1-D sequence (T >= 1), got shape {rewards.shape}")
    T = len(rewards)
    rewards = per_turn("rewards", rewards, T)
    v_high = per_turn("v_high", v_high, T)
    v_low = per_turn("v_low", v_low, T)
    v_term = per_turn("v_term", v_term, T)
    if len(switch_flags(switches)) != T:
        raise ValueError(f"switches has {len(switches)} entries but rewards has {T}: give one per turn")
    for name, value in (("gamma", gamma), ("lambda_turn", lambda_turn), ("lambda_segment", lambda_segment)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")

    bounds = segments(switches)
    low = np.zeros(T)
    high = np.zeros(T)
    high_targets = np.full(T, np.nan)
    termination_targets = np.zeros(T)
    next_segment_advantage = 0.0  # A_H,k+1
    for k in reversed(range(len(bounds))):
        s_k, e_k = bounds[k]
        d_k = e_k - s_k
        if k + 1 < len(bounds):
            next_high = v_high[bounds[k + 1][0]]
        elif not done and bootstrap_truncated:
            next_high = v_high[s_k]
        else:
            next_high = 0.0

        # low level: turn GAE, restarted in each segment
        next_turn_advantage = 0.0  # A_L,t+1
        for t in reversed(range(s_k, e_k)):
            next_value = v_low[t + 1] if t + 1 < e_k else next_high
            delta = rewards[t] + gamma * next_value - v_low[t]
            next_turn_advantage = delta + gamma * lambda_turn * next_turn_advantage
            low[t] = next_turn_advantage

        # termination: the segment's return from turn t, bootstrapped with next_high(k)
        segment_return = next_high  # G_{e_k}^seg
        for t in reversed(range(s_k, e_k)):
            segment_return = rewards[t] + gamma * segment_return
            termination_targets[t] = segment_return

        # high level: one SMDP step per segment
        R_k = float(np.sum(gamma ** np.arange(d_k) * rewards[s_k:e_k]))
        delta_k = R_k + gamma**d_k * next_high - v_high[s_k]
        next_segment_advantage = delta_k + gamma**d_k * lambda_segment * next_segment_advantage
        high[s_k] = next_segment_advantage
        high_targets[s_k] = next_segment_advantage + v_high[s_k]

    return HAE(
        low=low,
        high=high,
        termination=termination_targets - v_term,
        low_targets=low + v_low,
        high_targets=high_targets,
        termination_targets=termination_targets,
        boundary=segment_starts(switches),
    )


def normalized(values: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """(x - mean) / (std + eps) with mean and population std (ddof = 0) over the entries where `mask` is True
    (all if None), as HiPER's `norm_adv` whitens each advantage over the turns that carry it; entries outside the
    mask become 0. With fewer than 2 masked entries the std is undefined: they are only centred (a single entry
    becomes 0), and no entries give all zeros.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.ones(values.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != values.shape:
        raise ValueError(f"mask has shape {mask.shape} but values have shape {values.shape}")
    out = np.zeros_like(values)
    chosen = values[mask]
    if len(chosen) == 0:
        return out
    centred = chosen - chosen.mean()
    out[mask] = centred / (chosen.std(ddof=0) + eps) if len(chosen) >= 2 else centred
    return out
