"""A share holder that lies in Unmasking never yields a wrong sum, and is named.

Issue 11, finding 4: the reconstructed self-mask seed b_u used to go unchecked, so a
holder that shifted one share (keeping every chunk in the field) made the server
unmask with a wrong b_u; in ring-input (DP) mode the session then completed with a
corrupted sum. Each client now commits to b_u in AdvertiseKeys and the server checks
every reconstructed secret (the mask key against its public key, as before).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from protocol.harness import assert_close_to_plain, make_config, make_updates
from securefl.primitives import shamir
from securefl.primitives.share_decoding import decode_shares
from securefl.secagg import codec
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import Stage, UnmaskingResponse
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session

LIAR = 1


def _shift(share: bytes) -> bytes:
    """Add 1 to the first field element of a share, staying inside GF(2^61 - 1)."""
    first = int.from_bytes(share[:8], "little")
    return ((first + 1) % shamir.PRIME).to_bytes(8, "little") + share[8:]


def _lie(field: str, owner: int | None = None):
    """A tamper hook: client LIAR shifts its share of ``owner`` (default: every one)."""

    def tamper(cid: int, stage: Stage, wire: bytes) -> bytes:
        if cid != LIAR or stage is not Stage.UNMASKING:
            return wire
        m = codec.decode(wire)
        assert isinstance(m, UnmaskingResponse)
        pairs = tuple(
            (i, _shift(s) if owner is None or i == owner else s) for i, s in getattr(m, field)
        )
        return codec.encode(dataclasses.replace(m, **{field: pairs}))

    return tamper


def _ring_config(n: int, t: int) -> SecAggConfig:
    # A wide weight range (n W < 2^20) so that the total-weight check cannot catch a
    # wrong mask by luck: a third of all wrong sums pass it.
    return SecAggConfig(
        num_clients=n, threshold=t, dimension=16, bits=20, ring_input=True, max_weight=2**17
    )


def _ring_updates(n: int, d: int) -> list[np.ndarray]:
    data = np.random.default_rng(7)  # test data, not key material
    return [data.integers(0, 2**20, d).astype(np.uint32) for _ in range(n)]


def _ring_sum(updates, contributors) -> np.ndarray:
    return (np.sum([updates[i].astype(np.uint64) for i in contributors], axis=0) % 2**20).astype(
        np.uint32
    )


@pytest.mark.parametrize("seed", range(6))
def test_ring_input_session_with_a_lying_holder_never_completes_wrong(seed) -> None:
    """The review's reproduction: n=5, t=2, b=20, ring input, one shifted b-share.

    With exactly t = 2 shares of some survivor's seed (two clients dropped) the server
    cannot tell which holder lied, so it must abort naming the holders."""
    n, t = 5, 2
    config = _ring_config(n, t)
    updates = _ring_updates(n, config.dimension)
    report = run_session(
        config,
        updates,
        rng=Drbg(f"ring-liar-{seed}"),
        dropouts={4: Stage.MASKED_INPUT_COLLECTION, 3: Stage.MASKED_INPUT_COLLECTION},
        tamper=_lie("self_mask_shares"),
    )
    # 3 survivors: each survivor's seed has exactly 2 holders among the survivors.
    assert report.stage is Stage.ABORTED, "a lying holder must never give a completed session"
    assert report.result is None
    assert "do not reconstruct the committed value" in report.abort_reason
    assert str(LIAR) in report.abort_reason.split("holders:")[1]


@pytest.mark.parametrize("seed", range(4))
def test_ring_input_with_spare_shares_completes_with_the_true_sum(seed) -> None:
    n, t = 5, 2
    config = _ring_config(n, t)
    updates = _ring_updates(n, config.dimension)
    report = run_session(
        config, updates, rng=Drbg(f"ring-spare-{seed}"), tamper=_lie("self_mask_shares")
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    np.testing.assert_array_equal(report.result.ring_sum, _ring_sum(updates, range(n)))
    liars = {r.sender for r in report.rejections if "false share" in r.reason}
    assert liars == {LIAR}


def test_float_mode_lying_self_mask_holder_is_named_and_outvoted() -> None:
    n = 6
    config = make_config(n, t=3, d=40)
    updates, weights = make_updates(n, config.dimension)
    report = run_session(
        config, updates, weights, rng=Drbg("float-liar"), tamper=_lie("self_mask_shares", 0)
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert_close_to_plain(config, report.result, updates, weights)
    named = [r for r in report.rejections if r.sender == LIAR]
    assert named and "false share of client 0's self-mask seed" in named[0].reason


def test_float_mode_lying_self_mask_holder_with_exactly_t_shares_aborts() -> None:
    n = 6
    config = make_config(n, t=3, d=40)
    updates, weights = make_updates(n, config.dimension)
    # Clients 4 and 5 drop after key sharing: survivor 0's seed has 3 = t live holders.
    dropouts = {4: Stage.MASKED_INPUT_COLLECTION, 5: Stage.MASKED_INPUT_COLLECTION}
    report = run_session(
        config,
        updates,
        weights,
        rng=Drbg("float-liar-t"),
        dropouts=dropouts,
        tamper=_lie("self_mask_shares", 0),
    )
    assert report.stage is Stage.ABORTED
    assert "client 0's self-mask seed do not reconstruct" in report.abort_reason


def test_lying_key_share_holder_is_named_and_outvoted() -> None:
    n = 6
    config = make_config(n, t=3, d=40)
    updates, weights = make_updates(n, config.dimension)
    dropouts = {5: Stage.MASKED_INPUT_COLLECTION}  # its key is rebuilt from 4 > t shares
    report = run_session(
        config,
        updates,
        weights,
        rng=Drbg("key-liar"),
        dropouts=dropouts,
        tamper=_lie("key_shares", 5),
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert 5 not in report.result.contributors
    assert_close_to_plain(config, report.result, updates, weights)
    assert any(r.sender == LIAR and "client 5's mask key" in r.reason for r in report.rejections)


@pytest.mark.parametrize("holders", [3, 4, 5, 7])
def test_decoding_with_exactly_t_or_spare_shares(holders) -> None:
    """The error correction behind every reconstruction (seed or key alike): exactly
    t shares with a liar cannot be corrected; spare shares name the liar."""
    t, secret = 3, bytes(range(32))
    shares = shamir.split(secret, t, list(range(1, holders + 1)))
    lied = [
        shamir.Share(s.index, _shift(s.value)) if i == LIAR else s for i, s in enumerate(shares)
    ]
    decoded = decode_shares(lied, t)
    if holders == t:  # t points always fit one polynomial: nothing to detect
        assert decoded is not None and decoded.false == ()
        assert shamir.combine(lied, t) != secret  # the caller's verification catches it
    elif (holders - t) // 2 < 1:
        assert decoded is None
    else:
        assert decoded is not None and decoded.false == (LIAR,)
        assert shamir.combine([lied[i] for i in decoded.consistent], t) == secret
    clean = decode_shares(shares, t)
    assert clean is not None and clean.false == ()


@pytest.mark.parametrize("position", ["first", "last"])
def test_colluding_liars_cannot_frame_honest_holders(position) -> None:
    """Review finding: two liars cancelling each other on the first t shares, plus one
    breaking the fast path, used to get honest holders named. Decoding names exactly
    the liars while they are at most (m - t) / 2."""
    t, m, secret = 10, 20, bytes(range(32))
    shares = shamir.split(secret, t, list(range(1, m + 1)))
    liars = {0, 1, 19} if position == "first" else {17, 18, 19}
    lied = [
        shamir.Share(s.index, _shift(s.value)) if i in liars else s for i, s in enumerate(shares)
    ]
    decoded = decode_shares(lied, t)
    assert decoded is not None and set(decoded.false) == liars


def test_two_liars_among_spare_shares_are_both_named() -> None:
    n = 8
    config = make_config(n, t=3, d=20)
    updates, weights = make_updates(n, config.dimension)

    def tamper(cid: int, stage: Stage, wire: bytes) -> bytes:
        if cid in (1, 2):
            return _lie("self_mask_shares", 0)(LIAR, stage, wire)
        return wire

    report = run_session(config, updates, weights, rng=Drbg("two-liars"), tamper=tamper)
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert_close_to_plain(config, report.result, updates, weights)
    liars = {r.sender for r in report.rejections if "false share of client 0" in r.reason}
    assert liars == {1, 2}


def test_a_liar_holding_the_lowest_id_everywhere_is_outvoted_once() -> None:
    """Review finding: with the earlier subset search, a single liar that held the
    lowest id among a secret's holders made every subset tried fail, and the session
    aborted despite spare shares. Decoding corrects it, once: later secrets skip the
    holder already caught."""
    n = 12
    config = make_config(n, t=6, d=16)
    updates, weights = make_updates(n, config.dimension)
    report = run_session(
        config, updates, weights, rng=Drbg("lowest-liar"), tamper=_lie("self_mask_shares")
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert_close_to_plain(config, report.result, updates, weights)
    assert {r.sender for r in report.rejections if "false share" in r.reason} == {LIAR}


def test_a_key_that_differs_only_in_clamped_bits_is_refused() -> None:
    """Review finding: X25519 ignores the clamped bits, so a holder could shift its
    share into another byte string with the same public key. Clients share the clamped
    form and the server's check accepts only that."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from securefl.secagg import crypto
    from securefl.secagg.client import SecAggClient
    from securefl.secagg.server import SecAggServer

    config = make_config(3, t=2, d=4)
    client = SecAggClient(0, config, np.zeros(4, np.float32), rng=Drbg("clamped"))
    server = SecAggServer(config, rng=Drbg("clamped-server"))
    assert server.receive(0, client.handle(server.start()))
    raw = client._mask_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert raw == crypto.clamp_x25519(raw)  # what the client shares
    other = bytes([raw[0] | 1]) + raw[1:]  # a bit X25519 clears: the same public key
    assert crypto.public_bytes(crypto.x25519_from_private(other)) == crypto.public_bytes(
        crypto.x25519_from_private(raw)
    )
    assert server._verifies(0, "key_shares", raw)
    assert not server._verifies(0, "key_shares", other)
