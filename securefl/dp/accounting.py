"""Privacy accounting for the distributed discrete Gaussian and Skellam mechanisms.

Two bounds are implemented by hand, because no accounting library has them; both are
turned into (xi, rho)-zero-concentrated-DP events (an RDP curve ``xi + rho * alpha``)
that Google's ``dp_accounting`` then composes over rounds and converts to
(epsilon, delta) with its RDP accountant:

* **Distributed discrete Gaussian** -- Kairouz, Liu, Steinke, "The Distributed Discrete
  Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021
  (arXiv:2102.06387), Proposition 14, the RDP bound behind their Theorem 1: the sum
  of n independent N_Z(0, sigma^2) vectors in Z^D added to integer inputs with
  ||A - A'||_1 <= Delta_1, ||A - A'||_2 <= Delta_2 has, with l2 = Delta_2 / (sqrt(n)
  sigma), l1 = Delta_1 / (sqrt(n) sigma) and
  tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)),

      eps(alpha) = min( alpha/2 l2^2 + tau D,
                        alpha/2 (l2^2 + 2 l1 tau + tau^2 D),
                        alpha/2 (l2 + sqrt(D) tau)^2 ).

  Each term is a line in alpha: three (xi, rho) events, all composed, smallest epsilon
  kept. For tau = 0 all three are the Gaussian mechanism's rho = l2^2 / 2.
* **Distributed Skellam** -- Agarwal, Kairouz, Liu, "The Skellam Mechanism for
  Differentially Private Federated Learning", NeurIPS 2021, Theorem 3.5: Skellam noise
  of variance mu (Poisson(mu/2) - Poisson(mu/2) per coordinate) gives, for integer
  orders alpha > 1,

      eps(alpha) = alpha Delta_2^2 / (2 mu)
                   + min( ((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 mu^2),  3 Delta_1 / (2 mu) ).

  Each branch of the ``min`` is a line in alpha, i.e. a (xi, rho) pair; both are valid
  upper bounds, so the accountant runs both and keeps the smaller epsilon. The sum of
  n clients' Skellam noise is Skellam with variance n mu (closed under sums).

Composition uses integer orders only (2..256 and a few larger), where AKL's theorem is
stated. As sigma (or mu) grows, both bounds tend to the continuous Gaussian
mechanism's rho = Delta_2^2 / (2 sigma_total^2); ``tests/dp/test_accounting.py`` checks
the composed epsilon against ``dp_accounting``'s own ``GaussianDpEvent`` there.
"""

from __future__ import annotations

import math

try:
    import dp_accounting  # type: ignore[import-untyped]
except ModuleNotFoundError as exc:  # tests/cli/test_cli_errors.py hides the module
    if exc.name != "dp_accounting":
        raise
    raise ModuleNotFoundError(
        "securefl.dp composes privacy loss with Google's dp-accounting: pip install 'securefl[dp]'",
        name="dp_accounting",
    ) from None
import numpy as np

__all__ = [
    "ORDERS",
    "compose_epsilon",
    "ddg_events",
    "ddg_rdp",
    "gaussian_epsilon",
    "skellam_events",
    "skellam_rdp",
]

ORDERS: tuple[int, ...] = (*range(2, 257), 320, 384, 512, 768, 1024)
"""Integer Renyi orders used for every mechanism (AKL's Theorem 3.5 needs integer alpha)."""


def _ddg_terms(
    delta2: float, delta1: float, sigma: float, clients: int, dimension: int
) -> tuple[float, float, float]:
    if not (sigma > 0 and clients >= 1 and dimension >= 1 and delta2 >= 0 and delta1 >= 0):
        raise ValueError("need sigma > 0, clients >= 1, dimension >= 1, sensitivities >= 0")
    k = np.arange(1, clients, dtype=np.float64)
    tau = 10.0 * float(np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1))))
    scale = math.sqrt(clients) * sigma
    return delta2 / scale, delta1 / scale, tau


