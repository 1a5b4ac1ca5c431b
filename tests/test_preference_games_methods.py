"""Tabular Nash Mirror Prox and DNO next to Nash-MD and INPO: each update by hand, its direction, its fixed point,
its last iterate against `regularized_nash`, and the number of iterations each needs to reach it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit, softmax

from solvers.preference_games import (
    dno_step,
    inpo_step,
    iterates,
    iterations_to_tolerance,
    kl_divergence,
    last_iterate,
    mirror_prox_step,
    nash_md_step,
    prox_step,
    regularized_nash,
)

RPS = 0.5 + 0.5 * np.array([[0, 1, -1], [-1, 0, 1], [1, -1, 0]])  # P(y > y'): rock, paper, scissors
A, B, C = 0.3, 0.2, 0.4
CYCLE = 0.5 + np.array([[0, A, -B], [-A, 0, C], [B, -C, 0]])  # Nash ∝ (c, b, a)
MU = np.array([0.6, 0.3, 0.1])  # a reference that favours rock
# action 0 beats both others (a Condorcet winner), 1 beats 2
CONDORCET = np.array([[0.5, 0.7, 0.6], [0.3, 0.5, 0.8], [0.4, 0.2, 0.5]])

PI = np.array([1 / 2, 1 / 4, 1 / 4])
REF = np.array([1 / 8, 1 / 4, 5 / 8])
# RPS against PI: P PI = 1/2 + 1/2 (PI[1] - PI[2], PI[2] - PI[0], PI[0] - PI[1]) = (1/2, 3/8, 5/8)
RPS_PI = np.array([1 / 2, 3 / 8, 5 / 8])


def rps_against(q):
    return 0.5 + 0.5 * np.array([q[1] - q[2], q[2] - q[0], q[0] - q[1]])


def normalise(w):
    return np.asarray(w) / np.sum(w)


def test_rps_against_pi_by_hand():
    assert RPS @ PI == pytest.approx(RPS_PI) and rps_against(PI) == pytest.approx(RPS_PI)


# --- each update by hand on a 3-action table -------------------------------------------------------


def test_mirror_prox_step_by_hand():
    # eta = 1, beta = 3: each prox step is c^(1/4) mu^(3/4) exp(P q / 4), centred on PI both times
    half = normalise(
        [
            (1 / 2) ** 0.25 * (1 / 8) ** 0.75 * math.exp(1 / 8),
            (1 / 4) ** 0.25 * (1 / 4) ** 0.75 * math.exp(3 / 32),
            (1 / 4) ** 0.25 * (5 / 8) ** 0.75 * math.exp(5 / 32),
        ]
    )
    assert prox_step(PI, PI, RPS, REF, eta=1.0, beta=3.0) == pytest.approx(half, abs=1e-12)
    win = rps_against(half)  # the second step plays against the half step, still centred on PI
    expected = normalise(PI**0.25 * REF**0.75 * np.exp(win / 4))
    assert mirror_prox_step(PI, RPS, REF, eta=1.0, beta=3.0) == pytest.approx(expected, abs=1e-12)
    # not the same as centring the second step on the half step, or as one plain mirror-descent step
    assert np.abs(expected - normalise(half**0.25 * REF**0.75 * np.exp(RPS_PI / 4))).max() > 1e-3
    assert np.abs(expected - half).max() > 1e-3


def test_inpo_and_nash_md_steps_by_hand():
    # eta = 1, tau = 1/2: INPO is PI^(1/2) REF^(1/2) exp(P PI) = (1/4 e^(1/2), 1/4 e^(3/8), sqrt(5/32) e^(5/8))
    expected = normalise([math.exp(1 / 2) / 4, math.exp(3 / 8) / 4, math.sqrt(5 / 32) * math.exp(5 / 8)])
    assert inpo_step(PI, RPS, REF, eta=1.0, tau=0.5) == pytest.approx(expected, abs=1e-12)
    # Nash-MD plays against the mixture m ∝ PI^(1/2) REF^(1/2) = (1/4, 1/4, sqrt(5/32)), from the mixture
    mixture = normalise([1 / 4, 1 / 4, math.sqrt(5 / 32)])
    expected = normalise(mixture * np.exp(rps_against(mixture)))
    assert nash_md_step(PI, RPS, REF, eta=1.0, tau=0.5) == pytest.approx(expected, abs=1e-12)


def test_dno_step_by_hand():
    # eta = 2: PI exp(2 P PI) = (1/2 e, 1/4 e^(3/4), 1/4 e^(5/4)); no reference anywhere
    expected = normalise([math.e / 2, math.exp(3 / 4) / 4, math.exp(5 / 4) / 4])
    assert dno_step(PI, RPS, eta=2.0) == pytest.approx(expected, abs=1e-12)


# --- the closed forms are the maximisers they claim to be -----------------------------------------


def random_game(rng, n):
    M = rng.uniform(size=(n, n))
    return 0.5 + (M - M.T) / 2  # P(y > y') + P(y' > y) = 1


@pytest.mark.parametrize("eta, beta", [(1.0, 0.1), (0.3, 2.0), (5.0, 0.5)])
def test_prox_step_maximises_the_prox_objective(eta, beta):
    rng = np.random.default_rng(1)
    P = random_game(rng, 4)
    center, opponent, mu = rng.dirichlet(np.ones(4), size=3)

    def objective(pi):  # P(pi > q) - beta KL(pi || mu) - (1/eta) KL(pi || c)
        return pi @ P @ opponent - beta * kl_divergence(pi, mu) - kl_divergence(pi, center) / eta

    def negative(z):
        pi = softmax(z)
        grad_pi = P @ opponent - beta * (np.log(pi / mu) + 1) - (np.log(pi / center) + 1) / eta
        return -objective(pi), -pi * (grad_pi - pi @ grad_pi)

    numerical = softmax(minimize(negative, np.zeros(4), jac=True, method="BFGS", options={"gtol": 1e-12}).x)
    closed = prox_step(center, opponent, P, mu, eta=eta, beta=beta)
    assert closed == pytest.approx(numerical, abs=1e-6)
    others = rng.dirichlet(np.ones(4), size=500)
    assert max(objective(p) for p in others) < objective(closed)


def dno_regression_loss(pi, previous, P, eta):
    """DNO's round loss in expectation over all ordered pairs y, y' ~ pi_t (arXiv 2404.03715, Algorithm 1):
    -E σ(r(y) - r(y')) log σ((1/eta)[h(y) - h(y')]), r = P pi_t, h = log pi / pi_t."""
    r, h = P @ previous, np.log(pi / previous)
    weights = np.outer(previous, previous)
    return -np.sum(weights * expit(r[:, None] - r[None, :]) * log_expit((h[:, None] - h[None, :]) / eta))


def hard_label_dpo_loss(pi, previous, P, eta):
    """DPO with the moving reference pi_t on pairs labelled by a draw from P: -E P(y > y') log σ(...)."""
    h = np.log(pi / previous)
    return -np.sum(np.outer(previous, previous) * P * log_expit((h[:, None] - h[None, :]) / eta))


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
def test_dno_step_minimises_its_expected_regression_loss(P):
    eta = 2.0

    def minimiser(loss):
        result = minimize(lambda z: loss(softmax(z), PI, P, eta), np.zeros(3), method="BFGS", options={"gtol": 1e-10})
        return softmax(result.x)

    assert minimiser(dno_regression_loss) == pytest.approx(dno_step(PI, P, eta=eta), abs=1e-5)
    # DPO on hard labels fits sigma(h(y) - h(y')) = P(y > y'), impossible on a cycle: a different policy
    assert np.abs(minimiser(hard_label_dpo_loss) - dno_step(PI, P, eta=eta)).max() > 0.05


# --- direction and fixed points -------------------------------------------------------------------

STEPS = {
    "nash_md": lambda pi, P, mu: nash_md_step(pi, P, mu, eta=0.5, tau=0.3),
    "inpo": lambda pi, P, mu: inpo_step(pi, P, mu, eta=0.5, tau=0.3),
    "mirror_prox": lambda pi, P, mu: mirror_prox_step(pi, P, mu, eta=0.5, beta=0.3),
    "dno": lambda pi, P, mu: dno_step(pi, P, eta=0.5),
}


@pytest.mark.parametrize("name", STEPS)
def test_each_step_moves_toward_the_action_that_beats_the_policy(name):
    # against MU = (0.6, 0.3, 0.1): P(y > MU) = (0.6, 0.25, 0.65); scissors beats it most, paper least.
    # Starting at the reference, the KL terms do not pull anywhere, so only the game moves the policy.
    assert RPS @ MU == pytest.approx([0.6, 0.25, 0.65])
    after = STEPS[name](MU, RPS, MU)
    assert after[2] > MU[2] and after[1] < MU[1], after
    assert np.argmax(after / MU) == 2 and np.argmin(after / MU) == 1


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_fixed_points_are_the_regularised_equilibrium(P, tau):
    star = regularized_nash(P, MU, tau)
    for eta in (0.5, 3.0):
        assert mirror_prox_step(star, P, MU, eta=eta, beta=tau) == pytest.approx(star, abs=1e-8)
        assert prox_step(star, star, P, MU, eta=eta, beta=tau) == pytest.approx(star, abs=1e-8)
        if eta * tau <= 1:
            assert inpo_step(star, P, MU, eta=eta, tau=tau) == pytest.approx(star, abs=1e-8)
    # Nash-MD does not stay there (its bias), nor does DNO, which knows neither mu nor tau
    assert kl_divergence(star, nash_md_step(star, P, MU, eta=0.5, tau=tau)) > 1e-6
    assert kl_divergence(star, dno_step(star, P, eta=0.5)) > 1e-4


# --- last iterates --------------------------------------------------------------------------------


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
@pytest.mark.parametrize(
    "method, tol",
    [("inpo", 1e-12), ("mirror_prox", 1e-12), ("nash_md", 2e-6)],  # Nash-MD: eta = 0.02 keeps its bias small
)
def test_last_iterate_converges_to_the_regularised_equilibrium(P, method, tol):
    tau = 0.3
    star = regularized_nash(P, MU, tau)
    step, eta, regulariser = {
        "inpo": (inpo_step, 0.5, "tau"),
        "mirror_prox": (mirror_prox_step, 0.5, "beta"),
        "nash_md": (nash_md_step, 0.02, "tau"),
    }[method]
    start = np.array([0.1, 0.3, 0.6])  # far from pi*, which is near mu
    last = last_iterate(step, P, MU, eta=eta, iterations=int(40 / (eta * tau)), pi0=start, **{regulariser: tau})
    assert kl_divergence(star, last) < tol
    assert kl_divergence(star, start) > 0.5


def counts(P, *, eta, tau, tol=1e-8, max_iterations=5000):
    star = regularized_nash(P, MU, tau)
    updates = {
        "mirror_prox": lambda pi: mirror_prox_step(pi, P, MU, eta=eta, beta=tau),
        "inpo": lambda pi: inpo_step(pi, P, MU, eta=eta, tau=tau),
        "nash_md": lambda pi: nash_md_step(pi, P, MU, eta=eta, tau=tau),
    }
    return {
        name: iterations_to_tolerance(f, MU, star, tol=tol, max_iterations=max_iterations)
        for name, f in updates.items()
    }


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_mirror_prox_needs_fewer_iterations_than_inpo_and_nash_md(P, eta):
    # same eta, tau = beta = 0.05, from mu, to KL(pi* || pi_t) < 1e-8. Measured: rps 99 vs 978 (eta 1) and 38 vs
    # INPO diverging (eta 2); weighted cycle 144 vs 209 and 64 vs 146. Nash-MD stalls at its bias (5e-4 to 0.25).
    result = counts(P, eta=eta, tau=0.05)
    message = f"(iterations, last KL) at eta={eta}, tau=beta=0.05: {result}"
    mirror_prox, inpo, nash_md = (result[k][0] for k in ("mirror_prox", "inpo", "nash_md"))
    assert mirror_prox is not None and (inpo is None or mirror_prox < inpo), message
    assert nash_md is None and result["nash_md"][1] > 1e-4, message


def test_inpo_is_the_faster_one_when_eta_tau_is_one():
    # the advantage is not universal: at eta tau = 1 INPO jumps to mu exp(eta P pi_t), a contraction with the
    # game's small weight, while each prox step still keeps half of pi_k (measured: INPO 4-5, Mirror Prox 10)
    for P in (RPS, CYCLE):
        result = counts(P, eta=1.0, tau=1.0)
        assert result["inpo"][0] < result["mirror_prox"][0] <= 12, result


# --- DNO: no reference, so no regularised equilibrium ---------------------------------------------


def test_dno_concentrates_on_a_condorcet_winner():
    start = np.array([0.1, 0.3, 0.6])  # the winner starts rare
    trajectory = iterates(lambda pi: dno_step(pi, CONDORCET, eta=1.0), start, 200)
    assert trajectory[-1][0] > 1 - 1e-6
    # near the winner each loser's log-odds against it fall by eta (1/2 - P(y > winner)) a step: 0.2 for 1 and
    # 0.1 for 2, so 2 outlasts 1 although 1 beats 2
    slopes = np.diff(np.log(trajectory[-2:, 1:]) - np.log(trajectory[-2:, :1]), axis=0)[0]
    assert slopes == pytest.approx([-0.2, -0.1], abs=1e-8) and trajectory[-1][2] > trajectory[-1][1]


@pytest.mark.parametrize("P, nash", [(RPS, np.ones(3) / 3), (CYCLE, np.array([C, B, A]) / (A + B + C))])
def test_dno_last_iterate_spirals_out_on_a_cycle_while_its_average_approaches_the_nash(P, nash):
    eta, T = 0.5, 5000
    trajectory = iterates(lambda pi: dno_step(pi, P, eta=eta), MU, T)
    distances = [kl_divergence(nash, pi) for pi in trajectory]
    # multiplicative weights in self-play: with an interior Nash, (P - 1/2) nash = 0, so by Jensen
    # KL(nash || pi_{t+1}) - KL(nash || pi_t) = log E_pi_t exp(eta P pi_t) - eta/2 >= 0
    assert np.all(np.diff(distances) >= -1e-12) and distances[-1] > distances[0] + 1.0
    assert kl_divergence(regularized_nash(P, MU, 0.1), trajectory[-1]) > 1.0  # nowhere near pi*_tau either
    # the average of the played policies is eps-Nash with eps = external regret / T <= log 3 / (eta T) + eta / 8
    average = trajectory[:-1].mean(axis=0)
    exploitability = (P @ average).max() - 0.5
    last = (P @ trajectory[-1]).max() - 0.5
    assert exploitability <= math.log(3) / (eta * T) + eta / 8 and exploitability < 0.01 < 0.1 < last
    assert np.abs(average - nash).max() < 0.02 < np.abs(MU - nash).max()


# --- the runner -----------------------------------------------------------------------------------


def test_iterations_to_tolerance_and_iterates():
    target = np.array([0.5, 0.5])
    start = np.array([0.9, 0.1])
    assert iterations_to_tolerance(lambda pi: target, start, target, tol=1e-8, max_iterations=5) == (1, 0.0)
    assert iterations_to_tolerance(lambda pi: target, target, target, tol=1e-8, max_iterations=5) == (0, 0.0)
    count, gap = iterations_to_tolerance(lambda pi: pi, start, target, tol=1e-8, max_iterations=5)
    assert count is None and gap == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))
    assert iterates(lambda pi: pi[::-1], start, 2) == pytest.approx(np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1]]))
    assert kl_divergence(np.array([1.0, 0.0]), target) == pytest.approx(math.log(2))
