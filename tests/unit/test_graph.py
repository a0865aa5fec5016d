"""Neighbourhood graphs (complete, random Harary) and the SecAgg+ parameter chooser.

The chooser's results are checked against an independent re-computation of its
conditions with ``math.comb`` and exact integer arithmetic, and against the values
published in Google's ``fcp/secagg/server/graph_parameter_finder_test.cc``.
"""

from __future__ import annotations

import itertools
import math
import pickle
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest

from securefl.errors import ConfigError
from securefl.primitives import keystream
from securefl.secagg import graph as graph_module
from securefl.secagg.graph import (
    Graph,
    Parameters,
    ThreatModel,
    choose_parameters,
    complete_graph,
    complete_parameters,
    harary_graph,
    shuffled_ids,
)

SEED = bytes(range(16))
SH = ThreatModel.SEMI_HONEST
SM = ThreatModel.SEMI_MALICIOUS


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

    monkeypatch.setattr(graph_module, "keystream", fake_keystream)
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


# ------------------------------------------------------------------ independent checker


def hyper_tails(pool: int, marked: int, k: int) -> list[int]:
    """tails[m] = sum_{x >= m} C(marked, x) C(pool - marked, k - x), m = 0..k+1."""
    weights = [math.comb(marked, x) * math.comb(pool - marked, k - x) for x in range(k + 1)]
    tails = [0] * (k + 2)
    for x in range(k, -1, -1):
        tails[x] = tails[x + 1] + weights[x]
    return tails


def valid_thresholds(
    n: int, c: int, d: int, k: int, sigma: int, rho: int, model: ThreatModel
) -> list[int]:
    """Every t meeting the documented conditions at degree k, by brute force."""
    if k == n - 1:
        ok = []
        for t in range(2, k + 1):
            secure = t > c if model is SH else 2 * t > k + c
            if secure and t <= k - d:
                ok.append(t)
        return ok
    # (C1): n (n-k-1)/2 * C(c+d, k) / C(n, k) <= 2^-(sigma+1)
    disconnect = Fraction(n * (n - k - 1), 2) * Fraction(
        math.comb(min(c + d, n), k), math.comb(n, k)
    )
    if disconnect > Fraction(1, 2 ** (sigma + 1)):
        return []
    total = math.comb(n - 1, k)
    corrupt = hyper_tails(n - 1, c, k)
    dropped = hyper_tails(n - 1, d, k)
    ok = []
    for t in range(2, k + 1):
        m = t if model is SH else 2 * t - k
        corrupt_tail = corrupt[m] if m >= 0 else total
        secure = Fraction(n * corrupt_tail, total) <= Fraction(1, 2 ** (sigma + 1))
        correct = Fraction(n * dropped[k - t + 1], total) <= Fraction(1, 2**rho)
        if secure and correct:
            ok.append(t)
    return ok


def assert_minimal_and_valid(params: Parameters) -> None:
    n, c, d = params.num_clients, params.max_corrupt, params.max_dropouts
    args = (params.security_bits, params.correctness_bits, params.threat_model)
    ok = valid_thresholds(n, c, d, params.degree, *args)
    assert ok, params
    assert params.threshold == ok[0]
    assert params.max_threshold == ok[-1]
    assert ok == list(range(ok[0], ok[-1] + 1))
    # No smaller even degree (below n - 1) admits any threshold.
    for smaller in range(2, min(params.degree, n - 1), 2):
        assert valid_thresholds(n, c, d, smaller, *args) == [], (params, smaller)


RATES = [(0.0, 0.0), (0.1, 0.1), (0.2, 0.05), (0.05, 0.3), (0.3, 0.3), (0.02, 0.45)]


@pytest.mark.parametrize("n", [4, 5, 8, 13, 30, 64, 101])
@pytest.mark.parametrize("model", [SH, SM])
def test_chooser_is_minimal_and_meets_its_conditions(n: int, model: ThreatModel) -> None:
    for dropout, corruption in RATES:
        for sigma, rho in [(40, 20), (10, 5)]:
            try:
                params = choose_parameters(
                    n,
                    dropout_rate=dropout,
                    corruption_rate=corruption,
                    security_bits=sigma,
                    correctness_bits=rho,
                    threat_model=model,
                )
            except ConfigError:
                c, d = math.floor(corruption * n + 1e-9), math.floor(dropout * n + 1e-9)
                for k in [*range(2, n - 1, 2), n - 1]:
                    assert valid_thresholds(n, c, d, k, sigma, rho, model) == []
                continue
            assert params.max_corrupt == math.floor(corruption * n + 1e-9)
            assert params.max_dropouts == math.floor(dropout * n + 1e-9)
            assert params.complete == (params.degree == n - 1)
            assert params.complete or params.degree % 2 == 0
            assert 2 <= params.threshold <= params.max_threshold <= params.degree
            assert_minimal_and_valid(params)


