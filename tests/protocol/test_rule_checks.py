"""The configuration rules of docs/PROTOCOL.md ("Configuration"), checked independently.

c (tolerated corrupt neighbours) is recomputed here from its definition, the digest
from its formula, and every threshold rule is broken through ``from_bytes`` by
patching one field of the 59-byte wire form.
"""

from __future__ import annotations

import hashlib
import math
import struct
from fractions import Fraction

import pytest
from scipy.stats import hypergeom

from protocol.harness import Session, make_config
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import AdvertiseKeys, Stage

WIRE = struct.Struct("<4sBIIQBdQBBIBIdH")
N_, T_, W_, FLAGS, N_MIN, GAMMA, SIGMA = 2, 3, 7, 11, 12, 13, 14  # field indices


def patched(config: SecAggConfig, **fields: object) -> bytes:
    """``config.to_bytes()`` with some fields replaced (by index name above)."""
    index = {
        "n": N_,
        "t": T_,
        "w": W_,
        "flags": FLAGS,
        "n_min": N_MIN,
        "gamma": GAMMA,
        "sigma": SIGMA,
    }
    values = list(WIRE.unpack(config.to_bytes()))
    for name, value in fields.items():
        values[index[name]] = value
    return WIRE.pack(*values)


# ---- (m) t > c -------------------------------------------------------------------------


def test_threshold_not_above_corrupt_neighbours_is_refused() -> None:
    # Complete graph: c = floor(0.3 * 10) = 3 corrupt neighbours; t = 3 would let them
    # rebuild a client's secrets.
    with pytest.raises(ConfigError, match=r"t > c") as info:
        SecAggConfig(num_clients=10, threshold=3, dimension=4, corruption_rate=0.3)
    assert "c=3" in str(info.value)
    assert "smallest threshold that satisfies it is t = 4" in str(info.value)
    ok = SecAggConfig(num_clients=10, threshold=4, dimension=4, corruption_rate=0.3)
    assert ok.tolerated_corrupt_neighbours == 3


def test_threshold_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"t >= 2"):
        SecAggConfig(num_clients=10, threshold=1, dimension=4)


def test_authenticated_threshold_needs_2t_above_k_plus_c() -> None:
    # k = 9, c = 0: 2t > 9 needs t >= 5.
    with pytest.raises(ConfigError, match=r"2t > k \+ c = 9 \+ 0"):
        SecAggConfig(num_clients=10, threshold=4, dimension=4, authenticated=True)
    SecAggConfig(num_clients=10, threshold=5, dimension=4, authenticated=True)
    SecAggConfig(num_clients=10, threshold=4, dimension=4)  # fine without authentication


# ---- (n) c on the Harary graph ---------------------------------------------------------


def corrupt_clients(n: int, gamma: float) -> int:
    """floor(gamma n), gamma read as the decimal it was written as (at most n - 1)."""
    return min(math.floor(Fraction(repr(gamma)) * n), n - 1)


def c_exact(n: int, gamma: float, k: int, sigma: int) -> int:
    """Largest m - 1 with m the smallest count such that n Pr[A >= m] <= 2^-(sigma+1),
    A ~ Hypergeometric(n - 1 total, floor(gamma n) marked, k draws): exact fractions."""
    pool, marked = n - 1, corrupt_clients(n, gamma)
    total = math.comb(pool, k)
    top = min(marked, k)
    weights = [math.comb(marked, x) * math.comb(pool - marked, k - x) for x in range(top + 1)]
    assert sum(weights) == total
    for m in range(top + 2):
        tail = Fraction(sum(weights[m:]), total)
        if n * tail <= Fraction(1, 2 ** (sigma + 1)):
            return m - 1
    raise AssertionError("unreachable: Pr[A >= top + 1] = 0")


def c_scipy(n: int, gamma: float, k: int, sigma: int) -> int:
    """The same from scipy's log survival function: log Pr[A >= m] = logsf(m - 1)."""
    dist = hypergeom(M=n - 1, n=corrupt_clients(n, gamma), N=k)
    limit = -(sigma + 1) * math.log(2) - math.log(n)
    m = 0
    while not dist.logsf(m - 1) <= limit:
        m += 1
    return m - 1


HARARY_CASES = [
    # (n, gamma, k, sigma)
    (50, 0.1, 8, 20),
    (100, 0.1, 32, 40),
    (100, 0.2, 20, 40),
    (100, 0.2, 20, 80),
    (200, 0.0, 10, 40),
    (500, 0.3, 60, 80),
    (1000, 0.05, 50, 40),
    (1000, 0.1, 96, 20),
    (1000, 0.1, 96, 40),
    (1000, 0.1, 96, 128),
    (1000, 0.2, 200, 128),
    (10000, 0.1, 122, 40),
]


