"""Neighbourhood graphs: the complete graph and the random Harary graph.

The parameter chooser that picks their degree is tested in ``tests/secagg/test_parameters.py``.
"""

from __future__ import annotations

import itertools
import math
import pickle
from collections import Counter
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from securefl.primitives import keystream
from securefl.primitives import keystream_rng as keystream_rng_module
from securefl.secagg.graph import Graph, complete_graph, harary_graph, shuffled_ids

SEED = bytes(range(16))


def seed_of(i: int) -> bytes:
    return i.to_bytes(16, "big")


def is_connected(graph: Graph, removed: frozenset[int] = frozenset()) -> bool:
    alive = [u for u in graph.ids if u not in removed]
    if not alive:
        return True
    seen = {alive[0]}
    stack = [alive[0]]
    while stack:
        for v in graph.neighbours(stack.pop()):
            if v not in removed and v not in seen:
                seen.add(v)
                stack.append(v)
    return len(seen) == len(alive)


# ------------------------------------------------------------------ complete graph


def test_complete_graph_structure() -> None:
    ids = [7, 3, 12, 0, 5]
    graph = complete_graph(ids)
    assert graph.ids == (0, 3, 5, 7, 12)
    assert graph.num_clients == len(graph) == 5
    assert graph.is_complete
    assert graph.degree == 4
    for u in ids:
        assert graph.neighbours(u) == frozenset(ids) - {u}
    assert 12 in graph and 4 not in graph


def test_complete_graph_equals_explicit_construction() -> None:
    ids = range(6)
    explicit = Graph({u: [v for v in ids if v != u] for u in ids})
    assert explicit.is_complete
    assert explicit == complete_graph(ids)
    assert hash(explicit) == hash(complete_graph(ids))


def test_complete_graph_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        complete_graph([4])
    with pytest.raises(ValueError, match="unique; 3"):
        complete_graph([1, 3, 3])
    with pytest.raises(ValueError, match=">= 0"):
        complete_graph([1, -2])
    with pytest.raises(TypeError, match="integers"):
        complete_graph([1, 2.0])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="integers"):
        complete_graph([0, True])
    with pytest.raises(TypeError, match="string"):
        complete_graph("12")  # type: ignore[arg-type]


# ------------------------------------------------------------------ Graph itself


def test_graph_validates_symmetry_loops_and_unknown_ids() -> None:
    with pytest.raises(ValueError, match="not symmetric"):
        Graph({0: [1], 1: [], 2: []})
    with pytest.raises(ValueError, match="itself"):
        Graph({0: [0, 1], 1: [0]})
    with pytest.raises(ValueError, match="unknown neighbour 5"):
        Graph({0: [1, 5], 1: [0]})
    with pytest.raises(TypeError):
        Graph({0: ["1"], 1: [0]})  # type: ignore[list-item]
    path = Graph({0: [1], 1: [0, 2], 2: [1]})
    assert not path.is_complete
    assert path.degree == 2
    assert path.neighbours(1) == {0, 2}
    assert path.neighbours(0) == {1}


def test_neighbours_of_unknown_client_is_value_error() -> None:
    graph = complete_graph([1, 2, 3])
    for bad in (0, 4, True, "1", None):
        with pytest.raises(ValueError, match="not in this graph"):
            graph.neighbours(bad)  # type: ignore[arg-type]


def test_graph_is_immutable_hashable_and_pickles() -> None:
    graph = harary_graph(range(20), 4, SEED)
    with pytest.raises(AttributeError):
        graph._ids = (1, 2)
    with pytest.raises(AttributeError):
        del graph._adjacency
    clone = pickle.loads(pickle.dumps(graph))
    assert clone == graph
    assert hash(clone) == hash(graph)
    assert {graph, clone} == {graph}
    assert repr(graph) == "Graph(num_clients=20, degree=4, complete=False)"


# ------------------------------------------------------------------ Harary graph