@pytest.mark.parametrize(
    ("n", "model", "expected"),
    [
        (100, SH, (22, 11)),
        (1000, SH, (48, 27)),
        (10000, SH, (54, 31)),
        (100, SM, (32, 22)),
        (1000, SM, (96, 67)),
        (10000, SM, (122, 85)),
    ],
)
def test_known_parameters_at_ten_percent(
    n: int, model: ThreatModel, expected: tuple[int, int]
) -> None:
    params = choose_parameters(n, dropout_rate=0.1, corruption_rate=0.1, threat_model=model)
    assert (params.degree, params.threshold) == expected
    assert not params.complete
    assert params.degree < n - 1
    assert (params.max_corrupt, params.max_dropouts) == (n // 10, n // 10)
    assert valid_thresholds(n, n // 10, n // 10, params.degree, 40, 20, model)[0] == (
        params.threshold
    )


@pytest.mark.parametrize("model", [SH, SM])
def test_degree_grows_logarithmically(model: ThreatModel) -> None:
    degrees = [
        choose_parameters(10**e, dropout_rate=0.1, corruption_rate=0.1, threat_model=model).degree
        for e in range(2, 7)
    ]
    assert degrees == sorted(degrees)
    for n_exp, k in zip(range(2, 7), degrees, strict=True):
        assert k <= 10 * math.log2(10**n_exp)  # far below n - 1
    # From 10^3 to 10^6 clients (1000x) the degree does not even double.
    assert degrees[-1] < 2 * degrees[1]


# Google's fcp/secagg/server/graph_parameter_finder_test.cc (precomputed by the
# authors of Bell et al.). Where we differ, our exact arithmetic with the n - 1 other
# clients is the more conservative of the two by at most 6.
GOOGLE = [
    (100, 0.45, 0.45, SH, (92, 46), (92, 46)),
    (1000, 0.45, 0.45, SH, (822, 417), (824, 418)),
    (1000, 0.33, 0.33, SH, (286, 150), (286, 150)),
    (100000, 0.33, 0.33, SH, (480, 251), (480, 251)),
    (1000, 0.3, 0.3, SM, (872, 584), (872, 584)),
    (10000, 0.3, 0.3, SM, (4822, 3230), (4828, 3234)),
    (1000, 0.05, 0.33, SH, (72, 24), (72, 24)),
    (10000, 0.05, 0.33, SM, (746, 420), (746, 420)),
    (1000000, 0.05, 0.33, SM, (970, 545), (970, 545)),
    (100000, 0.33, 0.05, SH, (102, 77), (102, 77)),
    (1000, 0.33, 0.05, SM, (132, 109), (132, 109)),
    # Google returns t = 2 with 4 neighbours although 3 dropouts among 4 neighbours
    # (probability 6/126) leave 1 < t survivors: it clamps t to 2 after its check.
    (10, 0.05, 0.33, SH, (4, 2), (6, 2)),
]


@pytest.mark.parametrize(("n", "gamma", "delta", "model", "google", "ours"), GOOGLE)
def test_agrees_with_google_reference_values(
    n: int,
    gamma: float,
    delta: float,
    model: ThreatModel,
    google: tuple[int, int],
    ours: tuple[int, int],
) -> None:
    params = choose_parameters(n, dropout_rate=delta, corruption_rate=gamma, threat_model=model)
    assert (params.degree, params.threshold) == ours
    assert 0 <= params.degree - google[0] <= 6


def test_google_small_case_violates_correctness_and_ours_does_not() -> None:
    # n = 10, 3 dropouts, 0 corrupt: with k = 4, t = 2 a client fails with
    # probability C(3,3) C(6,1) / C(9,4) = 6/126 > 2^-20 / 10.
    assert valid_thresholds(10, 0, 3, 4, 40, 20, SH) == []
    assert valid_thresholds(10, 0, 3, 6, 40, 20, SH) == [2, 3]


def disconnect_bound(n: int, bad: int, k: int) -> Fraction:
    return Fraction(n * (n - k - 1), 2) * Fraction(math.comb(bad, k), math.comb(n, k))


def test_connectivity_condition_binds_at_its_boundary() -> None:
    # 57 clients, 20 of them dropping, no corruption: at k = 20 the union bound of
    # (C1) is 1.86 x 2^-41, just over 2^-(40+1); at k = 22 it is far below. The
    # thresholds would already work at k = 20, so (C1) alone sets the degree.
    assert Fraction(1, 2**41) < disconnect_bound(57, 20, 20) < Fraction(1, 2**40)
    assert disconnect_bound(57, 20, 22) <= Fraction(1, 2**41)
    assert valid_thresholds(57, 0, 20, 22, 40, 20, SH) == [2, 3, 4, 5]
    params = choose_parameters(
        57, dropout_rate=Fraction(20, 57), corruption_rate=0, threat_model=SH
    )
    assert (params.degree, params.threshold, params.max_threshold) == (22, 2, 5)
    assert_minimal_and_valid(params)
    # Same at security_bits = 10: 21 clients, 8 dropping; k = 8 misses by 1.27x.
    assert Fraction(1, 2**11) < disconnect_bound(21, 8, 8) < Fraction(1, 2**10)
    small = choose_parameters(
        21, dropout_rate=Fraction(8, 21), corruption_rate=0, security_bits=10, threat_model=SH
    )
    assert small.degree == 10
    assert_minimal_and_valid(small)


def test_exact_connectivity_check_against_fractions() -> None:
    for n, bad, k, sigma in [
        (54, 24, 24, 40),
        (57, 20, 20, 40),
        (57, 20, 22, 40),
        (25, 11, 10, 10),
    ]:
        inp = graph_module._inputs(n, Fraction(bad, n), 0, sigma, 20, SH)
        expected = disconnect_bound(n, bad, k) <= Fraction(1, 2 ** (sigma + 1))
        others = math.comb(n - 1, k)
        assert graph_module._connected_exact(inp, k, others) is expected


# ------------------------------------------------------------------ monotonicity


@pytest.mark.parametrize("model", [SH, SM])
def test_more_dropout_or_corruption_never_lowers_the_degree(model: ThreatModel) -> None:
    rates = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25]
    for n in (200, 5000):
        by_dropout = [
            choose_parameters(n, dropout_rate=r, corruption_rate=0.05, threat_model=model)
            for r in rates
        ]
        assert [p.degree for p in by_dropout] == sorted(p.degree for p in by_dropout)
        assert by_dropout[-1].degree > by_dropout[0].degree
        by_corruption = [
            choose_parameters(n, dropout_rate=0.05, corruption_rate=r, threat_model=model)
            for r in rates
        ]
        assert [p.degree for p in by_corruption] == sorted(p.degree for p in by_corruption)
        assert by_corruption[-1].degree > by_corruption[0].degree


