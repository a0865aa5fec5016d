"""What a service session aggregates: the protocol, its parameters and its size limits.

Shared by the server and the client so that both compute the same frame limits.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from securefl.errors import ConfigError, InvalidMessage
from securefl.secagg.config import SecAggConfig
from securefl.transports.service import framing

if TYPE_CHECKING:
    from securefl.ckks.keys import ServerContext
    from securefl.ckks.wire import Spec
    from securefl.dp import DPPlan

__all__ = [
    "CKKSSession",
    "SecAggSession",
    "check_dp_config",
    "ckks_frame_limit",
    "decode_ckks_result",
    "encode_ckks_result",
    "join_token",
    "secagg_frame_limit",
]

_SLACK = 4096
"""Headers and small fields on top of the computed sizes."""


@dataclass(frozen=True)
class SecAggSession:
    """A SecAgg / SecAgg+ session (docs/PROTOCOL.md).

    Parameters
    ----------
    config:
        The session parameters; every client must hold the same (checked by digest).
    identity_public_keys:
        Authenticated mode: each enrolled client's Ed25519 public key.
    dp:
        Distributed differential privacy (docs/PRIVACY.md): the calibrated plan every
        client encodes its update with before masking. ``config`` must then be the
        plan's ring-input configuration (:func:`securefl.dp.secagg_config`); clients
        must hold the same plan (checked by digest when they join).

    Raises
    ------
    ConfigError
        If the authenticated mode lacks identity keys, or ``config`` does not carry
        ``dp``'s encoded updates.
    """

    config: SecAggConfig
    identity_public_keys: Mapping[int, bytes] | None = field(default=None, repr=False)
    dp: DPPlan | None = field(default=None, repr=False)  # long; serve prints describe()

    def __post_init__(self) -> None:
        if self.config.authenticated and not self.identity_public_keys:
            raise ConfigError("authenticated mode needs the enrolled identity public keys")
        if self.dp is not None:
            check_dp_config(self.config, self.dp)

    @property
    def num_clients(self) -> int:
        return self.config.num_clients

    @property
    def min_clients(self) -> int:
        # Fewer than t + 1 cannot complete: the state machine would abort at once.
        return self.config.threshold + 1


@dataclass(frozen=True)
class CKKSSession:
    """A CKKS FedAvg session (docs/CKKS.md).

    Parameters
    ----------
    context:
        The server's CKKS context (no secret key).
    num_clients:
        The most clients per session.
    dimension:
        d, the length of the flattened update (bounds the upload size).
    min_clients:
        Fewest contributions for a result: below it the session aborts, so that the
        aggregate never reveals a single client's update (default 2).
    """

    context: ServerContext
    num_clients: int
    dimension: int
    min_clients: int = 2

    def __post_init__(self) -> None:
        if not 2 <= self.min_clients <= self.num_clients:
            raise ConfigError(
                f"need 2 <= min_clients <= num_clients, got {self.min_clients} "
                f"and {self.num_clients}"
            )
        if self.dimension < 1:
            raise ConfigError(f"dimension must be >= 1, got {self.dimension}")


def check_dp_config(config: SecAggConfig, plan: DPPlan) -> None:
    """Check that ``config`` carries the encoded updates of ``plan``.

    Raises
    ------
    ConfigError
        Unless ``config`` has ``ring_input`` and the plan's padded dimension, ring bits
        and number of clients, and the plan's minimum number of survivors (what
        :func:`securefl.dp.secagg_config` sets).
    """
    if not config.ring_input:
        raise ConfigError("differential privacy needs a ring_input SecAgg configuration")
    wanted = {
        "dimension": plan.padded_dimension,
        "bits": plan.config.bits,
        "num_clients": plan.config.num_clients,
        # SecAgg must refuse to unmask fewer survivors than the noise is calibrated for.
        "min_survivors": plan.config.min_survivors,
    }
    for name, value in wanted.items():
        if getattr(config, name) != value:
            raise ConfigError(
                f"the SecAgg configuration has {name}={getattr(config, name)}, the DP plan "
                f"needs {value} (build it with securefl.dp.secagg_config)"
            )


def join_token(plan: DPPlan | None) -> bytes:
    """The JOIN frame's payload: empty without DP, else the plan's 32-byte digest.

    A client whose plan differs (noise, scale, rotation) would corrupt the ring sum
    without any protocol check noticing, so the server refuses it at the door.
    """
    return b"" if plan is None else plan.digest()


def secagg_frame_limit(config: SecAggConfig) -> int:
    """Largest payload either side of a SecAgg session may send: the masked vector,
    the result (float64 mean) or a per-client message listing every peer."""
    n = config.num_clients
    masked = 24 + -(-(config.dimension + 1) * config.bits // 8)
    result = 8 * config.dimension + 8 * n + 64
    # KeyDirectory: n entries of id, two keys, flag and signature; ShareRouting and
    # ShareKeys: n ciphertexts of 116 bytes; UnmaskingRequest: ids and signatures.
    per_peer = 200 * n
    return max(masked, result, per_peer) + _SLACK


def ckks_frame_limit(spec: Spec, dimension: int, num_clients: int) -> int:
    """Largest payload of a CKKS session: a raw ``SFCK`` message of d + 1 values (the
    packed encoding is smaller) plus the contributor list of a result."""
    limbs = len(spec.moduli)
    words = limbs * spec.chunks(dimension + 1) * 2 * spec.poly_modulus_degree
    return 64 + -(-limbs // 8) * 8 + 8 * words + 4 * num_clients + _SLACK


def encode_ckks_result(contributors: tuple[int, ...], aggregate: bytes) -> list[bytes]:
    """Payload of a CKKS ``RESULT`` frame: contributors (count u32, ids u32) · ``SFCK``."""
    ids = np.asarray(contributors, dtype="<u4").tobytes()
    return [struct.pack("<I", len(contributors)) + ids, aggregate]


def decode_ckks_result(payload: memoryview) -> tuple[tuple[int, ...], memoryview]:
    """Parse a CKKS ``RESULT`` payload: (contributors, the aggregate ``SFCK`` bytes).

    Raises
    ------
    InvalidMessage
        If the payload is truncated.
    """
    if len(payload) < 4:
        raise InvalidMessage("truncated result")
    (count,) = struct.unpack_from("<I", payload)
    if count > framing.MAX_IDS or len(payload) < 4 + 4 * count:
        raise InvalidMessage("truncated result")
    ids = np.frombuffer(payload, dtype="<u4", count=count, offset=4)
    return tuple(int(i) for i in ids), payload[4 + 4 * count :]
