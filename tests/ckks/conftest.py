"""Fixtures of the CKKS tests: contexts are generated once per session (key generation
takes a fraction of a second, and tests never depend on which keys they get)."""

from __future__ import annotations

from typing import Any

import pytest

from securefl.ckks import CKKSParams, ClientContext, ServerContext

PARAMS = {
    8192: CKKSParams(),  # FLARE's defaults
    16384: CKKSParams(16384, (60, 40, 40, 40, 40, 60), 40),
}


@pytest.fixture(scope="session")
def ts() -> Any:
    return pytest.importorskip("tenseal")


@pytest.fixture(scope="session")
def contexts(ts: Any) -> dict[int, ClientContext]:
    return {n: ClientContext.generate(p) for n, p in PARAMS.items()}


@pytest.fixture(scope="session")
def ctx(contexts: dict[int, ClientContext]) -> ClientContext:
    """The clients' context at FLARE's parameters."""
    return contexts[8192]


@pytest.fixture(scope="session")
def server_ctx(ctx: ClientContext) -> ServerContext:
    return ServerContext.from_bytes(ctx.server_bytes())
