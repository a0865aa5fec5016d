"""The session's neighbourhood graph, built identically by the server and every client
from the advertised ids and the server's graph seed."""

from __future__ import annotations

from collections.abc import Sequence

from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.graph import Graph, complete_graph, harary_graph

__all__ = ["build_graph"]


def build_graph(config: SecAggConfig, ids: Sequence[int], seed: bytes) -> Graph:
    """The graph over ``ids`` (the clients that advertised keys) for ``config``.

    SecAgg+ uses a random Harary graph of degree k drawn from ``seed`` (Bell et al.
    2020); once fewer than k + 1 clients remain it is the complete graph.

    Raises
    ------
    ValueError
        If the ids or the seed are invalid.
    """
    if config.graph is GraphKind.COMPLETE or config.degree is None or len(ids) <= config.degree + 1:
        return complete_graph(ids)
    return harary_graph(ids, config.degree, seed)
