"""securefl.aggregate: one call per protocol, the same weighted mean."""

from __future__ import annotations

import numpy as np
import pytest

import securefl
from securefl.secagg.messages import Stage
from securefl.testing.drbg import Drbg


def updates_and_weights(n: int = 6):
    data = np.random.default_rng(8)  # test data
    ups = [
        {"w": data.normal(0, 1, (3, 4)).astype(np.float32), "b": data.normal(0, 1, 4)}
        for _ in range(n)
    ]
    return ups, [int(w) for w in data.integers(1, 500, n)]


def plain_mean(ups, weights, survivors):
    total = sum(weights[i] for i in survivors)
    return {
        k: sum(weights[i] * ups[i][k].astype(np.float64) for i in survivors) / total for k in ups[0]
    }


@pytest.mark.parametrize("protocol", ["plain", "secagg", "secagg+", "ckks"])
def test_every_protocol_gives_the_weighted_mean(protocol) -> None:
    if protocol == "ckks":
        pytest.importorskip("tenseal")
    ups, weights = updates_and_weights()
    result = securefl.aggregate(ups, weights, protocol=protocol, rng=Drbg(protocol))
    assert result.protocol == protocol
    assert result.contributors == tuple(range(6)) and result.dropped == ()
    assert result.total_weight == sum(weights)
    want = plain_mean(ups, weights, range(6))
    assert list(result.aggregate) == ["w", "b"]
    assert result.aggregate["w"].dtype == np.float32 and result.aggregate["b"].dtype == np.float64
    for key in want:
        # float32 leaves round to float32; the protocols add at most 1e-6 here.
        assert np.max(np.abs(result.aggregate[key] - want[key])) < 2e-6
    assert result.seconds > 0
    assert set(result.bytes_sent) == set(range(6)) and min(result.bytes_sent.values()) > 0


@pytest.mark.parametrize("protocol", ["plain", "secagg", "secagg+"])
def test_dropouts_are_left_out(protocol) -> None:
    ups, weights = updates_and_weights()
    result = securefl.aggregate(
        ups, weights, protocol=protocol, dropouts={2: Stage.MASKED_INPUT_COLLECTION}, rng=Drbg("d")
    )
    assert result.contributors == (0, 1, 3, 4, 5) and result.dropped == (2,)
    want = plain_mean(ups, weights, result.contributors)
    assert np.max(np.abs(result.aggregate["b"] - want["b"])) < 1e-6


def test_secagg_phases_and_bytes_are_reported() -> None:
    ups, weights = updates_and_weights()
    result = securefl.aggregate(ups, weights, protocol="secagg+", rng=Drbg("p"))
    assert {"client:MaskedInputCollection", "server:Unmasking"} <= set(result.phase_seconds)
    # 16 coordinates + the weight, 32-bit ring: the masked vector dominates the upload.
    assert all(b >= 24 + 17 * 4 for b in result.bytes_sent.values())


def test_too_many_dropouts_raise_protocol_abort() -> None:
    ups, weights = updates_and_weights()
    schedule = dict.fromkeys(range(4), Stage.SHARE_KEYS)
    with pytest.raises(securefl.ProtocolAbort, match="need at least"):
        securefl.aggregate(ups, weights, protocol="secagg", dropouts=schedule, rng=Drbg("a"))


def test_bad_arguments() -> None:
    ups, weights = updates_and_weights()
    with pytest.raises(securefl.ConfigError, match="unknown protocol"):
        securefl.aggregate(ups, weights, protocol="magic")  # type: ignore[arg-type]
    with pytest.raises(securefl.ConfigError, match="two clients"):
        securefl.aggregate(ups[:1])
    with pytest.raises(securefl.ConfigError, match="weight"):
        securefl.aggregate(ups, [0] * 6)


def test_ckks_with_one_survivor_aborts_like_secagg() -> None:
    """A CKKS "sum" of one ciphertext is that client's update: no client decrypts it."""
    pytest.importorskip("tenseal")
    updates = [np.full(3, 0.1 * i) for i in range(3)]
    dropouts = {0: Stage.MASKED_INPUT_COLLECTION, 1: Stage.MASKED_INPUT_COLLECTION}
    with pytest.raises(securefl.ProtocolAbort, match="at least 2 contributions"):
        securefl.aggregate(updates, protocol="ckks", dropouts=dropouts)