def test_more_security_bits_never_lowers_the_degree() -> None:
    degrees = [
        choose_parameters(2000, dropout_rate=0.1, corruption_rate=0.1, security_bits=bits).degree
        for bits in (10, 20, 40, 64, 80, 128)
    ]
    assert degrees == sorted(degrees)
    assert degrees[-1] > degrees[0]


def test_semi_malicious_needs_at_least_the_semi_honest_degree() -> None:
    for n in (50, 500, 5000):
        sh = choose_parameters(n, dropout_rate=0.1, corruption_rate=0.1, threat_model=SH)
        sm = choose_parameters(n, dropout_rate=0.1, corruption_rate=0.1, threat_model=SM)
        assert sm.degree >= sh.degree
        assert 2 * sm.threshold > sm.degree  # a lying server never gets both halves


# ------------------------------------------------------------------ complete graph params


def test_complete_parameters_follow_bonawitz() -> None:
    # n = 10: c = 1 corrupt, d = 1 dropped, k = 9 neighbours.
    sh = complete_parameters(10, dropout_rate=0.1, corruption_rate=0.1, threat_model=SH)
    assert (sh.degree, sh.threshold, sh.max_threshold, sh.complete) == (9, 2, 8, True)
    # Lying server: t - 1 honest + 1 corrupt shares of each kind need 2(t - 1) <= 8.
    sm = complete_parameters(10, dropout_rate=0.1, corruption_rate=0.1, threat_model=SM)
    assert (sm.threshold, sm.max_threshold) == (6, 8)
    big = complete_parameters(300, dropout_rate=0.2, corruption_rate=1 / 3)
    assert big.max_corrupt == 100  # not 99: 1/3 as a float is just below a third
    assert big.threshold == (299 + 100) // 2 + 1  # > (n - 1 + c) / 2
    assert big.max_threshold == 299 - 60


