"""The SecAgg+ parameter chooser (:mod:`securefl.secagg.parameters`, Bell et al. 2020).

The chooser's results are checked against an independent re-computation of its
conditions with ``math.comb`` and exact integer arithmetic, and against the values
published in Google's ``fcp/secagg/server/graph_parameter_finder_test.cc``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from securefl.errors import ConfigError
from securefl.secagg import parameters as parameters_module
from securefl.secagg.graph import harary_graph
from securefl.secagg.parameters import (
    Parameters,
    ThreatModel,
    choose_parameters,
    complete_parameters,
)

SEED = bytes(range(16))
SH = ThreatModel.SEMI_HONEST
SM = ThreatModel.SEMI_MALICIOUS


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
        inp = parameters_module._inputs(n, Fraction(bad, n), 0, sigma, 20, SH)
        expected = disconnect_bound(n, bad, k) <= Fraction(1, 2 ** (sigma + 1))
        others = math.comb(n - 1, k)
        assert parameters_module._connected_exact(inp, k, others) is expected


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
    tail_start = parameters_module._tail_start
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
        assert abs(parameters_module._log2_comb(a, b) - exact_log2) < 1e-3


def test_chosen_degree_builds_a_harary_graph() -> None:
    params = choose_parameters(1000, dropout_rate=0.1, corruption_rate=0.1)
    graph = harary_graph(range(1000), params.degree, SEED)
    assert graph.degree == params.degree == 96
    assert all(len(graph.neighbours(u)) == params.degree for u in graph.ids)
    assert params.threshold <= params.degree
