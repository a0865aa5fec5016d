"""The SecAgg+ parameter search: the degree k and threshold t for n clients.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server Aggregation
with (Poly)Logarithmic Overhead", CCS 2020) replaces SecAgg's complete graph with a
random Harary graph H(n, k) (:func:`securefl.secagg.graph.harary_graph`). This module
computes, for n clients, a tolerated fraction gamma of corrupt clients and delta of
dropouts, the smallest even k and a threshold t for which, except with probability
2^-sigma, the adversary learns no more than the sum of the honest survivors' inputs,
and, except with probability 2^-rho, no session aborts for lack of shares -- against
either server of Bell et al., semi-honest or semi-malicious (:class:`ThreatModel`).

:func:`choose_parameters` follows the analysis of Bell et al. (the union bounds also
implemented in Google's ``fcp/secagg/server/graph_parameter_finder.cc``) but evaluates
every probability exactly, with integers, instead of with floating point; its docstring
states the conditions. :func:`complete_parameters` gives SecAgg's threshold for the
complete graph (Bonawitz et al., CCS 2017), whose conditions hold with certainty.
:func:`tolerated_corrupt_neighbours` and :func:`corrupt_neighbours_among` give the
corrupt neighbours a client must tolerate, the count its directory checks rest on.
:class:`Parameters` explains what each parameter trades off.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

from securefl.errors import ConfigError

__all__ = [
    "Parameters",
    "ThreatModel",
    "choose_parameters",
    "complete_parameters",
    "corrupt_clients",
    "corrupt_neighbours_among",
    "tolerated_corrupt_neighbours",
]

_MAX_BITS = 256
_RATE_TOLERANCE = Fraction(1, 10**14)
# The floating-point screens in the parameter search discard a degree only when their
# estimate misses the bound by this many bits. Each lgamma-based log2 C(a, b) is within
# ~1e-5 bit of the truth for a < 2^32 (checked against exact integers in the tests), so
# a log-probability built from three is off by well under 0.001 bit; stopping a partial
# sum early only lowers the estimate, which is the safe direction.
_SCREEN_MARGIN_BITS = 0.01
_SCREEN_MAX_TERMS = 4096
_EXACT_WINDOW = 64


class ThreatModel(Enum):
    """What the server may do: the two settings of Bell et al. 2020.

    In both models the adversary controls the server and at most a ``corruption_rate``
    fraction of the clients, chosen before the graph is drawn.
    """

    SEMI_HONEST = "semi-honest"
    """The server follows the protocol and reports dropouts truthfully; it only tries
    to learn from what it sees (honest but curious)."""

    SEMI_MALICIOUS = "semi-malicious"
    """The server may lie about who dropped out, telling some neighbours of a client
    that it survived (to collect self-mask shares) and others that it dropped (to
    collect mask-key shares). Needs the larger threshold 2t > k + corrupt neighbours."""


@dataclass(frozen=True)
class Parameters:
    """Degree and threshold of a SecAgg / SecAgg+ session, with what they guarantee.

    Produced by :func:`choose_parameters` and :func:`complete_parameters`.

    Attributes
    ----------
    num_clients:
        n. The guarantees hold for the session size they were computed for.
    degree:
        k, neighbours per client (n - 1 when ``complete``). Each client expands
        (k + 1) x d elements of PRG and sends k pairs of shares, so cost grows
        linearly with k. A larger k makes it harder for corrupt and dropped clients
        to cut the honest survivors apart (privacy) and leaves more survivors around
        each client (robustness); the smallest k meeting both bounds is returned.
    threshold:
        t, the shares needed to rebuild a client's self-mask seed or mask key. Larger
        t: more corrupt neighbours (or, against a lying server, more honest ones told
        conflicting stories) are needed to unmask a client -- privacy margin. Smaller
        t: more dropouts tolerated before a session aborts -- robustness. The smallest
        t that meets the security bound is returned, which maximises dropout
        tolerance at the requested privacy level.
    max_threshold:
        The largest t that still meets the correctness bound. Any t in
        [threshold, max_threshold] meets both; raising t buys privacy margin against
        more corruption than assumed at the cost of aborting sooner on dropouts.
    complete:
        True for the complete graph of SecAgg, whose conditions hold with certainty
        rather than with probability 1 - 2^-bits.
    dropout_rate, corruption_rate:
        delta and gamma as given: upper bounds on the fractions of clients that drop
        out (in any round) and that the adversary controls. More dropouts than
        assumed can make a session abort (fewer than t survivors around a client)
        and, for a sparse graph, can also split the honest survivors into groups
        whose partial sums the server learns. More corruption than assumed can let
        colluders rebuild an honest client's secrets. Both hurt privacy when
        underestimated; overestimating only costs a larger k.
    max_dropouts, max_corrupt:
        d = floor(delta n) and c = floor(gamma n), the counts the bounds were
        computed for. A float rate is read as the decimal it prints as, plus 1e-14,
        so 0.3 x 10 is 3 and 1/3 x 300 is 100; pass a ``Fraction`` for exact rates.
    security_bits:
        sigma: the probability, over the random graph, that the adversary learns more
        than the sum of the honest survivors' inputs is at most 2^-sigma.
    correctness_bits:
        rho: the probability that some client keeps fewer than t surviving
        neighbours, so the session aborts, is at most 2^-rho.
    threat_model:
        Whether the server may lie about dropouts (:class:`ThreatModel`).
    """

    num_clients: int
    degree: int
    threshold: int
    max_threshold: int
    complete: bool
    dropout_rate: float | Fraction
    corruption_rate: float | Fraction
    max_dropouts: int
    max_corrupt: int
    security_bits: int
    correctness_bits: int
    threat_model: ThreatModel


@dataclass(frozen=True)
class _Inputs:
    n: int
    dropout_rate: float | Fraction
    corruption_rate: float | Fraction
    d: int
    c: int
    sigma: int
    rho: int
    model: ThreatModel

    def describe(self) -> str:
        return (
            f"num_clients={self.n}, dropout_rate={self.dropout_rate!r}, "
            f"corruption_rate={self.corruption_rate!r} ({self.model.value} server)"
        )

    def parameters(self, degree: int, threshold: int, max_threshold: int) -> Parameters:
        return Parameters(
            num_clients=self.n,
            degree=degree,
            threshold=threshold,
            max_threshold=max_threshold,
            complete=degree == self.n - 1,
            dropout_rate=self.dropout_rate,
            corruption_rate=self.corruption_rate,
            max_dropouts=self.d,
            max_corrupt=self.c,
            security_bits=self.sigma,
            correctness_bits=self.rho,
            threat_model=self.model,
        )


def _rate(name: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
        # The decimal the caller wrote: Fraction(0.3) is just below 3/10, and
        # floor(0.3 * 10) would then undercount the corrupt clients.
        rate = Fraction(float.__repr__(value))
    else:
        rate = Fraction(value)
    if not 0 <= rate < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return rate


def _count(rate: Fraction, n: int, exact: bool) -> int:
    """floor(rate n); for a float rate, floor((rate + 1e-14) n).

    The tolerance absorbs representation error (1/3 is stored as 0.333...3, and
    floor(0.333...3 x 300) = 99) and only ever rounds toward more bad clients.
    """
    if not exact:
        rate += _RATE_TOLERANCE
    # A client has only n - 1 others; more bad clients than that change nothing.
    return min(rate.numerator * n // rate.denominator, n - 1)


def _bits(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not 1 <= value <= _MAX_BITS:
        raise ConfigError(f"{name} must be in [1, {_MAX_BITS}], got {value}")
    return value


def _inputs(
    num_clients: object,
    dropout_rate: float | Fraction,
    corruption_rate: float | Fraction,
    security_bits: object,
    correctness_bits: object,
    threat_model: object,
) -> _Inputs:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int):
        raise ConfigError(f"num_clients must be an integer, got {num_clients!r}")
    if num_clients < 2:
        raise ConfigError(f"num_clients must be >= 2, got {num_clients}")
    if not isinstance(threat_model, ThreatModel):
        raise ConfigError(f"threat_model must be a ThreatModel, got {threat_model!r}")
    delta = _rate("dropout_rate", dropout_rate)
    gamma = _rate("corruption_rate", corruption_rate)
    return _Inputs(
        n=num_clients,
        dropout_rate=dropout_rate,
        corruption_rate=corruption_rate,
        d=_count(delta, num_clients, not isinstance(dropout_rate, float)),
        c=_count(gamma, num_clients, not isinstance(corruption_rate, float)),
        sigma=_bits("security_bits", security_bits),
        rho=_bits("correctness_bits", correctness_bits),
        model=threat_model,
    )


def _min_threshold(model: ThreatModel, k: int, unsafe_below: int) -> int:
    """Smallest t whose security condition holds when ``unsafe_below`` is the smallest
    count m with Pr[corrupt neighbours >= m] small enough (>= 2: see below)."""
    # Semi-honest: t >= m, so t corrupt neighbours are too unlikely. Semi-malicious:
    # 2t - k >= m, so the honest holders cannot be played against each other.
    semi_honest = model is ThreatModel.SEMI_HONEST
    t = unsafe_below if semi_honest else (k + unsafe_below + 1) // 2
    # t = 1 would hand each neighbour a client's secrets outright.
    return max(t, 2)


def _complete_bounds(inp: _Inputs) -> tuple[int, int]:
    k = inp.n - 1
    # Every other client is a neighbour: the worst case is certain, not a tail event.
    return _min_threshold(inp.model, k, inp.c + 1), k - inp.d


def _log2_comb(a: int, b: int) -> float:
    if b < 0 or b > a:
        return -math.inf
    return (math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)) / math.log(2)


def _log2_disconnect(inp: _Inputs, k: int) -> float:
    n = inp.n
    bad = min(inp.c + inp.d, n)
    pairs = math.log2(n) + math.log2(n - k - 1) - 1
    return pairs + _log2_comb(bad, k) - _log2_comb(n, k)


def _connected_exact(inp: _Inputs, k: int, others: int) -> bool:
    """(C1): n (n-k-1)/2 * C(c+d, k)/C(n, k) <= 2^-(sigma+1), in integers.

    ``others`` is C(n-1, k); C(n, k) = C(n-1, k) n / (n - k) exactly.
    """
    n = inp.n
    bad = min(inp.c + inp.d, n)
    lhs = (n * (n - k - 1) * math.comb(bad, k)) << (inp.sigma + 1)
    return lhs * (n - k) <= 2 * others * n


def _tail_start(
    pool: int, marked: int, k: int, scale: int, guess: int | None = None, total: int | None = None
) -> int:
    """Smallest m with ``scale * Pr[X >= m] <= 1``, X ~ Hypergeometric(pool, marked, k).

    Exact, in integers: Pr[X = x] = w(x) / C(pool, k) with
    w(x) = C(marked, x) C(pool - marked, k - x). The weights are summed downward from
    a start s until the tail exceeds the bound. Above s the tail is at most
    w(s) r / (1 - r), r = w(s+1) / w(s), because the hypergeometric pmf is log-concave
    (its consecutive ratios decrease); s = the top of the support makes that term 0.
    ``guess`` (a lower bound on the answer) puts s just above it, which saves summing
    thousands of negligible terms; a decision the remainder leaves open widens the
    window, up to the top of the support. ``total`` is C(pool, k) if already known.
    """
    if total is None:
        total = math.comb(pool, k)
    top = min(marked, k)
    bottom = max(0, k - (pool - marked))
    window = _EXACT_WINDOW
    while True:
        start = top if guess is None else min(top, max(guess, bottom) + window)
        weight = math.comb(marked, start) * math.comb(pool - marked, k - start)
        rest_num, rest_den = 0, 1  # the tail above `start` is at most rest_num / rest_den
        if start < top:
            up = (marked - start) * (k - start)
            down = (start + 1) * (pool - marked - k + start + 1)
            if up >= down:  # at or below the mode: no geometric bound from here
                window *= 4
                continue
            rest_num, rest_den = weight * up, down - up
        x, tail, above = start, 0, 0
        while x >= bottom:
            above, tail = tail, tail + weight
            if tail * scale > total:
                break
            # w(x-1) from w(x); the division is exact because w(x-1) is an integer.
            weight = weight * x * (pool - marked - k + x) // ((marked - x + 1) * (k - x + 1))
            x -= 1
        # Pr[X >= x] exceeds the bound for sure; Pr[X >= x+1] must be within it for sure.
        if x >= bottom and scale * (above * rest_den + rest_num) <= total * rest_den:
            return x + 1
        if start == top:  # pragma: no cover - unreachable: the full sum is `total`
            raise AssertionError("hypergeometric tail search did not terminate")
        window *= 4


def _exact_starts(
    inp: _Inputs, k: int, guesses: tuple[int, int] = (0, 0), others: int | None = None
) -> tuple[int, int]:
    """The exact tail starts of (C2) and (C3) at degree k: corrupt, dropout.

    ``guesses`` are lower bounds on them (from `_screen`) and ``others`` is C(n-1, k);
    both only save time.
    """
    pool = inp.n - 1
    if others is None:
        others = math.comb(pool, k)
    corrupt_scale = inp.n << (inp.sigma + 1)
    corrupt_start = _tail_start(pool, inp.c, k, corrupt_scale, guesses[0], others)
    dropout_start = _tail_start(pool, inp.d, k, inp.n << inp.rho, guesses[1], others)
    return corrupt_start, dropout_start


def _steps_to_candidate(inp: _Inputs, k: int, corrupt_start: int, dropout_start: int) -> int:
    """0 if degree k has a threshold meeting (C2) + (C3) given these tail starts.

    Otherwise a number j >= 1 of steps of 2 such that no degree below k + 2j can have
    one, when the starts are lower bounds of the exact ones at k. As k grows, each tail
    start never decreases (one more neighbour never makes a count smaller), so t_min
    never decreases -- by at least 1 per step if semi-malicious -- while
    t_max = k + 1 - dropout_start grows by at most 2 per step.
    """
    t_min = _min_threshold(inp.model, k, corrupt_start)
    t_max = k + 1 - dropout_start
    if t_min <= t_max:
        return 0
    reach = 2 - t_max  # t >= 2 needs t_max to grow this much
    if inp.model is ThreatModel.SEMI_HONEST:
        reach = max(reach, corrupt_start - t_max)
        return max(1, (reach + 1) // 2)
    # Semi-malicious: after j steps t_min >= j + ceil((k + corrupt_start) / 2).
    return max(1, (reach + 1) // 2, (k + corrupt_start + 1) // 2 - t_max)


def _log2_pmf(pool: int, marked: int, k: int, x: int) -> float:
    return _log2_comb(marked, x) + _log2_comb(pool - marked, k - x) - _log2_comb(pool, k)


def _log2_tail_window(pool: int, marked: int, k: int, x: int) -> float:
    """log2 of a partial sum of Pr[X = y], y >= x: a lower bound on log2 Pr[X >= x]."""
    log2_first = _log2_pmf(pool, marked, k, x)
    if log2_first == -math.inf:
        return log2_first
    term = total = 1.0
    for y in range(x, min(x + _SCREEN_MAX_TERMS, marked, k)):
        term *= (marked - y) * (k - y) / ((y + 1) * (pool - marked - k + y + 1))
        total += term
        if term < total * 1e-9:
            break
    return log2_first + math.log2(total)


def _tail_start_lower_bound(pool: int, marked: int, k: int, log2_bound: float) -> int:
    """A number m' <= the true `_tail_start` (with bound 2^log2_bound), from floats.

    If a partial sum of Pr[X = y] for y >= x exceeds the bound (by the safety margin)
    then so does Pr[X >= x], hence the true start is > x. The largest such x is found
    by bisection above the mode, where the partial sums decrease; each claim rests on
    a direct evaluation, so a misplaced mode would only loosen the bound.
    """
    threshold = log2_bound + _SCREEN_MARGIN_BITS
    lo_x = max(0, k - (pool - marked))
    hi_x = min(marked, k)
    mode = min(max((k + 1) * (marked + 1) // (pool + 2), lo_x), hi_x)
    if _log2_tail_window(pool, marked, k, mode) <= threshold:
        return 0
    if _log2_tail_window(pool, marked, k, hi_x) > threshold:
        return hi_x + 1
    good, bad = mode, hi_x
    while bad - good > 1:
        mid = (good + bad) // 2
        if _log2_tail_window(pool, marked, k, mid) > threshold:
            good = mid
        else:
            bad = mid
    return good + 1


def _screen(inp: _Inputs, k: int) -> tuple[int, tuple[int, int]]:
    """`_steps_to_candidate` from float lower bounds of the tail starts, and the bounds."""
    pool = inp.n - 1
    log2_n = math.log2(inp.n)
    corrupt = _tail_start_lower_bound(pool, inp.c, k, -(inp.sigma + 1) - log2_n)
    dropout = _tail_start_lower_bound(pool, inp.d, k, -inp.rho - log2_n)
    return _steps_to_candidate(inp, k, corrupt, dropout), (corrupt, dropout)


def _first_candidate_degree(inp: _Inputs) -> int | None:
    """Smallest even k such that every smaller even k certainly fails (C1).

    The exact bound of (C1) decreases as k grows, so bisection on its float estimate
    (with the safety margin) skips only degrees that certainly fail.
    """
    limit = -(inp.sigma + 1) + _SCREEN_MARGIN_BITS
    lo, hi = 2, inp.n - 2 - (inp.n % 2)  # even degrees in [2, n - 2]
    if hi < lo or _log2_disconnect(inp, hi) > limit:
        return None
    if _log2_disconnect(inp, lo) <= limit:
        return lo
    while hi - lo > 2:  # invariant: lo certainly fails, hi may pass
        mid = (lo + hi) // 4 * 2
        if _log2_disconnect(inp, mid) > limit:
            lo = mid
        else:
            hi = mid
    return hi


def _harary_search(inp: _Inputs) -> tuple[int, int, int] | None:
    k = _first_candidate_degree(inp)
    while k is not None and k <= inp.n - 2:
        steps, guesses = _screen(inp, k)
        others = math.comb(inp.n - 1, k) if steps == 0 else 0
        if steps == 0 and _connected_exact(inp, k, others):
            corrupt_start, dropout_start = _exact_starts(inp, k, guesses, others)
            steps = _steps_to_candidate(inp, k, corrupt_start, dropout_start)
            if steps == 0:
                t_min = _min_threshold(inp.model, k, corrupt_start)
                return k, t_min, k + 1 - dropout_start
        k += 2 * max(steps, 1)
    return None


@functools.lru_cache(maxsize=256)
def tolerated_corrupt_neighbours(
    num_clients: int,
    degree: int,
    corruption_rate: float,
    *,
    complete: bool,
    security_bits: int = 40,
) -> int:
    """c: the corrupt neighbours a client of a session must tolerate.

    With c = floor(gamma n) corrupt clients (the rate read as in
    :func:`choose_parameters`): on the complete graph every one of them is a
    neighbour, so c (at most k); on a random Harary graph of degree k, c = m - 1 for
    the smallest m with n Pr[A >= m] <= 2^-(sigma + 1), A the hypergeometric number of
    corrupt neighbours -- the same tail :func:`choose_parameters` bounds (C2) with.

    Raises
    ------
    ConfigError
        If the rate or the security parameter is out of range.
    """
    corrupt = corrupt_clients(num_clients, corruption_rate)
    return corrupt_neighbours_among(
        num_clients, degree, corrupt, complete=complete, security_bits=security_bits
    )


def corrupt_clients(num_clients: int, corruption_rate: float) -> int:
    """floor(gamma n): the clients the adversary may control, the rate read as in
    :func:`choose_parameters` (the decimal it prints as, plus 1e-14)."""
    return _count(_rate("corruption_rate", corruption_rate), num_clients, exact=False)


@functools.lru_cache(maxsize=1024)
def corrupt_neighbours_among(
    members: int, degree: int, corrupt: int, *, complete: bool, security_bits: int = 40
) -> int:
    """c for a graph over ``members`` clients of which up to ``corrupt`` are the
    adversary's: all of them (at most k) on a complete graph, else the largest count
    exceeded with probability at most 2^-(sigma + 1) / members per client.

    A server that admits fewer clients to a session than it was configured for keeps
    its corrupt ones: the same ``corrupt`` among fewer members means more corrupt
    neighbours, which is why clients check the rules against the directory they get.
    """
    corrupt = min(corrupt, members - 1)
    if complete or degree >= members - 1:
        return min(corrupt, degree)
    sigma = _bits("security_bits", security_bits)
    start = _tail_start(members - 1, corrupt, degree, members << (sigma + 1))
    return start - 1


def complete_parameters(
    num_clients: int,
    *,
    dropout_rate: float | Fraction,
    corruption_rate: float | Fraction,
    security_bits: int = 40,
    correctness_bits: int = 20,
    threat_model: ThreatModel = ThreatModel.SEMI_MALICIOUS,
) -> Parameters:
    """The SecAgg threshold for the complete graph (k = n - 1).

    Every other client is a neighbour, so the worst case is certain and the
    conditions are deterministic (``security_bits`` and ``correctness_bits`` are only
    recorded): with c = floor(gamma n) corrupt and d = floor(delta n) dropped clients,

    - semi-honest: t >= c + 1, so the corrupt clients' c shares never rebuild an
      honest client's secrets (Bonawitz et al. 2017, honest-but-curious: t > |C|);
    - semi-malicious: 2t >= (n - 1) + c + 1. A server that lies about dropouts can
      collect one kind of share from each honest holder and both kinds from the
      corrupt ones; two sets of t shares then need 2t <= (n - 1 - c) + 2c. This is
      Bonawitz et al.'s active-adversary t > (n + n_C) / 2 (t > 2n/3 for
      n_C < n/3) with the shares held by the n - 1 others instead of all n clients;
    - both: t >= 2 and t <= n - 1 - d, so every client keeps t surviving holders.

    Parameters
    ----------
    num_clients:
        n >= 2.
    dropout_rate, corruption_rate:
        delta and gamma in [0, 1); see :class:`Parameters`.
    security_bits, correctness_bits:
        Recorded in the result (the guarantees hold with certainty).
    threat_model:
        :class:`ThreatModel`; by default the server may lie about dropouts.

    Returns
    -------
    Parameters
        With ``complete=True`` and the smallest secure threshold.

    Raises
    ------
    ConfigError
        If an input is out of range or no threshold meets both conditions.
    """
    inp = _inputs(
        num_clients, dropout_rate, corruption_rate, security_bits, correctness_bits, threat_model
    )
    return _complete_or_raise(inp)


def _complete_or_raise(inp: _Inputs) -> Parameters:
    t_min, t_max = _complete_bounds(inp)
    if t_min > t_max:
        raise ConfigError(
            f"no secure parameters for {inp.describe()}: even the complete graph needs "
            f"t >= {t_min} (t >= 2, and c={inp.c} corrupt clients must not reach t) but "
            f"only n - 1 - d = {t_max} neighbours are sure to survive d={inp.d} dropouts; "
            f"lower dropout_rate or corruption_rate, or add clients"
        )
    return inp.parameters(inp.n - 1, t_min, t_max)


def choose_parameters(
    num_clients: int,
    *,
    dropout_rate: float | Fraction,
    corruption_rate: float | Fraction,
    security_bits: int = 40,
    correctness_bits: int = 20,
    threat_model: ThreatModel = ThreatModel.SEMI_MALICIOUS,
) -> Parameters:
    """The smallest even degree k and a threshold t for SecAgg+ (Bell et al. 2020).

    Model. n clients; the adversary controls the server and c = floor(gamma n)
    clients; d = floor(delta n) clients drop out. Both sets are fixed independently
    of the seed of :func:`~securefl.secagg.graph.harary_graph`, so over the random
    permutation their ring positions are uniformly random. For a client u, the number
    of corrupt neighbours A and of dropped neighbours D are then hypergeometric: k
    draws from the n - 1 other clients, of which c (resp. at most d) are marked.

    Conditions, every probability computed exactly with integers:

    (C1) honest survivors stay connected:
         n (n - k - 1) / 2 * C(c + d, k) / C(n, k) <= 2^-(sigma + 1).
         Removing nodes disconnects H(n, k) only if they cover two disjoint runs of
         k/2 consecutive ring positions (otherwise the survivors still form a chain
         of neighbours around the ring). There are n (n - k - 1) / 2 such pairs of
         runs, each k positions, all removed with probability at most
         C(c + d, k) / C(n, k); the union bound gives the left side. When the
         honest survivors are connected the server learns only their total; were
         they split, it would learn each part's sum, since the masks on a part's
         edges to corrupt or dropped clients are known to it.
    (C2) no honest client's secrets can be rebuilt:
         semi-honest:    n * Pr[A >= t]          <= 2^-(sigma + 1)  (t > A),
         semi-malicious: n * Pr[A >= 2t - k]     <= 2^-(sigma + 1)  (2t > k + A).
         With t > A the corrupt neighbours cannot rebuild either secret. A server
         that lies about dropouts gets both kinds of share from the A corrupt
         holders but one kind per client from each honest one, so t of each kind
         needs 2(t - A) <= k - A; 2t > k + A rules that out. Union bound over n.
    (C3) every client keeps t surviving neighbours:
         n * Pr[D >= k - t + 1] <= 2^-rho,
         so the server can rebuild the self-mask seed of every survivor and the key
         of every dropped client.

    (C1) + (C2) fail with probability at most 2^-sigma; (C3) fails with probability at
    most 2^-rho. Also t >= 2, so no single neighbour ever holds a secret outright.
    The search returns the first even k = 2, 4, ..., n - 2 with an integer t meeting
    (C1)-(C3), and the smallest such t. A degree is skipped without the exact check
    only when floating-point estimates miss a bound by more than 0.01 bit (far
    beyond their error), or when it cannot work because t_min never decreases and
    t_max grows by at most 2 per step of k. If no k <= n - 2 works, the complete
    graph's deterministic conditions (:func:`complete_parameters`) are used. These
    are the conditions of Bell et al. as implemented in Google's
    graph_parameter_finder.cc, with the exact population n - 1 of a client's
    possible neighbours instead of n, and with (C3) checked after t is raised to 2.

    Against a semi-malicious server that knows the graph and reports honest clients
    as dropped, (C2) still keeps every honest client's update masked, but such false
    reports can split the survivors; the ConsistencyCheck round and each client's
    check that t of its neighbours survive bound what a server gains that way (Bell et
    al., semi-malicious setting).

    Parameters
    ----------
    num_clients:
        n >= 2.
    dropout_rate:
        delta in [0, 1), the largest fraction of clients expected to drop out.
    corruption_rate:
        gamma in [0, 1), the largest fraction of clients the adversary controls.
    security_bits:
        sigma in [1, 256]: privacy fails with probability at most 2^-sigma.
    correctness_bits:
        rho in [1, 256]: a session aborts for lack of shares with probability at
        most 2^-rho.
    threat_model:
        :class:`ThreatModel`; by default the server may lie about dropouts.

    Returns
    -------
    Parameters
        ``complete=False`` with an even ``degree`` < n - 1, or the complete graph.

    Raises
    ------
    ConfigError
        If an input is out of range, or no degree and threshold meet the conditions
        (for example when dropout_rate + corruption_rate leave too few honest
        survivors); the message names the inputs.
    """
    inp = _inputs(
        num_clients, dropout_rate, corruption_rate, security_bits, correctness_bits, threat_model
    )
    found = _harary_search(inp)
    if found is not None:
        k, t_min, t_max = found
        return inp.parameters(k, t_min, t_max)
    return _complete_or_raise(inp)
