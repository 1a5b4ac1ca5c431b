"""Self-play preference games: Nash-MD and INPO, tabular and on an LLM (Nash-MD: "Nash Learning from Human Feedback",
arXiv 2312.00886; INPO: arXiv 2407.00617).

The game (NLHF, arXiv 2312.00886): with a preference P(y > y') and a reference mu,

    pi*_tau = argmax_pi min_pi'  P(pi > pi') - tau KL(pi || mu) + tau KL(pi' || mu),

whose symmetric equilibrium is the fixed point pi*(y) ∝ mu(y) exp(P(y > pi*) / tau).

Tabular updates on a preference matrix P[y, y'] = P(y > y') (numpy), P(y > pi) = (P pi)(y):

    Nash-MD:  pi_t^mu ∝ pi_t^(1 - eta tau) mu^(eta tau);  pi_{t+1}(y) ∝ pi_t^mu(y) exp(eta P(y > pi_t^mu))
    INPO:     pi_{t+1}(y) ∝ pi_t(y)^(1 - eta tau) mu(y)^(eta tau) exp(eta P(y > pi_t))

INPO's fixed point is exactly pi*_tau; Nash-MD's last iterate reaches it up to O(eta / tau) (its
theorem: KL(pi* || pi_{t+1}) <= (1 - eta tau) KL(pi* || pi_t) + 2 eta^2). `regularized_nash`
solves the game a different way, by maximising the max player's concave objective after the
inner minimum is taken in closed form.

The LLM trainer of the same update is `trainers.inpo` (INPO, arXiv 2407.00617).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax


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


def last_iterate(
    step, P: np.ndarray, mu: np.ndarray, *, eta: float, tau: float, iterations: int, pi0: np.ndarray | None = None
) -> np.ndarray:
    """pi_T after `iterations` updates from pi0 (default mu)."""
    pi = np.asarray(mu if pi0 is None else pi0, dtype=np.float64)
    for _ in range(iterations):
        pi = step(pi, P, mu, eta=eta, tau=tau)
    return pi


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