def ddg_rdp(
    alpha: float, delta2: float, delta1: float, sigma: float, clients: int, dimension: int
) -> float:
    """KLS 2021 Proposition 14: the RDP of order ``alpha`` of n discrete Gaussians.

    Parameters
    ----------
    alpha:
        The Renyi order, > 1.
    delta2, delta1:
        L2 and L1 sensitivity of the integer inputs.
    sigma:
        Each client's discrete Gaussian parameter (integer units), > 0.
    clients:
        n, how many clients' noise is in the sum (the worst case: fewest survivors).
    dimension:
        D, the number of noisy coordinates.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    if not alpha > 1:
        raise ValueError(f"alpha must be > 1, got {alpha}")
    l2, l1, tau = _ddg_terms(delta2, delta1, sigma, clients, dimension)
    return min(
        alpha / 2 * l2**2 + tau * dimension,
        alpha / 2 * (l2**2 + 2 * l1 * tau + tau**2 * dimension),
        alpha / 2 * (l2 + math.sqrt(dimension) * tau) ** 2,
    )


def ddg_events(
    delta2: float, delta1: float, sigma: float, clients: int, dimension: int
) -> tuple[dp_accounting.DpEvent, ...]:
    """One round of the distributed discrete Gaussian: Proposition 14's three lines."""
    l2, l1, tau = _ddg_terms(delta2, delta1, sigma, clients, dimension)
    return (
        dp_accounting.ZCDpEvent(rho=l2**2 / 2, xi=tau * dimension),
        dp_accounting.ZCDpEvent(rho=(l2**2 + 2 * l1 * tau + tau**2 * dimension) / 2),
        dp_accounting.ZCDpEvent(rho=(l2 + math.sqrt(dimension) * tau) ** 2 / 2),
    )


def skellam_rdp(alpha: int, delta2: float, delta1: float, mu: float) -> float:
    """AKL 2021 Theorem 3.5: the RDP of order ``alpha`` of Skellam noise of variance mu.

    Raises
    ------
    ValueError
        If ``alpha`` is not an integer > 1 or ``mu`` <= 0.
    """
    if int(alpha) != alpha or alpha <= 1 or not mu > 0:
        raise ValueError("alpha must be an integer > 1 and mu > 0")
    head = alpha * delta2**2 / (2 * mu)
    tail = min(((2 * alpha - 1) * delta2**2 + 6 * delta1) / (4 * mu**2), 3 * delta1 / (2 * mu))
    return head + tail


def skellam_events(delta2: float, delta1: float, mu: float) -> tuple[dp_accounting.DpEvent, ...]:
    """The two branches of AKL Theorem 3.5 as (xi, rho) events; each bounds eps(alpha).

    ``((2a - 1) D2^2 + 6 D1) / (4 mu^2) = a D2^2 / (2 mu^2) + (6 D1 - D2^2) / (4 mu^2)``;
    a negative xi is raised to 0 (looser, still valid: the library refuses xi < 0).
    """
    if not mu > 0:
        raise ValueError("mu must be > 0")
    rho = delta2**2 / (2 * mu)
    first = dp_accounting.ZCDpEvent(
        rho=rho + delta2**2 / (2 * mu**2), xi=max(0.0, (6 * delta1 - delta2**2) / (4 * mu**2))
    )
    second = dp_accounting.ZCDpEvent(rho=rho, xi=3 * delta1 / (2 * mu))
    return first, second


def compose_epsilon(
    events: tuple[dp_accounting.DpEvent, ...] | dp_accounting.DpEvent, rounds: int, delta: float
) -> float:
    """epsilon at ``delta`` after ``rounds`` rounds, each satisfying every event given.

    Every event bounds the same round's mechanism; each is composed ``rounds`` times by
    ``dp_accounting.rdp.RdpAccountant`` and the smallest epsilon is kept.

    Raises
    ------
    ValueError
        If ``rounds`` < 1 or ``delta`` is not in (0, 1).
    """
    if rounds < 1 or not 0 < delta < 1:
        raise ValueError(f"need rounds >= 1 and 0 < delta < 1, got {rounds}, {delta}")
    if isinstance(events, dp_accounting.DpEvent):
        events = (events,)
    best = math.inf
    for event in events:
        accountant = dp_accounting.rdp.RdpAccountant(orders=ORDERS)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
        best = min(best, float(accountant.get_epsilon(delta)))
    return best


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The continuous Gaussian mechanism's epsilon from ``dp_accounting`` (the reference)."""
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    return compose_epsilon(event, rounds, delta)
