"""Contribution tags: a client refuses an aggregate of fewer than min_contributors
contributions, or one that does not sum the contributions it lists (a server that hands
out one client's ciphertext, repeats one, or drops one from the sum it claims)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from securefl.ckks import (
    Aggregator,
    ClientContext,
    ServerContext,
    TooFewContributors,
    UnverifiedAggregate,
    decrypt_aggregate,
    decrypt_mean,
    decrypt_vector,
    encrypt_update,
    flooding,
    tenseal_format,
    wire,
)
from securefl.ckks.contributions import TAG_SLOTS, contribution_key, expected_tags, tag
from securefl.errors import ConfigError, InvalidMessage
from securefl.primitives import rns_sum

from .helpers import tenseal_vector_bytes

D = 300


@pytest.fixture(scope="module")
def updates() -> list[np.ndarray]:
    data = np.random.default_rng(11)  # test data
    return [data.normal(0, 0.1, D) for _ in range(3)]


@pytest.fixture(scope="module")
def messages(ctx: ClientContext, updates: list[np.ndarray]) -> list[bytes]:
    return [encrypt_update(ctx, u, w)[0] for u, w in zip(updates, (30, 50, 70), strict=True)]


def server_sum(server_ctx: ServerContext, messages: list[bytes], encoding: Any = "packed") -> bytes:
    agg = Aggregator(server_ctx)
    for k, message in enumerate(messages):
        agg.add(f"c{k}", message)
    return agg.result(encoding)


def forged(ctx: ClientContext, coeff_sources: list[bytes], listed: tuple[bytes, ...]) -> bytes:
    """What a deviating server can build: the coefficient-wise sum (mod q) of any
    messages, repeats allowed, under a contribution list of its choosing."""
    vectors = [wire.decode(m) for m in coeff_sources]
    first = vectors[0]
    shape = first.coeffs.shape
    flat = [np.ascontiguousarray(v.coeffs).reshape(1, shape[0], -1) for v in vectors]
    out = np.empty_like(flat[0])
    rns_sum(flat, np.array(ctx.spec.moduli, dtype=np.uint64), out=out)
    vec = replace(first, coeffs=out.reshape(shape), contributions=tuple(sorted(listed)))
    return wire.encode(vec, "packed")


def test_client_refuses_one_clients_ciphertext_as_the_aggregate(
    ctx: ClientContext, server_ctx: ServerContext, updates: list[np.ndarray]
) -> None:
    message, layout = encrypt_update(ctx, updates[0], 30)
    # Handed out as it is, or "summed" by an aggregator that saw one client.
    for aggregate in (
        message,
        server_sum(server_ctx, [message]),
        server_sum(server_ctx, [message], "tenseal"),
    ):
        with pytest.raises(TooFewContributors) as info:
            decrypt_mean(ctx, aggregate, layout)
        assert (info.value.count, info.value.minimum) == (1, 2)
        assert "sums 1 contribution(s)" in str(info.value)
        assert "min_contributors = 2" in str(info.value)
        # A typed InvalidMessage: transports that catch malformed server input catch it.
        assert isinstance(info.value, InvalidMessage)
        with pytest.raises(TooFewContributors):
            decrypt_aggregate(ctx, aggregate)


def test_min_contributors_is_the_clients_policy(
    ctx: ClientContext, server_ctx: ServerContext, messages: list[bytes]
) -> None:
    two = server_sum(server_ctx, messages[:2])
    assert decrypt_aggregate(ctx, two).contributions == 2
    with pytest.raises(TooFewContributors, match=r"sums 2 contribution.*= 3") as info:
        decrypt_aggregate(ctx, two, min_contributors=3)
    assert (info.value.count, info.value.minimum) == (2, 3)
    assert decrypt_aggregate(ctx, server_sum(server_ctx, messages), min_contributors=3)
    with pytest.raises(ConfigError, match="min_contributors must be >= 2, got 1"):
        decrypt_aggregate(ctx, two, min_contributors=1)
    with pytest.raises(TypeError, match="bool"):
        decrypt_aggregate(ctx, two, min_contributors=True)


def test_honest_aggregate_counts_its_contributions_in_every_format(
    ts: Any,
    ctx: ClientContext,
    server_ctx: ServerContext,
    messages: list[bytes],
    updates: list[np.ndarray],
) -> None:
    weights = (30, 50, 70)
    want = sum(w * u for u, w in zip(updates, weights, strict=True)) / sum(weights)
    nonces = tuple(sorted(wire.read_header(m).contributions[0] for m in messages))
    for encoding in ("packed", "raw", "tenseal"):
        aggregate = server_sum(server_ctx, messages, encoding)
        result = decrypt_aggregate(ctx, aggregate)
        assert (result.contributions, result.total_weight) == (3, 150)
        assert np.max(np.abs(result.mean - want)) < 1e-5
        vec = (
            tenseal_format.from_tenseal(aggregate, ctx.spec)
            if encoding == "tenseal"
            else wire.decode(aggregate)
        )
        assert vec.contributions == nonces
    # TenSEAL loads the result with securefl's field 15 and ignores the tag: it sits in
    # the imaginary parts, which TenSEAL's decryption drops.
    plain = np.array(
        ts.ckks_vector_from(ctx.tenseal, server_sum(server_ctx, messages, "tenseal")).decrypt()
    )
    assert np.max(np.abs(plain[:-1] / plain[-1] - want)) < 1e-6


def test_each_update_names_one_fresh_contribution(ctx: ClientContext) -> None:
    a, _ = encrypt_update(ctx, np.zeros(4), 1)
    b, _ = encrypt_update(ctx, np.zeros(4), 1)
    (na,), (nb,) = wire.read_header(a).contributions, wire.read_header(b).contributions
    assert len(na) == 16 and na != nb
    assert wire.read_header(a).version == 2
    key = contribution_key(ctx)
    assert key == contribution_key(ClientContext.from_bytes(ctx.to_bytes()))  # every client's
    assert key != contribution_key(ClientContext.generate())
    t = tag(key, na)
    assert t.shape == (TAG_SLOTS,) and t.min() >= 0 and t.max() < 2**16
    np.testing.assert_array_equal(expected_tags(key, (na, nb)), t + tag(key, nb))


def test_repeated_ciphertext_does_not_pass_as_two_contributions(
    ctx: ClientContext, server_ctx: ServerContext, messages: list[bytes]
) -> None:
    """c1 + c1 decrypts to client 1's update (twice the weight): listed as client 1 and
    some other nonce, or as client 1 and client 2, its tags give it away."""
    own = wire.read_header(messages[0]).contributions[0]
    other = wire.read_header(messages[1]).contributions[0]
    for listed in ((own, bytes(16)), (own, other)):
        doubled = forged(ctx, [messages[0], messages[0]], listed)
        with pytest.raises(UnverifiedAggregate, match="does not sum the 2 contribution"):
            decrypt_aggregate(ctx, doubled)
    # Listing one nonce twice is not a valid message at all, and the honest server
    # refuses the same ciphertext under a second client name.
    with pytest.raises(ValueError, match="strictly increasing"):
        forged(ctx, [messages[0], messages[0]], (own, own))
    agg = Aggregator(server_ctx)
    agg.add("c0", messages[0])
    with pytest.raises(InvalidMessage, match=r"'mallory': .*already in the sum"):
        agg.add("mallory", messages[0])
    assert agg.clients == ("c0",) and agg.contributions == 1


def test_sum_that_differs_from_its_list_is_refused(
    ctx: ClientContext, messages: list[bytes]
) -> None:
    nonces = [wire.read_header(m).contributions[0] for m in messages]
    # Three summed, two listed; two summed, three listed: either way the tags differ.
    cases = [(messages, (nonces[0], nonces[1])), (messages[:2], tuple(nonces))]
    for sources, listed in cases:
        with pytest.raises(UnverifiedAggregate, match=f"the {len(listed)} contribution"):
            decrypt_aggregate(ctx, forged(ctx, sources, listed))
    # The same construction with the true list passes: the check is the tags, not forged().
    assert decrypt_aggregate(ctx, forged(ctx, messages, tuple(nonces))).contributions == 3


def test_aggregate_of_untagged_vectors_is_refused(
    ctx: ClientContext, server_ctx: ServerContext
) -> None:
    # TenSEAL's own ciphertexts name no contribution: their sum proves nothing.
    plain = [tenseal_vector_bytes(ctx, np.append(np.ones(D) * w, w)) for w in (2.0, 3.0)]
    aggregate = server_sum(server_ctx, plain)
    assert wire.read_header(aggregate).version == 1
    with pytest.raises(TooFewContributors) as info:
        decrypt_aggregate(ctx, aggregate)
    assert info.value.count == 0


def test_any_key_holder_decrypts_any_single_update(
    ctx: ClientContext, messages: list[bytes], updates: list[np.ndarray]
) -> None:
    """The limit of the threat model, as a test: every client holds the one secret key,
    so whoever has a client's ciphertext and any client's key (the server plus one
    client) reads that update; only the aggregate check stops a *client* from being
    handed it as the aggregate."""
    another_client = ClientContext.from_bytes(ctx.to_bytes())
    values = decrypt_vector(another_client, messages[0])
    assert np.max(np.abs(values[:-1] - 30 * updates[0])) < flooding.error_bound(ctx.spec, 1)
    assert round(values[-1]) == 30


@pytest.mark.parametrize(("degree", "d"), [(8192, 4095), (8192, 4096), (16384, 8191), (16384, 5)])
def test_tags_verify_whatever_fills_the_last_ciphertext(
    contexts: dict[int, ClientContext], degree: int, d: int
) -> None:
    """The tag sits in the imaginary parts of slots 0..3 of the last ciphertext, full
    (d + 1 = N/2) or holding the weight alone."""
    ctx = contexts[degree]
    agg = Aggregator(ServerContext.from_bytes(ctx.server_bytes()))
    for k, w in enumerate((4, 6)):
        agg.add(f"c{k}", encrypt_update(ctx, np.full(d, 0.5 * (k + 1)), w)[0])
    result = decrypt_aggregate(ctx, agg.result())
    assert (result.contributions, result.total_weight) == (2, 10)
    assert np.max(np.abs(result.mean - 0.8)) < flooding.error_bound(ctx.spec, 2) / 10
