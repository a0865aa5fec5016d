"""What a service session aggregates: the protocol, its parameters and its size limits.

Shared by the server and the client so that both compute the same frame limits.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from securefl.errors import ConfigError, InvalidMessage
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.transports.service import framing

if TYPE_CHECKING:
    from securefl.ckks.keys import ServerContext
    from securefl.ckks.wire import Spec
    from securefl.dp import DPPlan
    from securefl.transports.service.runs import CKKSRun, SecAggRun

__all__ = [
    "CKKSSession",
    "JoinRequest",
    "SecAggSession",
    "check_dp_config",
    "ckks_frame_limit",
    "config_differences",
    "decode_ckks_result",
    "encode_ckks_result",
    "join_payload",
    "join_token",
    "parse_join",
    "secagg_frame_limit",
    "tolerated_dropouts",
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

    protocol = framing.Protocol.SECAGG

    @property
    def num_clients(self) -> int:
        return self.config.num_clients

    @property
    def dimension(self) -> int:
        return self.config.dimension

    @property
    def authenticated(self) -> bool:
        return self.config.authenticated

    @property
    def frame_limit(self) -> int:
        """The largest frame a session can need (checked from each header)."""
        return secagg_frame_limit(self.config)

    @property
    def join_token(self) -> bytes:
        """What a JOIN must carry: the DP plan's digest (empty without DP)."""
        return join_token(self.dp)

    def join_differences(self, request: JoinRequest) -> list[tuple[str, str, str]]:
        """Each option of a JOIN that differs from this session: (option, the client's
        value, the server's).

        Raises
        ------
        ConfigError
            If the JOIN's configuration does not decode.
        """
        differences: list[tuple[str, str, str]] = []
        if request.config is not None and request.config != self.config.to_bytes():
            differences = config_differences(self.config, request.config)
        return differences

    def start(self, members: frozenset[int], threads: int | None) -> SecAggRun:
        """A run of this session among ``members`` (:mod:`~securefl.transports.service.runs`)."""
        from securefl.transports.service.runs import SecAggRun

        return SecAggRun(self, members, threads)

    @property
    def min_clients(self) -> int:
        # Fewer than t + 1 cannot complete: the state machine would abort at once.
        return self.config.threshold + 1

    @property
    def tolerated_dropouts(self) -> int:
        """How many clients may drop out, in any rounds, and the session still
        completes (:func:`tolerated_dropouts`)."""
        return tolerated_dropouts(self.config)

    def describe(self) -> str:
        """One line for logs and banners: the protocol, its parameters and the dropouts
        it survives (no object reprs, no secrets)."""
        c = self.config
        k = c.neighbourhood_size
        if c.graph is GraphKind.COMPLETE:
            graph = f"SecAgg, complete graph (k = n - 1 = {k})"
        else:
            graph = f"SecAgg+, Harary graph of degree k = {k}"
        dropouts = self.tolerated_dropouts
        parts = [
            f"{graph}, n = {c.num_clients}, t = {c.threshold}",
            f"tolerates {dropouts} dropout{'' if dropouts == 1 else 's'}",
            f"d = {c.dimension}, {c.bits}-bit ring",
            f"clip {c.clip:g}" if not c.ring_input else "ring input",
            f"max weight {c.max_weight}",
            f"corruption rate {c.corruption_rate:g} (c = {c.tolerated_corrupt_neighbours})",
            "authenticated" if c.authenticated else "not authenticated",
        ]
        if c.min_survivors is not None:
            parts.append(f"at least {c.min_survivors} survivors")
        if self.dp is not None:
            parts.append("differential privacy")
        return ", ".join(parts)


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

    protocol = framing.Protocol.CKKS
    identity_public_keys = None
    authenticated = False
    dp = None
    join_token = b""

    @property
    def frame_limit(self) -> int:
        """The largest frame a session can need (checked from each header)."""
        return ckks_frame_limit(self.context.spec, self.dimension, self.num_clients)

    def join_differences(self, request: JoinRequest) -> list[tuple[str, str, str]]:
        """CKKS JOINs carry no configuration (the dimension is checked by the server)."""
        return []

    def start(self, members: frozenset[int], threads: int | None) -> CKKSRun:
        """A run of this session among ``members``."""
        from securefl.transports.service.runs import CKKSRun

        return CKKSRun(self, members, threads)

    @property
    def tolerated_dropouts(self) -> int:
        """How many clients may drop out and the session still completes."""
        return self.num_clients - self.min_clients

    def describe(self) -> str:
        """One line for logs and banners (no object reprs)."""
        spec = self.context.spec
        dropouts = self.tolerated_dropouts
        return (
            f"CKKS, n = {self.num_clients}, d = {self.dimension}, at least "
            f"{self.min_clients} contributions, tolerates {dropouts} "
            f"dropout{'' if dropouts == 1 else 's'}, ring degree N = "
            f"{spec.poly_modulus_degree}, scale 2^{math.log2(spec.scale):g}"
        )

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


def tolerated_dropouts(config: SecAggConfig) -> int:
    """How many clients may drop out, in any rounds and in any places, and a session of
    ``config`` still completes.

    A dropped client costs each of its neighbours one share holder; every client must
    keep t (its secrets are rebuilt from t shares), and t + 1 clients must remain. So
    D = k - t on any graph (the D may all be one client's neighbours), and with
    ``min_survivors`` at most n - min_survivors. A client that drops out before
    advertising its keys costs nobody a holder (the graph is drawn over those who
    advertised), so this is the worst case.
    """
    k, t, n = config.neighbourhood_size, config.threshold, config.num_clients
    dropouts = min(k - t, n - 1 - t)
    if config.min_survivors is not None:
        dropouts = min(dropouts, n - config.min_survivors)
    return max(dropouts, 0)