@pytest.mark.parametrize(
    ("n", "k"), [(4, 2), (5, 2), (10, 4), (11, 6), (50, 8), (101, 10), (1000, 20)]
)
def test_harary_graph_is_k_regular_simple_and_connected(n: int, k: int) -> None:
    ids = [3 * i + 1 for i in range(n)]  # not 0..n-1: ids and positions must not be confused
    graph = harary_graph(reversed(ids), k, SEED)
    assert graph.ids == tuple(ids)
    assert not graph.is_complete
    assert graph.degree == k
    for u in ids:
        nbrs = graph.neighbours(u)
        assert len(nbrs) == k
        assert u not in nbrs
        assert nbrs <= set(ids)
        for v in nbrs:
            assert u in graph.neighbours(v)
    assert is_connected(graph)


def test_harary_graph_is_the_ring_of_the_shuffled_order() -> None:
    ids = list(range(100, 130))
    order = shuffled_ids(ids, SEED)
    assert sorted(order) == ids  # every id used exactly once
    assert list(order) != ids
    graph = harary_graph(ids, 6, SEED)
    n = len(order)
    for p, u in enumerate(order):
        expected = {order[(p + j) % n] for j in (-3, -2, -1, 1, 2, 3)}
        assert graph.neighbours(u) == expected


def test_harary_graph_is_k_connected() -> None:
    # H(n, k) survives the removal of any k - 1 clients (Harary 1962).
    n, k = 12, 4
    graph = harary_graph(range(n), k, SEED)
    for removed in itertools.combinations(range(n), k - 1):
        assert is_connected(graph, frozenset(removed))
    # ... but not of every k: two runs of k/2 neighbours on the ring cut it.
    order = shuffled_ids(range(n), SEED)
    cut = frozenset({order[0], order[1], order[6], order[7]})
    assert not is_connected(graph, cut)


@pytest.mark.parametrize(("n", "k"), [(9, 2), (10, 4), (11, 6), (12, 4)])
def test_disconnection_needs_two_separated_runs(n: int, k: int) -> None:
    """The combinatorial fact behind condition (C1), checked on every removal set."""
    order = shuffled_ids(range(n), SEED)
    graph = harary_graph(range(n), k, SEED)
    half = k // 2
    runs = [frozenset((i + j) % n for j in range(half)) for i in range(n)]
    for mask in range(1 << n):
        removed_positions = frozenset(p for p in range(n) if mask >> p & 1)
        if is_connected(graph, frozenset(order[p] for p in removed_positions)):
            continue
        witnesses = [
            (i, j)
            for i in range(n)
            for j in range(i + half + 1, i + n - half)
            if runs[i] <= removed_positions and runs[j % n] <= removed_positions
        ]
        assert witnesses, sorted(removed_positions)


def test_harary_graph_is_deterministic_and_seed_dependent() -> None:
    ids = range(50)
    first = harary_graph(ids, 4, SEED)
    assert harary_graph(list(ids), 4, bytearray(SEED)) == first  # type: ignore[arg-type]
    others = {harary_graph(ids, 4, seed_of(i)) for i in range(20)}
    assert first not in others
    assert len(others) == 20


def test_harary_degree_at_least_n_minus_1_is_complete() -> None:
    for degree in (9, 10, 100):
        graph = harary_graph(range(10), degree, SEED)
        assert graph.is_complete
        assert graph == complete_graph(range(10))
    assert harary_graph(range(3), 2, SEED).is_complete


