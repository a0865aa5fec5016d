"""Neighbourhood graphs for SecAgg / SecAgg+: the complete graph and the random Harary graph.

A client masks its update with, and Shamir-shares its secrets among, its neighbours only.
SecAgg (Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017) uses the complete graph: every client neighbours every other, so a
client's cost grows linearly with n. SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova,
"Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020)
uses a *random Harary graph* H(n, k): the circulant graph on ring positions 0..n-1 in
which position i neighbours i +- 1, ..., i +- k/2 (mod n), with the client ids placed on
the positions by a uniformly random permutation. With k = O(log n) it keeps, except with
probability 2^-sigma, the guarantees of the complete graph; the degree k and the
threshold t come from :mod:`securefl.secagg.parameters`.

The permutation is drawn from the AES-128-CTR keystream of a 16-byte seed
(:class:`~securefl.primitives.keystream_rng.KeystreamRng`, never ``random`` or
``numpy.random``), so every party that knows the seed derives the same graph and nobody
who does not can predict it.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from securefl.primitives.keystream_rng import KeystreamRng

if TYPE_CHECKING:
    # Deprecated re-exports, resolved lazily by __getattr__ below; named here so type
    # checkers still see their signatures.
    from securefl.secagg.parameters import Parameters as Parameters
    from securefl.secagg.parameters import ThreatModel as ThreatModel
    from securefl.secagg.parameters import choose_parameters as choose_parameters
    from securefl.secagg.parameters import complete_parameters as complete_parameters
    from securefl.secagg.parameters import corrupt_clients as corrupt_clients
    from securefl.secagg.parameters import corrupt_neighbours_among as corrupt_neighbours_among
    from securefl.secagg.parameters import (
        tolerated_corrupt_neighbours as tolerated_corrupt_neighbours,
    )

__all__ = [
    "SEED_BYTES",
    "Graph",
    "complete_graph",
    "harary_graph",
    "shuffled_ids",
]

SEED_BYTES = 16
"""Length of the seed of :func:`harary_graph` (an AES-128 key)."""
_WORD_BYTES = 8


def _client_id(value: object) -> int:
    # bool is an int subclass: True would silently alias client 1.
    if isinstance(value, bool):
        raise TypeError(f"client ids must be integers, got {value!r}")
    try:
        cid = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"client ids must be integers, got {value!r}") from None
    if cid < 0:
        raise ValueError(f"client ids must be >= 0, got {cid}")
    return cid


def _sorted_ids(ids: Iterable[int]) -> tuple[int, ...]:
    """Validate ``ids`` (unique non-negative integers, at least two) and sort them."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be an iterable of integers, not a string")
    seen: set[int] = set()
    for value in ids:
        cid = _client_id(value)
        # A repeated id would give one client two ring positions and break regularity.
        if cid in seen:
            raise ValueError(f"client ids must be unique; {cid} appears more than once")
        seen.add(cid)
    unique = sorted(seen)
    # One client's "aggregate" is its own update: nothing to hide it among.
    if len(unique) < 2:
        raise ValueError(f"a neighbourhood graph needs at least 2 clients, got {len(unique)}")
    return tuple(unique)


