"""Self-play preference games, tabular: Nash-MD, INPO, Nash Mirror Prox and DNO on a preference matrix (numpy).

The game (NLHF, "Nash Learning from Human Feedback", arXiv 2312.00886): with a preference P(y > y') and a
reference mu,

    pi*_tau = argmax_pi min_pi'  P(pi > pi') - tau KL(pi || mu) + tau KL(pi' || mu),

whose symmetric equilibrium is the fixed point pi*(y) ∝ mu(y) exp(P(y > pi*) / tau).

Tabular updates on a preference matrix P[y, y'] = P(y > y'), P(y > pi) = (P pi)(y):

    Nash-MD:      pi_t^mu ∝ pi_t^(1 - eta tau) mu^(eta tau);  pi_{t+1}(y) ∝ pi_t^mu(y) exp(eta P(y > pi_t^mu))
    INPO:         pi_{t+1}(y) ∝ pi_t(y)^(1 - eta tau) mu(y)^(eta tau) exp(eta P(y > pi_t))
    Mirror Prox:  two prox steps from pi_k, against pi_k and then against the half step (`mirror_prox_step`)
    DNO:          pi_{t+1}(y) ∝ pi_t(y) exp(eta P(y > pi_t))  (no reference: it solves the unregularised game)

INPO's and Mirror Prox's fixed points are exactly pi*_tau (with beta = tau); Nash-MD's last iterate reaches
it up to O(eta / tau) (its theorem: KL(pi* || pi_{t+1}) <= (1 - eta tau) KL(pi* || pi_t) + 2 eta^2).
`regularized_nash` solves the game a different way, by maximising the max player's concave objective after
the inner minimum is taken in closed form; it is the reference the updates are tested against.

The LLM trainer of the INPO update is `trainers.inpo` (INPO, arXiv 2407.00617).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) = sum_y p(y) log(p(y) / q(y)), with 0 log 0 = 0."""
    support = p > 0
    return float(np.sum(p[support] * (np.log(p[support]) - np.log(q[support]))))


def geometric_mixture(pi: np.ndarray, mu: np.ndarray, weight: float) -> np.ndarray:
    """pi^(1 - weight) mu^weight, normalised."""
    return softmax((1.0 - weight) * np.log(pi) + weight * np.log(mu))


def nash_md_step(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, *, eta: float, tau: float) -> np.ndarray:
    """pi_{t+1} ∝ pi_t^mu exp(eta P(y > pi_t^mu)), pi_t^mu ∝ pi_t^(1 - eta tau) mu^(eta tau)."""
    mixture = geometric_mixture(pi, mu, eta * tau)
    return softmax(np.log(mixture) + eta * P @ mixture)


def inpo_step(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, *, eta: float, tau: float) -> np.ndarray:
    """pi_{t+1} ∝ pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t))."""
    return softmax((1.0 - eta * tau) * np.log(pi) + eta * tau * np.log(mu) + eta * P @ pi)


def prox_step(
    center: np.ndarray, opponent: np.ndarray, P: np.ndarray, mu: np.ndarray, *, eta: float, beta: float
) -> np.ndarray:
    """The regularised best response to `opponent` that stays near `center` (one prox step of Nash Mirror Prox):

        argmax_pi P(pi > q) - beta KL(pi || mu) - (1/eta) KL(pi || c)
          ∝ exp((P q + beta log mu + (1/eta) log c) / (beta + 1/eta))
          = c^(1/(1 + eta beta)) mu^(eta beta/(1 + eta beta)) exp(eta/(1 + eta beta) P q),

    from the stationarity condition P q - beta (log pi - log mu + 1) - (1/eta)(log pi - log c + 1) = lambda
    on the simplex (the objective is strictly concave, so this is the maximiser)."""
    inverse_eta = 1.0 / eta
    return softmax((P @ opponent + beta * np.log(mu) + inverse_eta * np.log(center)) / (beta + inverse_eta))


def mirror_prox_step(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, *, eta: float, beta: float) -> np.ndarray:
    """One Nash Mirror Prox iteration ("Accelerating Nash Learning from Human Feedback via Mirror Prox",
    arXiv 2505.19731), an extragradient pair of `prox_step`s, both centred on pi_k:

        pi_{k+1/2} = argmax_pi P(pi > pi_k)       - beta KL(pi || mu) - (1/eta) KL(pi || pi_k)
        pi_{k+1}   = argmax_pi P(pi > pi_{k+1/2}) - beta KL(pi || mu) - (1/eta) KL(pi || pi_k)

    Its fixed point (pi = pi_{k+1/2} = pi_k) is pi ∝ mu exp(P pi / beta), the regularised equilibrium with
    tau = beta; the paper proves last-iterate linear convergence KL(pi* || pi_N) = O((1 + 2 beta)^(-N/2)) in the
    number N of preference queries (two per iteration)."""
    half = prox_step(pi, pi, P, mu, eta=eta, beta=beta)
    return prox_step(pi, half, P, mu, eta=eta, beta=beta)


