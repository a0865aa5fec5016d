"""The default graph and threshold of a SecAgg session: one rule for every entry point.

``securefl.aggregate``, ``securefl bench``, ``securefl serve`` / ``join`` and the Flower
strategy all derive k and t here when the caller gives no degree or threshold, so the
same federation gets the same parameters whichever way it is run:

- SecAgg+ takes k and t from :func:`securefl.secagg.parameters.choose_parameters`, planned
  for ``dropout_rate`` of the clients dropping out (default 10 %) **and at least one**,
  and ``corruption_rate`` of them colluding with the server (default 10 %). Where no
  graph survives a dropout (n <= 3) it falls back to the plan for none. Where the
  chooser picks the complete graph, its threshold is used.
- The complete graph (``complete=True``, or an explicit degree >= n - 1) takes
  t = floor(n / 2) + 1, lowered to k - 1 so that one dropout leaves every client t
  share holders, then raised to the smallest threshold the rules of
  :class:`~securefl.secagg.config.SecAggConfig` allow (the rules win).
- An explicit degree below n - 1 is the Harary graph with t = floor(k / 2) + 1, raised
  to the rules' smallest.
- An explicit threshold is used as given (and checked by the configuration's rules).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.parameters import Parameters, ThreatModel, choose_parameters

__all__ = [
    "DEFAULT_CORRUPTION_RATE",
    "DEFAULT_DROPOUT_RATE",
    "default_config",
    "planned_dropout_rate",
    "planned_dropouts",
]

DEFAULT_DROPOUT_RATE = 0.1
"""The dropout rate the defaults plan for, and always at least one client."""
DEFAULT_CORRUPTION_RATE = 0.1
"""The fraction of clients the defaults assume may collude with the server."""


def planned_dropouts(n: int, dropout_rate: float | None = None) -> int:
    """Dropouts the defaults plan for: ``dropout_rate`` (10 %) of n, and at least one."""
    rate = DEFAULT_DROPOUT_RATE if dropout_rate is None else dropout_rate
    return max(1, math.floor(n * rate + 1e-9))


def planned_dropout_rate(n: int) -> float:
    """The smallest float rate r with floor(n r) = :func:`planned_dropouts` (n), at
    least 10 %: the default dropout rate in the form ``DPConfig`` reads it."""
    dropouts = planned_dropouts(n)
    rate = max(DEFAULT_DROPOUT_RATE, dropouts / n)
    while math.floor(n * rate) < dropouts:
        rate = math.nextafter(rate, 1.0)
    return rate


def default_config(
    num_clients: int,
    dimension: int,
    *,
    complete: bool = False,
    threshold: int | None = None,
    degree: int | None = None,
    dropout_rate: float | Fraction | None = None,
    corruption_rate: float = DEFAULT_CORRUPTION_RATE,
    authenticated: bool = False,
    **options: Any,
) -> SecAggConfig:
    """The :class:`SecAggConfig` of the defaults described in the module docstring.

    Parameters
    ----------
    num_clients, dimension:
        n and d.
    complete:
        The complete graph (SecAgg) rather than SecAgg+.
    threshold, degree:
        Explicit t and k; ``None`` derives them.
    dropout_rate:
        SecAgg+ without a degree: the rate the graph is planned for. ``None``: 10 %
        of the clients and at least one; a given rate is used as it is.
    corruption_rate:
        gamma: sets the smallest allowed threshold and, without a degree, the graph.
    authenticated:
        Authenticated mode (its threshold rule is stricter: 2t > k + c).
    options:
        The other :class:`SecAggConfig` fields (bits, clip, max_weight, ...).

    Raises
    ------
    ConfigError
        If no configuration satisfies the rules (the message names the rule).
    """
    n = num_clients
    common: dict[str, Any] = {
        "authenticated": authenticated,
        "corruption_rate": float(corruption_rate),
        **options,
    }
    if not complete and degree is None:
        params = _chosen(n, dropout_rate, corruption_rate)
        chosen = SecAggConfig(
            n,
            params.threshold,
            dimension,
            graph=GraphKind.COMPLETE if params.complete else GraphKind.HARARY,
            degree=None if params.complete else params.degree,
            **common,
        )
        if threshold is None:
            return chosen
        # An explicit threshold is used (and checked by the rules), never ignored.
        return dataclasses.replace(chosen, threshold=threshold)
    if not complete and degree is not None and degree < n - 1:
        k, graph = degree, GraphKind.HARARY
    else:
        k, graph = n - 1, GraphKind.COMPLETE
    if threshold is None:
        threshold = _default_threshold(n, k, graph, authenticated, corruption_rate)
    degree = k if graph is GraphKind.HARARY else None
    return SecAggConfig(n, threshold, dimension, graph=graph, degree=degree, **common)


def _chosen(n: int, dropout_rate: float | Fraction | None, corruption_rate: float) -> Parameters:
    def choose(rate: float | Fraction) -> Parameters:
        return choose_parameters(
            n,
            dropout_rate=rate,
            corruption_rate=corruption_rate,
            threat_model=ThreatModel.SEMI_MALICIOUS,
        )

    if dropout_rate is not None:
        return choose(dropout_rate)
    try:
        return choose(Fraction(planned_dropouts(n), n))
    except ConfigError:
        # No graph survives a dropout (n = 3): the parameters for none; the service
        # then refuses them with the reason and what would work.
        return choose(DEFAULT_DROPOUT_RATE)


def _default_threshold(
    n: int, k: int, graph: GraphKind, authenticated: bool, corruption_rate: float
) -> int:
    default = n // 2 + 1 if graph is GraphKind.COMPLETE else k // 2 + 1
    smallest = SecAggConfig.smallest_threshold(
        n,
        graph=graph,
        degree=k if graph is GraphKind.HARARY else None,
        authenticated=authenticated,
        corruption_rate=corruption_rate,
    )
    if graph is GraphKind.COMPLETE:
        # Leave room for one dropout on the complete graph (n = 4: t = 2, not 3).
        default = min(default, k - 1)
    return max(default, smallest)