@pytest.mark.parametrize("n, gamma, k, sigma", HARARY_CASES)
def test_harary_tolerated_corrupt_neighbours_match_the_hypergeometric_tail(
    n: int, gamma: float, k: int, sigma: int
) -> None:
    expected = c_exact(n, gamma, k, sigma)
    assert c_scipy(n, gamma, k, sigma) == expected  # the two derivations agree
    fields = {
        "num_clients": n,
        "dimension": 1,
        "bits": 64,
        "graph": GraphKind.HARARY,
        "degree": k,
        "corruption_rate": gamma,
        "security_bits": sigma,
    }
    assert SecAggConfig.smallest_threshold(
        n, graph=GraphKind.HARARY, degree=k, corruption_rate=gamma, security_bits=sigma
    ) == max(2, expected + 1)
    if expected >= k:  # every neighbour may be corrupt: no threshold t <= k is secure
        with pytest.raises(ConfigError, match=rf"\(c={expected}\).*no t <= k = {k}"):
            SecAggConfig(threshold=k, **fields)
        return
    config = SecAggConfig(threshold=k, **fields)  # the largest t: every rule holds
    assert config.tolerated_corrupt_neighbours == expected
    assert config.minimum_threshold() == max(2, expected + 1)
    # And the constructor enforces t > c with exactly this c.
    if expected >= 2:
        with pytest.raises(ConfigError, match=rf"t > c = {expected} "):
            SecAggConfig(threshold=expected, **fields)
        assert SecAggConfig(threshold=expected + 1, **fields).tolerated_corrupt_neighbours == (
            expected
        )


def test_complete_graph_c_is_floor_gamma_n_capped_at_k() -> None:
    for n, gamma in [(10, 0.3), (20, 0.15), (7, 0.0), (100, 0.1)]:
        config = SecAggConfig(num_clients=n, threshold=n - 1, dimension=1, corruption_rate=gamma)
        assert config.tolerated_corrupt_neighbours == min(corrupt_clients(n, gamma), n - 1)


# ---- (o) the digest --------------------------------------------------------------------


BASE = {"num_clients": 10, "threshold": 5, "dimension": 4}


def test_to_bytes_is_the_documented_59_byte_layout() -> None:
    config = SecAggConfig(**BASE, corruption_rate=0.2, security_bits=50, min_survivors=6)
    blob = config.to_bytes()
    assert len(blob) == 59 == WIRE.size
    fields = WIRE.unpack(blob)
    assert fields[0] == b"SFLC" and fields[1] == 2
    assert fields[N_] == 10 and fields[T_] == 5 and fields[4] == 4
    assert fields[N_MIN] == 6 and fields[GAMMA] == 0.2 and fields[SIGMA] == 50
    assert fields[FLAGS] == 0 and fields[9] == 0 and fields[10] == 0


@pytest.mark.parametrize(
    "config",
    [
        SecAggConfig(**BASE),
        SecAggConfig(**BASE, authenticated=True),
        SecAggConfig(
            num_clients=12,
            threshold=5,
            dimension=3,
            graph=GraphKind.HARARY,
            degree=6,
            ring_input=True,
        ),
    ],
)
def test_digest_is_sha256_of_label_and_wire_form(config: SecAggConfig) -> None:
    want = hashlib.sha256(b"securefl/secagg/config/v2" + config.to_bytes()).digest()
    assert config.digest() == want


VARIANTS = {
    "corruption_rate": {"corruption_rate": 0.1},
    "security_bits": {"security_bits": 64},
    "ring_input": {"ring_input": True},
    "min_survivors": {"min_survivors": 6},
}


def test_each_of_the_version_2_fields_changes_the_digest() -> None:
    base = SecAggConfig(**BASE)
    digests = {"base": base.digest()}
    for name, change in VARIANTS.items():
        variant = SecAggConfig(**BASE, **change)
        assert (
            variant.digest()
            == hashlib.sha256(b"securefl/secagg/config/v2" + variant.to_bytes()).digest()
        )
        digests[name] = variant.digest()
    assert len(set(digests.values())) == len(digests), digests


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_client_refuses_a_server_whose_config_differs_in_one_v2_field(name: str) -> None:
    n = 10
    ours = SecAggConfig(**BASE, max_weight=10)
    theirs = SecAggConfig(**BASE, max_weight=10, **VARIANTS[name])
    session = Session.create(ours, n, seed="digest")
    start = session.inbox[0]
    client = session.clients[0]
    forged = type(start)(start.nonce, theirs.digest())
    assert client.handle(forged) is None
    assert client.stage is Stage.ABORTED
    assert "configuration differs" in client.abort_reason
    # With the matching digest the same client would advertise.
    assert isinstance(session.clients[1].handle(start), AdvertiseKeys)


