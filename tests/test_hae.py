"""HiPER's hierarchical advantage estimation (arXiv 2602.16165): every level against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.hae import hierarchical_advantages, normalized, segment_starts, segments

# Two segments, [0, 2) and [2, 5). V_H is 7.0 off the segment starts: it must never be read there.
REWARDS = [1.0, -1.0, 0.5, 0.0, 2.0]
SWITCHES = [True, False, True, False, False]
V_HIGH = [1.5, 7.0, 3.0, 7.0, 7.0]
V_LOW = [0.2, 0.4, 0.6, 0.8, 1.0]
V_TERM = [0.1, 0.2, 0.3, 0.4, 0.5]
KNOBS = dict(gamma=0.9, lambda_turn=0.8, lambda_segment=0.5)


def two_segments(**kw):
    args = dict(rewards=REWARDS, switches=SWITCHES, v_high=V_HIGH, v_low=V_LOW, v_term=V_TERM) | KNOBS | kw
    return hierarchical_advantages(**args)


def test_segments_start_at_turn_zero_and_at_each_switch():
    assert segment_starts([False, False, True, False, True]).tolist() == [True, False, True, False, True]
    assert segments([False, False, True, False, True]) == [(0, 2), (2, 4), (4, 5)]
    assert segments([True]) == [(0, 1)]
    assert segments([0, 1, 1]) == [(0, 1), (1, 2), (2, 3)]


def test_one_segment_by_hand():
    out = hierarchical_advantages(
        [1.0, 0.0, 2.0], [True, False, False], [2.0, 9.0, 9.0], [0.5, 1.0, 1.5], [1.0, 0.5, 0.2], gamma=0.9,
        lambda_turn=0.8,
    )  # fmt: skip
    # low: delta_2 = 2 - 1.5 = 0.5; delta_1 = 0 + 0.9*1.5 - 1 = 0.35; delta_0 = 1 + 0.9*1 - 0.5 = 1.4
    # A_L,1 = 0.35 + 0.72*0.5 = 0.71; A_L,0 = 1.4 + 0.72*0.71 = 1.9112
    assert out.low == pytest.approx([1.9112, 0.71, 0.5])
    assert out.low_targets == pytest.approx([1.9112 + 0.5, 0.71 + 1.0, 0.5 + 1.5])
    # high: R_0 = 1 + 0.9*0 + 0.81*2 = 2.62; done, so A_H,0 = 2.62 - 2.0
    assert out.high == pytest.approx([0.62, 0.0, 0.0])
    assert out.high_targets[0] == pytest.approx(2.62)
    assert np.isnan(out.high_targets[1:]).all()
    # termination: G_2 = 2; G_1 = 0.9*2 = 1.8; G_0 = 1 + 0.9*1.8 = 2.62
    assert out.termination_targets == pytest.approx([2.62, 1.8, 2.0])
    assert out.termination == pytest.approx([2.62 - 1.0, 1.8 - 0.5, 2.0 - 0.2])
    assert out.boundary.tolist() == [True, False, False]


def test_several_segments_by_hand():
    out = two_segments()
    # segment 1 = turns 2..4, done: next_high = 0
    #   delta_4 = 2 - 1 = 1; delta_3 = 0 + 0.9*1 - 0.8 = 0.1; delta_2 = 0.5 + 0.9*0.8 - 0.6 = 0.62
    #   A_L,4 = 1; A_L,3 = 0.1 + 0.72*1 = 0.82; A_L,2 = 0.62 + 0.72*0.82 = 1.2104
    # segment 0 = turns 0..1, next_high = V_H(2) = 3
    #   delta_1 = -1 + 0.9*3 - 0.4 = 1.3; delta_0 = 1 + 0.9*0.4 - 0.2 = 1.16; A_L,0 = 1.16 + 0.72*1.3 = 2.096
    assert out.low == pytest.approx([2.096, 1.3, 1.2104, 0.82, 1.0])
    assert out.low_targets == pytest.approx([2.296, 1.7, 1.8104, 1.62, 2.0])
    # R_1 = 0.5 + 0.9*0 + 0.81*2 = 2.12; A_H,1 = 2.12 - 3 = -0.88
    # R_0 = 1 - 0.9 = 0.1; delta_0 = 0.1 + 0.9^2*3 - 1.5 = 1.03; A_H,0 = 1.03 + 0.9^2*0.5*(-0.88) = 0.6736
    assert out.high == pytest.approx([0.6736, 0.0, -0.88, 0.0, 0.0])
    assert out.high_targets[[0, 2]] == pytest.approx([0.6736 + 1.5, -0.88 + 3.0])
    assert np.isnan(out.high_targets[[1, 3, 4]]).all()
    assert out.boundary.tolist() == [True, False, True, False, False]


def test_termination_targets_are_segment_returns_bootstrapped_with_the_next_high_value():
    out = two_segments()
    # segment 1: G_4 = 2; G_3 = 0.9*2 = 1.8; G_2 = 0.5 + 0.9*1.8 = 2.12
    # segment 0: G_1 = -1 + 0.9*V_H(2) = 1.7; G_0 = 1 + 0.9*1.7 = 2.53
    assert out.termination_targets == pytest.approx([2.53, 1.7, 2.12, 1.8, 2.0])
    assert out.termination == pytest.approx([2.43, 1.5, 1.82, 1.4, 1.5])


def test_turn_zero_starts_a_segment_whatever_it_said():
    keep_first = two_segments(switches=[False, False, True, False, False])
    assert keep_first.low == pytest.approx(two_segments().low)
    assert keep_first.high == pytest.approx(two_segments().high)
    assert keep_first.boundary.tolist() == [True, False, True, False, False]


def test_truncated_episode_bootstraps_the_last_segment_with_its_own_high_value():
    out = two_segments(done=False, bootstrap_truncated=True)
    # segment 1 hands over V_H(2) = 3:
    #   delta_4 = 2 + 0.9*3 - 1 = 3.7; A_L,3 = 0.1 + 0.72*3.7 = 2.764; A_L,2 = 0.62 + 0.72*2.764 = 2.61008
    assert out.low == pytest.approx([2.096, 1.3, 2.61008, 2.764, 3.7])
    #   A_H,1 = 2.12 + 0.9^3*3 - 3 = 1.307; A_H,0 = 1.03 + 0.81*0.5*1.307 = 1.559335
    assert out.high == pytest.approx([1.559335, 0.0, 1.307, 0.0, 0.0])
    #   G_4 = 2 + 0.9*3 = 4.7; G_3 = 0.9*4.7 = 4.23; G_2 = 0.5 + 0.9*4.23 = 4.307
    assert out.termination_targets == pytest.approx([2.53, 1.7, 4.307, 4.23, 4.7])


def test_truncated_episode_without_bootstrap_ends_like_a_finished_one():
    out = two_segments(done=False, bootstrap_truncated=False)
    assert out.low == pytest.approx([2.096, 1.3, 1.2104, 0.82, 1.0])
    assert out.high == pytest.approx([0.6736, 0.0, -0.88, 0.0, 0.0])
    assert out.termination_targets == pytest.approx([2.53, 1.7, 2.12, 1.8, 2.0])
    # bootstrap_truncated only matters when the episode was cut
    assert two_segments(done=True, bootstrap_truncated=True).low == pytest.approx(out.low)


def test_low_level_recursion_never_crosses_a_segment_boundary():
    # a reward after the boundary changes A_L after it, never A_L before it
    later = two_segments(rewards=[1.0, -1.0, 0.5, 5.0, 2.0])
    assert later.low[:2] == pytest.approx([2.096, 1.3])
    assert later.low[2:] != pytest.approx([1.2104, 0.82, 1.0])
    # nor does V_L of the next segment's first turn: the boundary bootstraps with V_H there
    assert two_segments(v_low=[0.2, 0.4, 5.0, 0.8, 1.0]).low[:2] == pytest.approx([2.096, 1.3])
    # only the bootstrap value carries the future across: V_H(2) = 4 gives
    # A_L,1 = -1 + 0.9*4 - 0.4 = 2.2; A_L,0 = 1.16 + 0.72*2.2 = 2.744
    assert two_segments(v_high=[1.5, 7.0, 4.0, 7.0, 7.0]).low[:2] == pytest.approx([2.744, 2.2])


def test_lambda_turn_weights_the_turn_recursion():
    # lambda_turn = 0: A_L,t = delta_t (one-step TD errors)
    assert two_segments(lambda_turn=0.0).low == pytest.approx([1.16, 1.3, 0.62, 0.1, 1.0])
    # lambda_turn = 1: A_L,3 = 0.1 + 0.9*1 = 1.0; A_L,2 = 0.62 + 0.9*1.0 = 1.52; A_L,0 = 1.16 + 0.9*1.3 = 2.33
    assert two_segments(lambda_turn=1.0).low == pytest.approx([2.33, 1.3, 1.52, 1.0, 1.0])
    assert two_segments(lambda_turn=0.0).high == pytest.approx(two_segments().high)  # the high level ignores it


def test_lambda_segment_weights_the_segment_recursion():
    # lambda_segment = 0: A_H,0 = delta_0 = 1.03; = 1: A_H,0 = 1.03 + 0.81*(-0.88) = 0.3172
    assert two_segments(lambda_segment=0.0).high == pytest.approx([1.03, 0.0, -0.88, 0.0, 0.0])
    assert two_segments(lambda_segment=1.0).high == pytest.approx([0.3172, 0.0, -0.88, 0.0, 0.0])
    assert two_segments(lambda_segment=0.0).low == pytest.approx(two_segments().low)  # the low level ignores it


def test_high_level_discounts_a_segment_by_gamma_to_its_length():
    # segments of 3 and 2 turns: [0, 3), [3, 5); zero rewards isolate the bootstrap terms
    out = hierarchical_advantages(
        [0.0] * 5, [True, False, False, True, False], [1.0, 0, 0, 2.0, 0], [0.0] * 5, [0.0] * 5, gamma=0.5,
        lambda_segment=1.0, done=False,
    )  # fmt: skip
    # A_H,1 = 0.5^2*2 - 2 = -1.5; A_H,0 = 0.5^3*2 - 1 + 0.5^3*(-1.5) = -0.9375
    assert out.high[[0, 3]] == pytest.approx([-0.9375, -1.5])
    # R_k discounts inside the segment: R_0 = 1 + 0.5*2 + 0.25*4 = 3
    out = hierarchical_advantages([1.0, 2.0, 4.0], [True, False, False], [0.0] * 3, [0.0] * 3, [0.0] * 3, gamma=0.5)
    assert out.high[0] == pytest.approx(3.0)


def test_gamma_one_and_zero():
    # gamma = 1 (HiPER's default): undiscounted segment sums
    out = two_segments(gamma=1.0, lambda_turn=1.0, lambda_segment=1.0)
    # A_H,1 = (0.5 + 0 + 2) - 3 = -0.5; A_H,0 = (1 - 1) + 3 - 1.5 - 0.5 = 1.0
    assert out.high[[0, 2]] == pytest.approx([1.0, -0.5])
    # A_L,t = (reward-to-go in the segment) + next_high - V_L(t): 0 + 3 - 0.2, -1 + 3 - 0.4, 2.5 - 0.6, 2 - 0.8, 2 - 1
    assert out.low == pytest.approx([2.8, 1.6, 1.9, 1.2, 1.0])
    # gamma = 0: every level sees only its own first reward
    out = two_segments(gamma=0.0)
    assert out.low == pytest.approx([0.8, -1.4, -0.1, -0.8, 1.0])
    assert out.high[[0, 2]] == pytest.approx([-0.5, -2.5])
    assert out.termination_targets == pytest.approx(REWARDS)


def test_normalized_over_all_entries():
    std = math.sqrt(1.25)  # population std of [1, 2, 3, 4] around 2.5
    assert normalized(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(np.array([-1.5, -0.5, 0.5, 1.5]) / std)
    assert normalized(np.array([2.0, 2.0])) == pytest.approx([0.0, 0.0])


def test_normalized_over_a_mask():
    values = np.array([1.0, 100.0, 3.0, -7.0])
    # masked entries 1 and 3: mean 2, population std 1; the rest become 0
    out = normalized(values, np.array([True, False, True, False]))
    assert out == pytest.approx([-1 / (1 + 1e-6), 0.0, 1 / (1 + 1e-6), 0.0], rel=1e-9)
    assert normalized(values, np.array([True, False, True, False]), eps=1.0) == pytest.approx([-0.5, 0.0, 0.5, 0.0])
    # one entry is only centred, none gives zeros
    assert normalized(values, np.array([False, True, False, False])) == pytest.approx([0.0] * 4)
    assert normalized(values, np.zeros(4, dtype=bool)) == pytest.approx([0.0] * 4)
    with pytest.raises(ValueError, match="mask"):
        normalized(values, np.array([True, False]))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rewards=[]), "T >= 1"),
        (dict(v_low=[0.0] * 4), "v_low has 4 entries"),
        (dict(switches=[True, False]), "switches has 2 entries"),
        (dict(v_high=[1.0, np.nan, 0.0, 0.0, 0.0]), "v_high must be finite"),
        (dict(rewards=[1.0, 0.0, np.inf, 0.0, 0.0]), "rewards must be finite"),
        (dict(v_term=[[0.0] * 5]), "v_term must be 1-D"),
        (dict(switches=["SWITCH", "KEEP", "KEEP", "KEEP", "KEEP"]), "switches must be bools"),
        (dict(switches=[2, 0, 0, 0, 0]), "switches must be bools"),
        (dict(gamma=1.5), "gamma must lie in"),
        (dict(lambda_turn=-0.1), "lambda_turn must lie in"),
        (dict(lambda_segment=2.0), "lambda_segment must lie in"),
    ],
)
def test_input_errors_say_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        two_segments(**change)