_OPTIONS = {
    "num_clients": "--clients",
    "threshold": "--threshold",
    "dimension": "--dim",
    "bits": "--bits",
    "clip": "--clip",
    "max_weight": "--max-weight",
    "frac_bits": "frac_bits (from --bits, --clip and --clients)",
    "graph": "graph (from --protocol, --degree and --clients)",
    "degree": "--degree",
    "authenticated": "--authenticated",
    "ring_input": "ring input (--dp-epsilon)",
    "min_survivors": "min_survivors (from --dp-dropout)",
    "corruption_rate": "--corruption-rate",
    "security_bits": "security_bits",
}
"""Each SecAggConfig field and the ``securefl serve`` / ``join`` option that sets it."""


def _shown(value: object) -> str:
    if isinstance(value, GraphKind):
        return value.value
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def config_differences(ours: SecAggConfig, theirs: bytes) -> list[tuple[str, str, str]]:
    """Every session option in which the configuration ``theirs`` (another party's
    :meth:`SecAggConfig.to_bytes`) differs from ``ours``: (option, their value, our
    value), the option named as ``securefl serve`` / ``join`` spell it.

    Raises
    ------
    ConfigError
        If ``theirs`` is not a configuration of this version (the reason says why).
    """
    other = SecAggConfig.from_bytes(theirs)
    found: list[tuple[str, str, str]] = []
    differ: set[str] = set()
    for f in fields(SecAggConfig):
        if not f.init:
            continue
        mine, yours = getattr(ours, f.name), getattr(other, f.name)
        if f.name == "frac_bits":  # resolved: compare what each side computes with
            mine, yours = ours.fixed_point.frac_bits, other.fixed_point.frac_bits
            # It follows from these: naming it too would only repeat them.
            if differ & {"bits", "clip", "num_clients"}:
                continue
        if mine != yours:
            differ.add(f.name)
            found.append((_OPTIONS.get(f.name, f.name), _shown(yours), _shown(mine)))
    return found


def join_token(plan: DPPlan | None) -> bytes:
    """The DP part of a JOIN: empty without DP, else the plan's 32-byte digest.

    A client whose plan differs (noise, scale, rotation) would corrupt the ring sum
    without any protocol check noticing, so the server refuses it at the door.
    """
    return b"" if plan is None else plan.digest()


_TAG_DP, _TAG_CONFIG, _TAG_DIMENSION = 1, 2, 3
_ENTRY = struct.Struct("<BI")


@dataclass(frozen=True)
class JoinRequest:
    """What a JOIN frame declares (:func:`join_payload`)."""

    config: bytes | None = None
    """SecAgg: the client's ``SecAggConfig.to_bytes()``."""
    dimension: int | None = None
    """CKKS: the length of the client's update."""
    dp: bytes = b""
    """The client's DP plan digest (:func:`join_token`), empty without DP."""


def join_payload(request: JoinRequest) -> bytes:
    """The JOIN frame's payload: entries (tag u8, length u32, value) for the DP plan
    digest (1), the SecAgg configuration (2) and the CKKS dimension (3), each at most
    once and in that order. An empty payload declares nothing.

    The server compares what is declared with its own session and refuses a client
    that differs before it takes a seat, naming each differing option; the protocols'
    own checks (the configuration digest in SessionStart) stand behind it.
    """
    out = bytearray()
    entries = (
        (_TAG_DP, request.dp),
        (_TAG_CONFIG, request.config),
        (
            _TAG_DIMENSION,
            None if request.dimension is None else struct.pack("<Q", request.dimension),
        ),
    )
    for tag, value in entries:
        if value:
            out += _ENTRY.pack(tag, len(value)) + value
    return bytes(out)


def parse_join(payload: memoryview | bytes) -> JoinRequest:
    """Inverse of :func:`join_payload`.

    Raises
    ------
    InvalidMessage
        If an entry is truncated, repeated, out of order or of an unknown tag.
    """
    data = bytes(payload[:4096])
    if len(payload) > 4096:
        raise InvalidMessage("a JOIN payload is at most 4096 bytes")
    values: dict[int, bytes] = {}
    offset, last = 0, 0
    while offset < len(data):
        if len(data) - offset < _ENTRY.size:
            raise InvalidMessage("truncated JOIN entry")
        tag, length = _ENTRY.unpack_from(data, offset)
        offset += _ENTRY.size
        # Canonical form: one entry per tag, in increasing order, exactly consumed.
        if not last < tag <= _TAG_DIMENSION or len(data) - offset < length:
            raise InvalidMessage(f"malformed JOIN entry (tag {tag}, {length} bytes)")
        values[tag] = data[offset : offset + length]
        offset += length
        last = tag
    dimension = values.get(_TAG_DIMENSION)
    if dimension is not None and len(dimension) != 8:
        raise InvalidMessage("a JOIN dimension is 8 bytes")
    return JoinRequest(
        config=values.get(_TAG_CONFIG),
        dimension=None if dimension is None else struct.unpack("<Q", dimension)[0],
        dp=values.get(_TAG_DP, b""),
    )


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
