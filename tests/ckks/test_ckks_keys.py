"""CKKS parameters and the client/server contexts."""

from __future__ import annotations

from typing import Any

import pytest

from securefl.ckks import Aggregator, CKKSParams, ClientContext, ServerContext
from securefl.errors import ConfigError


def test_defaults_are_flares() -> None:
    p = CKKSParams()
    assert (p.poly_modulus_degree, p.coeff_mod_bit_sizes, p.scale_bits) == (8192, (60, 40, 40), 40)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poly_modulus_degree": 8000}, "one of"),
        ({"coeff_mod_bit_sizes": (60,)}, "at least two"),
        ({"coeff_mod_bit_sizes": [60, 40, 40]}, "tuple"),
        ({"coeff_mod_bit_sizes": (60, 61, 40)}, r"\[20, 60\]"),
        ({"scale_bits": 70}, "scale_bits"),
        ({"coeff_mod_bit_sizes": (40, 40), "scale_bits": 40}, "fewer than 20 bits"),
    ],
)
def test_params_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CKKSParams(**kwargs)


def test_seal_rejects_insecure_parameters(ts: Any) -> None:
    with pytest.raises(ConfigError, match="SEAL rejects"):
        ClientContext.generate(CKKSParams(8192, (60, 60, 60, 60), 40))


@pytest.mark.parametrize("degree", [8192, 16384])
def test_data_level(contexts: dict[int, ClientContext], degree: int) -> None:
    spec = contexts[degree].spec
    bits = {8192: (60, 40), 16384: (60, 40, 40, 40, 40)}[degree]
    assert spec.poly_modulus_degree == degree
    assert spec.limb_bits == bits  # the special prime is not part of the data level
    assert all(q % (2 * degree) == 1 for q in spec.moduli)  # NTT-friendly primes
    assert spec.scale == 2.0**40


def test_server_context_has_parameters_only(ts: Any, ctx: ClientContext) -> None:
    data = ctx.server_bytes()
    assert len(data) < 200
    loaded = ts.context_from(data)
    assert not loaded.has_secret_key()
    assert not loaded.has_public_key()
    assert not loaded.has_relin_keys() and not loaded.has_galois_keys()
    server = ServerContext.from_bytes(data)
    assert server.spec == ctx.spec
    assert server.moduli == ctx.spec.moduli and server.poly_modulus_degree == 8192


def test_client_bytes_have_no_evaluation_keys(ts: Any, ctx: ClientContext) -> None:
    loaded = ts.context_from(ctx.to_bytes())
    assert loaded.has_secret_key() and loaded.has_public_key()
    assert not loaded.has_relin_keys() and not loaded.has_galois_keys()
    assert ClientContext.from_bytes(ctx.to_bytes()).spec == ctx.spec


def test_server_refuses_a_secret_key(ctx: ClientContext) -> None:
    with pytest.raises(ConfigError, match="secret key"):
        ServerContext.from_tenseal(ctx.tenseal)
    with pytest.raises(ConfigError, match="secret key"):
        ServerContext.from_bytes(ctx.to_bytes())


def test_client_needs_the_secret_key(ctx: ClientContext) -> None:
    with pytest.raises(ConfigError, match="needs the secret key"):
        ClientContext.from_bytes(ctx.server_bytes())


def test_refuses_bfv_and_garbage(ts: Any) -> None:
    bfv = ts.context(ts.SCHEME_TYPE.BFV, 4096, plain_modulus=1032193)
    with pytest.raises(ConfigError, match="not CKKS"):
        ServerContext.from_bytes(bfv.serialize(save_secret_key=False))
    with pytest.raises(ConfigError, match="not a TenSEAL context"):
        ServerContext.from_bytes(b"\x00garbage")


def test_aggregator_needs_a_server_context(ctx: ClientContext) -> None:
    with pytest.raises(TypeError, match="ServerContext"):
        Aggregator(ctx)  # type: ignore[arg-type]


def test_client_context_hides_and_refuses_pickling(ctx) -> None:
    import pickle

    assert repr(ctx) == "ClientContext(N=8192, limbs=2, secret key held)"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ctx)