def test_choose_falls_back_to_the_complete_graph() -> None:
    params = choose_parameters(4, dropout_rate=0.3, corruption_rate=0.1)
    assert params.complete and params.degree == 3
    assert params.threshold == 2
    for n in (3, 5, 6):
        p = choose_parameters(n, dropout_rate=0.2, corruption_rate=0.2, threat_model=SH)
        assert_minimal_and_valid(p)


def test_rates_are_read_as_written_decimals() -> None:
    # float(0.3) < 3/10; reading it in binary would undercount the corrupt clients.
    assert 0.3 * 10 < 3 or Fraction(0.3) < Fraction(3, 10)
    params = choose_parameters(10, dropout_rate=0.0, corruption_rate=0.3)
    assert params.max_corrupt == 3
    exact = choose_parameters(10, dropout_rate=0, corruption_rate=Fraction(3, 10))
    assert (exact.degree, exact.threshold) == (params.degree, params.threshold)
    numpy_rate = choose_parameters(10, dropout_rate=0.0, corruption_rate=np.float64(0.3))
    assert numpy_rate.max_corrupt == 3


# ------------------------------------------------------------------ impossible / invalid


@pytest.mark.parametrize(
    ("n", "delta", "gamma", "model"),
    [
        (100, 0.5, 0.5, SH),
        (1000, 0.4, 0.6, SH),
        (1000, 0.35, 0.3, SM),
        (100000, 0.35, 0.3, SM),
        (10, 0.0, 0.9, SM),
        (2, 0.0, 0.0, SH),
    ],
)
def test_impossible_configurations_raise(
    n: int, delta: float, gamma: float, model: ThreatModel
) -> None:
    with pytest.raises(ConfigError) as info:
        choose_parameters(n, dropout_rate=delta, corruption_rate=gamma, threat_model=model)
    message = str(info.value)
    assert f"num_clients={n}" in message
    assert f"dropout_rate={delta!r}" in message
    assert f"corruption_rate={gamma!r}" in message
    assert model.value in message
    with pytest.raises(ConfigError):
        complete_parameters(n, dropout_rate=delta, corruption_rate=gamma, threat_model=model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clients": 1}, "num_clients"),
        ({"num_clients": True}, "num_clients"),
        ({"num_clients": 10.0}, "num_clients"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"dropout_rate": -0.1}, "dropout_rate"),
        ({"corruption_rate": float("nan")}, "corruption_rate"),
        ({"corruption_rate": "0.1"}, "corruption_rate"),
        ({"corruption_rate": True}, "corruption_rate"),
        ({"security_bits": 0}, "security_bits"),
        ({"correctness_bits": 1000}, "correctness_bits"),
        ({"security_bits": 40.0}, "security_bits"),
        ({"threat_model": "semi-honest"}, "threat_model"),
    ],
)
def test_invalid_inputs_raise_config_error(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"num_clients": 100, "dropout_rate": 0.1, "corruption_rate": 0.1}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        choose_parameters(**args)  # type: ignore[arg-type]
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------ helpers and glue


def test_exact_tail_start_with_and_without_a_guess() -> None:
    tail_start = graph_module._tail_start
    for pool, marked, k in [(9, 0, 4), (9, 3, 4), (99, 10, 18), (999, 300, 200), (400, 390, 50)]:
        tails = hyper_tails(pool, marked, k)
        total = math.comb(pool, k)
        for scale in (4, 10 << 21, 1000 << 41):
            expected = min(m for m in range(k + 2) if scale * tails[m] <= total)
            assert tail_start(pool, marked, k, scale) == expected
            # Guesses are meant to be lower bounds; wrong ones must only cost time.
            for guess in (0, expected - 3, expected - 1, expected, expected + 5, 10**6):
                assert tail_start(pool, marked, k, scale, guess) == expected


def test_float_log_binomials_are_accurate() -> None:
    # The search's float screens rely on this (see _SCREEN_MARGIN_BITS).
    for a, b in [(10**6, 66914), (2**31 - 1, 2000), (12345, 6000), (50, 25)]:
        exact = math.comb(a, b)
        shift = max(0, exact.bit_length() - 200)
        exact_log2 = shift + math.log2(exact >> shift)
        assert abs(graph_module._log2_comb(a, b) - exact_log2) < 1e-3


def test_chosen_degree_builds_a_harary_graph() -> None:
    params = choose_parameters(1000, dropout_rate=0.1, corruption_rate=0.1)
    graph = harary_graph(range(1000), params.degree, SEED)
    assert graph.degree == params.degree == 96
    assert all(len(graph.neighbours(u)) == params.degree for u in graph.ids)
    assert params.threshold <= params.degree