def dno_step(pi: np.ndarray, P: np.ndarray, *, eta: float) -> np.ndarray:
    """One round of Direct Nash Optimization in population form ("Direct Nash Optimization: Teaching Language
    Models to Self-Improve with General Preferences", arXiv 2404.03715): the soft policy iteration of its
    Algorithm 1,

        pi_{t+1}(y) ∝ pi_t(y) exp(eta r_t(y)),  r_t(y) = P(y > pi_t) = (P pi_t)(y),

    written with the step eta of the other updates (the paper writes exp(r_t / eta'), eta = 1/eta'). This is
    the exact minimiser over all policies of the round's expected regression loss on pairs y, y' ~ pi_t with
    the moving reference pi_t,
        -E σ(r_t(y) - r_t(y')) log σ((1/eta)[log pi(y)/pi_t(y) - log pi(y')/pi_t(y')]),
    since it sets each pair's predicted log-odds to r_t(y) - r_t(y'). (DPO with hard labels y_w > y_l drawn from
    P has a different minimiser unless P is Bradley-Terry.) There is no KL to a fixed reference: this is
    multiplicative weights in self-play, so on a game with a Condorcet winner it concentrates on the winner, but
    on an intransitive game its last iterate spirals away from the Nash equilibrium and only its average
    approaches it."""
    return softmax(np.log(pi) + eta * P @ pi)


def last_iterate(step, P: np.ndarray, mu: np.ndarray, *, iterations: int, pi0: np.ndarray | None = None, **params):
    """pi_T after `iterations` updates pi_{t+1} = step(pi_t, P, mu, **params) from pi0 (default mu)."""
    pi = np.asarray(mu if pi0 is None else pi0, dtype=np.float64)
    for _ in range(iterations):
        pi = step(pi, P, mu, **params)
    return pi


def iterates(update: Callable[[np.ndarray], np.ndarray], pi0: np.ndarray, iterations: int) -> np.ndarray:
    """The trajectory pi_0, ..., pi_T of pi_{t+1} = update(pi_t), as a (T + 1, actions) array."""
    trajectory = [np.asarray(pi0, dtype=np.float64)]
    for _ in range(iterations):
        trajectory.append(update(trajectory[-1]))
    return np.stack(trajectory)


def iterations_to_tolerance(
    update: Callable[[np.ndarray], np.ndarray],
    pi0: np.ndarray,
    target: np.ndarray,
    *,
    tol: float,
    max_iterations: int,
) -> tuple[int | None, float]:
    """The first t with KL(target || pi_t) < tol for pi_{t+1} = update(pi_t) (None if none up to max_iterations),
    and the last KL reached; compares the last-iterate speed of different updates towards the same point."""
    pi = np.asarray(pi0, dtype=np.float64)
    for t in range(max_iterations + 1):
        gap = kl_divergence(target, pi)
        if gap < tol:
            return t, gap
        if t < max_iterations:
            pi = update(pi)
    return None, gap


def regularized_value(pi: np.ndarray, P: np.ndarray, mu: np.ndarray, tau: float) -> float:
    """The max player's objective with the min player's best response in closed form:
    min_pi' pi^T P pi' + tau KL(pi' || mu) = -tau log sum_y' mu(y') exp(-(P^T pi)(y') / tau), minus tau KL(pi || mu)."""
    inner = -tau * logsumexp(np.log(mu) - (P.T @ pi) / tau)
    return float(inner - tau * np.sum(pi * (np.log(pi) - np.log(mu))))


def regularized_nash(P: np.ndarray, mu: np.ndarray, tau: float) -> np.ndarray:
    """pi*_tau by maximising `regularized_value` (concave in pi) over softmax logits with BFGS and the exact
    gradient."""
    log_mu = np.log(mu)

    def negative(z):
        pi = softmax(z)
        best_response = softmax(log_mu - (P.T @ pi) / tau)  # the min player's pi'
        grad_pi = P @ best_response - tau * (np.log(pi) - log_mu + 1.0)
        grad_z = pi * (grad_pi - pi @ grad_pi)  # (diag(pi) - pi pi^T) grad_pi
        return -regularized_value(pi, P, mu, tau), -grad_z

    result = minimize(negative, log_mu.copy(), jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 10_000})
    return softmax(result.x)