class Graph:
    """An undirected neighbourhood graph over client ids; immutable.

    A client masks its update with, and shares its secrets among, exactly its
    neighbours. The graph is simple: no client neighbours itself and ``v`` neighbours
    ``u`` exactly when ``u`` neighbours ``v``.

    Parameters
    ----------
    neighbours:
        For each client id (the keys: unique non-negative integers, at least two),
        the ids of its neighbours. Usually built with :func:`complete_graph` or
        :func:`harary_graph` rather than by hand.

    Raises
    ------
    TypeError
        If an id is not an integer.
    ValueError
        If an id is negative, a neighbour is not a key, a client neighbours itself, or
        the relation is not symmetric.
    """

    __slots__ = ("_adjacency", "_ids", "_index")

    _ids: tuple[int, ...]
    _index: dict[int, int]
    _adjacency: tuple[frozenset[int], ...] | None  # None: the complete graph

    def __init__(self, neighbours: Mapping[int, Iterable[int]]) -> None:
        ids = _sorted_ids(neighbours.keys())
        index = {u: i for i, u in enumerate(ids)}
        adjacency: list[frozenset[int]] = []
        for u in ids:
            nbrs = frozenset(_client_id(v) for v in neighbours[u])
            for v in nbrs:
                # A share sent to an unknown id would be routed to nobody.
                if v not in index:
                    raise ValueError(f"client {u} lists unknown neighbour {v}")
                # A client holding its own share would count twice toward t.
                if v == u:
                    raise ValueError(f"client {u} lists itself as a neighbour")
            adjacency.append(nbrs)
        for u, nbrs in zip(ids, adjacency, strict=True):
            for v in nbrs:
                # Pairwise masks cancel only if both ends add them.
                if u not in adjacency[index[v]]:
                    raise ValueError(f"not symmetric: {u} lists {v} but {v} does not list {u}")
        self._init(ids, index, tuple(adjacency))

    @classmethod
    def _trusted(cls, ids: tuple[int, ...], adjacency: tuple[frozenset[int], ...] | None) -> Graph:
        """Build from parts already known to be valid (sorted ids, symmetric sets)."""
        graph = cls.__new__(cls)
        graph._init(ids, {u: i for i, u in enumerate(ids)}, adjacency)
        return graph

    def _init(
        self,
        ids: tuple[int, ...],
        index: dict[int, int],
        adjacency: tuple[frozenset[int], ...] | None,
    ) -> None:
        n = len(ids)
        # One canonical form for the complete graph, so equal graphs compare equal.
        if adjacency is not None and all(len(a) == n - 1 for a in adjacency):
            adjacency = None
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_adjacency", adjacency)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Graph is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Graph is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Graph._trusted, (self._ids, self._adjacency))

    @property
    def ids(self) -> tuple[int, ...]:
        """The client ids, sorted ascending."""
        return self._ids

    @property
    def num_clients(self) -> int:
        """n, the number of clients."""
        return len(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._index and not isinstance(client_id, bool)

    def neighbours(self, client_id: int) -> frozenset[int]:
        """The neighbours of ``client_id`` (never ``client_id`` itself).

        Raises
        ------
        ValueError
            If ``client_id`` is not a client of this graph.
        """
        i = None if isinstance(client_id, bool) else self._index.get(client_id)
        if i is None:
            raise ValueError(f"client {client_id!r} is not in this graph")
        if self._adjacency is None:
            return frozenset(self._ids[:i] + self._ids[i + 1 :])
        return self._adjacency[i]

    @property
    def degree(self) -> int:
        """The largest number of neighbours of any client (k for a k-regular graph)."""
        if self._adjacency is None:
            return len(self._ids) - 1
        return max(len(a) for a in self._adjacency)

    @property
    def is_complete(self) -> bool:
        """Whether every client neighbours every other (SecAgg)."""
        return self._adjacency is None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self._ids == other._ids and self._adjacency == other._adjacency

    def __hash__(self) -> int:
        return hash((self._ids, self._adjacency))

    def __repr__(self) -> str:
        return (
            f"Graph(num_clients={self.num_clients}, degree={self.degree}, "
            f"complete={self.is_complete})"
        )


def complete_graph(ids: Iterable[int]) -> Graph:
    """The complete graph of SecAgg (Bonawitz et al. 2017): everyone neighbours everyone.

    Parameters
    ----------
    ids:
        Unique non-negative integer client ids, at least two, in any order.

    Returns
    -------
    Graph
        The (n-1)-regular graph on ``ids``.

    Raises
    ------
    TypeError
        If an id is not an integer.
    ValueError
        If ids repeat, are negative, or there are fewer than two.
    """
    return Graph._trusted(_sorted_ids(ids), None)


def _check_seed(seed: object) -> bytes:
    if not isinstance(seed, (bytes, bytearray, memoryview)):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    raw = bytes(seed)
    if len(raw) != SEED_BYTES:
        raise ValueError(f"seed must be exactly {SEED_BYTES} bytes, got {len(raw)}")
    return raw


def shuffled_ids(ids: Iterable[int], seed: bytes) -> tuple[int, ...]:
    """The ids in a uniformly random order drawn from ``seed``: the Harary ring order.

    The algorithm is fixed so that every implementation derives the same order: start
    from the ids sorted ascending, ``a[0..n-1]``; for ``i = n-1`` down to ``1`` read
    64-bit big-endian words from the AES-128-CTR keystream of ``seed`` (counter 0
    upwards) until one, ``w``, is below ``2^64 - (2^64 mod (i+1))``; swap ``a[i]``
    and ``a[w mod (i+1)]`` (Fisher-Yates with rejection sampling, so every order has
    probability exactly 1/n! given a uniform keystream).

    Parameters
    ----------
    ids:
        Unique non-negative integer client ids, at least two.
    seed:
        Exactly 16 bytes.

    Returns
    -------
    tuple of int
        The ids; position ``p`` of the Harary ring holds element ``p``.

    Raises
    ------
    TypeError
        If an id is not an integer or ``seed`` is not bytes.
    ValueError
        If ids repeat, are negative or fewer than two, or ``seed`` is not 16 bytes.

    Security
    --------
    Whoever knows the seed knows the graph. In SecAgg+ the graph is not secret from
    the server, but the seed must be drawn after the clients (and so the corrupt ones)
    are fixed: a party that could pick the seed could pick a graph it can cut.
    """
    order = list(_sorted_ids(ids))
    rng = KeystreamRng(_check_seed(seed), expected_bytes=_WORD_BYTES * (len(order) - 1))
    for i in range(len(order) - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


def harary_graph(ids: Iterable[int], degree: int, seed: bytes) -> Graph:
    """A random Harary graph H(n, k), the SecAgg+ graph of Bell et al. 2020.

    Place the ids on a ring in the order :func:`shuffled_ids` gives; each client then
    neighbours the ``k/2`` clients on either side. The result is k-regular and
    k-connected; because the placement is uniformly random, a set of corrupt or
    dropped clients fixed before the seed is drawn lands on uniformly random ring
    positions, which is what
    :func:`~securefl.secagg.parameters.choose_parameters` assumes.

    Parameters
    ----------
    ids:
        Unique non-negative integer client ids, at least two.
    degree:
        k, the number of neighbours per client: an even integer >= 2, as in Bell et
        al. (an odd k cannot be split evenly between the two sides of the ring). If
        ``degree >= n - 1`` the complete graph is returned, whatever its parity.
    seed:
        Exactly 16 bytes of fresh randomness; the same (ids, degree, seed) always
        give the same graph.

    Returns
    -------
    Graph

    Raises
    ------
    TypeError
        If an id or ``degree`` is not an integer, or ``seed`` is not bytes.
    ValueError
        If ids repeat, are negative or fewer than two, ``seed`` is not 16 bytes, or
        ``degree`` is below 2 or odd (and below n - 1).
    """
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise TypeError(f"degree must be an integer, got {degree!r}")
    sorted_ids = _sorted_ids(ids)
    raw_seed = _check_seed(seed)
    n = len(sorted_ids)
    # Degree 0 gives every client the whole sum's secret alone; 1 is not a ring.
    if degree < 2:
        raise ValueError(f"degree must be >= 2, got {degree}")
    if degree >= n - 1:
        return Graph._trusted(sorted_ids, None)
    if degree % 2:
        raise ValueError(f"a Harary graph needs an even degree below n - 1 = {n - 1}, got {degree}")
    order = shuffled_ids(sorted_ids, raw_seed)
    half = degree // 2
    position = {u: p for p, u in enumerate(order)}
    adjacency = tuple(
        frozenset(order[(position[u] + j) % n] for j in range(-half, half + 1) if j)
        for u in sorted_ids
    )
    return Graph._trusted(sorted_ids, adjacency)


# ------------------------------------------------------- moved to parameters.py

# The names graph.py exported before the split, fixed: a name added to parameters.py
# later never lived here and gets no alias.
_MOVED_TO_PARAMETERS = frozenset(
    {
        "Parameters",
        "ThreatModel",
        "choose_parameters",
        "complete_parameters",
        "corrupt_clients",
        "corrupt_neighbours_among",
        "tolerated_corrupt_neighbours",
    }
)


def __getattr__(name: str) -> object:
    """The parameter search's old names (PEP 562), with a ``DeprecationWarning``.

    They moved to :mod:`securefl.secagg.parameters`; that module is imported only
    when an old name is first asked for.
    """
    if name in _MOVED_TO_PARAMETERS:
        warnings.warn(
            f"securefl.secagg.graph.{name} has moved: import it from "
            f"securefl.secagg.parameters instead",
            DeprecationWarning,
            stacklevel=2,
        )
        from securefl.secagg import parameters

        return getattr(parameters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