def test_harary_rejects_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="even"):
        harary_graph(range(10), 3, SEED)
    with pytest.raises(ValueError, match="even"):
        harary_graph(range(10), 7, SEED)
    for degree in (0, 1, -4):
        with pytest.raises(ValueError, match=">= 2"):
            harary_graph(range(10), degree, SEED)
    with pytest.raises(TypeError, match="degree"):
        harary_graph(range(10), True, SEED)
    with pytest.raises(TypeError, match="degree"):
        harary_graph(range(10), 4.0, SEED)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="16 bytes"):
        harary_graph(range(10), 4, bytes(15))
    with pytest.raises(TypeError, match="seed"):
        harary_graph(range(10), 4, "0123456789abcdef")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        harary_graph([1, 2, 3, 4, 5, 1], 2, SEED)
    with pytest.raises(ValueError, match="at least 2"):
        harary_graph([1], 2, SEED)


# ------------------------------------------------------------------ the shuffle


def words_of(stream: bytes) -> Iterator[int]:
    for i in range(0, len(stream) - 7, 8):
        yield int.from_bytes(stream[i : i + 8], "big")


def reference_shuffle(ids: list[int], words: Iterator[int]) -> tuple[int, ...]:
    """The algorithm as documented in shuffled_ids, written out independently."""
    a = sorted(ids)
    for i in range(len(a) - 1, 0, -1):
        bound = i + 1
        limit = 2**64 - 2**64 % bound
        word = next(words)
        while word >= limit:
            word = next(words)
        j = word % bound
        a[i], a[j] = a[j], a[i]
    return tuple(a)


def test_shuffle_matches_documented_algorithm() -> None:
    for n, seed in [(2, SEED), (7, seed_of(1)), (300, seed_of(2))]:
        ids = [5 * i for i in range(n)]
        stream = keystream(seed, 8 * n + 4096).tobytes()
        assert shuffled_ids(ids, seed) == reference_shuffle(ids, words_of(stream))


def test_shuffle_rejects_biased_words_and_continues_the_keystream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With 3 ids the first draw is below 3; 2^64 mod 3 = 1, so the all-ones word
    # 2^64 - 1 is the one value rejection sampling must skip.
    calls: list[tuple[int, int]] = []

    def fake_keystream(
        key: bytes, nbytes: int, *, counter_block: bytes = bytes(16)
    ) -> npt.NDArray[np.uint8]:
        block = int.from_bytes(counter_block, "big")
        calls.append((block, nbytes))
        if block == 0:
            return np.full(nbytes, 0xFF, dtype=np.uint8)
        return keystream(key, nbytes, counter_block=counter_block)

    # The graph reads its keystream through KeystreamRng, so patch it there.
    monkeypatch.setattr(keystream_rng_module, "keystream", fake_keystream)
    order = shuffled_ids([10, 20, 30], SEED)
    assert len(calls) == 2
    first_block, first_len = calls[0]
    assert first_block == 0 and first_len % 16 == 0
    assert calls[1][0] == first_len // 16  # the stream resumes right after chunk one
    rest = keystream(SEED, 4096, counter_block=(first_len // 16).to_bytes(16, "big"))
    assert order == reference_shuffle([10, 20, 30], words_of(rest.tobytes()))


def test_shuffle_is_unbiased() -> None:
    # Over 30000 seeds every permutation of 3 ids should appear 5000 times. A naive
    # shuffle (swap with any position) is off by 1/54 of the draws on some of them:
    # ~555, while 6 sigma is ~387.
    draws = 30000
    counts = Counter(shuffled_ids([0, 1, 2], seed_of(i)) for i in range(draws))
    assert len(counts) == 6
    p = 1 / 6
    sigma = math.sqrt(draws * p * (1 - p))
    for perm, count in counts.items():
        assert abs(count - draws * p) < 6 * sigma, (perm, count)


def test_each_id_lands_at_position_zero_uniformly() -> None:
    n, draws = 9, 9000
    first = Counter(shuffled_ids(range(n), seed_of(10**6 + i))[0] for i in range(draws))
    p = 1 / n
    sigma = math.sqrt(draws * p * (1 - p))
    assert set(first) == set(range(n))
    for count in first.values():
        assert abs(count - draws * p) < 6 * sigma