# ---- (p) from_bytes re-checks every rule -----------------------------------------------


def test_from_bytes_round_trips_a_valid_configuration() -> None:
    for config in (
        SecAggConfig(**BASE, max_weight=7),
        SecAggConfig(num_clients=10, threshold=4, dimension=4, corruption_rate=0.3),
        make_config(12, t=4, d=5, graph="harary", degree=6),
    ):
        again = SecAggConfig.from_bytes(config.to_bytes())
        assert again.to_bytes() == config.to_bytes()
        assert again.digest() == config.digest()


def test_from_bytes_refuses_t_below_2() -> None:
    with pytest.raises(ConfigError, match=r"t >= 2"):
        SecAggConfig.from_bytes(patched(SecAggConfig(**BASE), t=1))


def test_from_bytes_refuses_t_not_above_c() -> None:
    base = SecAggConfig(num_clients=10, threshold=4, dimension=4, corruption_rate=0.3)  # c = 3
    with pytest.raises(ConfigError, match=r"t > c = 3"):
        SecAggConfig.from_bytes(patched(base, t=3))
    # The same rule through the corruption rate: c = floor(0.4 * 10) = 4 >= t.
    with pytest.raises(ConfigError, match=r"t > c = 4"):
        SecAggConfig.from_bytes(patched(base, gamma=0.4))


def test_from_bytes_recomputes_harary_c_from_the_security_parameter() -> None:
    # n = 1000, k = 96, gamma = 0.1: c = 37 at sigma = 40 but 59 at sigma = 128.
    base = SecAggConfig(
        num_clients=1000,
        threshold=40,
        dimension=2,
        bits=64,
        graph=GraphKind.HARARY,
        degree=96,
        corruption_rate=0.1,
        security_bits=40,
    )
    assert base.tolerated_corrupt_neighbours == c_exact(1000, 0.1, 96, 40) == 37
    assert c_exact(1000, 0.1, 96, 128) == 59
    with pytest.raises(ConfigError, match=r"t > c = 59"):
        SecAggConfig.from_bytes(patched(base, sigma=128))


def test_from_bytes_refuses_authenticated_flag_without_2t_above_k_plus_c() -> None:
    base = SecAggConfig(num_clients=10, threshold=4, dimension=4)  # valid semi-honest
    with pytest.raises(ConfigError, match=r"2t > k \+ c = 9 \+ 0"):
        SecAggConfig.from_bytes(patched(base, flags=1))
    # With t = 5 the authenticated flag is fine.
    ok = SecAggConfig.from_bytes(patched(SecAggConfig(**BASE), flags=1))
    assert ok.authenticated


def test_from_bytes_refuses_total_weight_that_wraps_the_ring() -> None:
    base = SecAggConfig(**BASE, bits=32, max_weight=10)
    w = 2**32 // 10 + 1  # n W >= 2^32 while W < 2^32
    with pytest.raises(ConfigError, match=r"total weight does not fit a ring of b=32 bits"):
        SecAggConfig.from_bytes(patched(base, w=w))
    # One below the limit is accepted: n W < 2^b exactly.
    assert SecAggConfig.from_bytes(patched(base, w=(2**32 - 1) // 10)).max_weight == 429496729


def test_from_bytes_refuses_min_survivors_above_n() -> None:
    base = SecAggConfig(**BASE, min_survivors=10)
    assert SecAggConfig.from_bytes(base.to_bytes()).min_survivors == 10
    with pytest.raises(ConfigError, match=r"min_survivors must be an integer in \[1, n=10\]"):
        SecAggConfig.from_bytes(patched(base, n_min=11))


def test_from_bytes_accepts_one_encoding_per_configuration() -> None:
    """Review finding: a complete-graph blob with a degree, or gamma = -0.0, decoded
    to a configuration whose own encoding differed from the bytes received."""
    import struct

    config = SecAggConfig(num_clients=6, threshold=3, dimension=4)
    blob = bytearray(config.to_bytes())
    fields = list(struct.unpack("<4sBIIQBdQBBIBIdH", bytes(blob)))
    fields[10] = 7  # degree on a complete graph
    with pytest.raises(ConfigError, match="degree 0"):
        SecAggConfig.from_bytes(struct.pack("<4sBIIQBdQBBIBIdH", *fields))
    negative = SecAggConfig(num_clients=6, threshold=3, dimension=4, corruption_rate=-0.0)
    assert negative.to_bytes() == config.to_bytes() and negative.digest() == config.digest()
