"""Configuration of a SecAgg / SecAgg+ session.

Every client checks the server's view of the configuration (by digest) before it
does any work, so a server cannot trick clients into a weaker threshold or ring.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from securefl.errors import ConfigError
from securefl.primitives.quantize import FixedPoint

if TYPE_CHECKING:
    from securefl.secagg.parameters import ThreatModel

__all__ = ["CONFIG_VERSION", "MAX_CLIENT_ID", "GraphKind", "SecAggConfig"]

CONFIG_VERSION = 2
"""Version of :meth:`SecAggConfig.to_bytes` (and so of the digest clients compare)."""
_MAGIC = b"SFLC"
_WIRE = struct.Struct("<4sBIIQBdQBBIBIdH")
_AUTHENTICATED, _RING_INPUT = 1, 2

MAX_CLIENT_ID = 2**32 - 2
"""Client ids are u32 on the wire; id + 1 is a Shamir index, so 2^32 - 1 is excluded."""


class GraphKind(Enum):
    """Who shares keys with whom."""

    COMPLETE = "complete"  # SecAgg (Bonawitz et al. 2017): every pair of clients
    HARARY = "harary"  # SecAgg+ (Bell et al. 2020): a random k-regular Harary graph


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters every party of a session must agree on.

    Parameters
    ----------
    num_clients:
        n, the most clients that may take part (at least 2).
    threshold:
        t: shares needed to reconstruct a client's secrets. A coalition of the server
        and fewer than t of a client's neighbours learns nothing about its update; a
        session survives as long as every survivor and every dropped client keeps at
        least t responsive neighbours. Rules (checked here, see
        :meth:`minimum_threshold`): t >= 2 always, t > c, and in authenticated mode
        2t > k + c, so that a server that shows different survivor sets to different
        neighbours can never collect t self-mask shares *and* t key shares of one
        client (Bonawitz et al. 2017, section 6; c below).
    dimension:
        d, the length of the flattened update vector.
    bits:
        b: the ring Z_2^b (1..64). The masked vector travels bit-packed: about d b / 8
        bytes per client.
    clip:
        c: every coordinate of an update is clipped to [-c, c] before encoding.
    max_weight:
        W: the largest integer weight (e.g. number of examples) a client may use.
        A client encodes clip(x) * n_k / W and sends n_k as an extra masked element,
        so the server learns only the weighted sum and the total weight.
    frac_bits:
        p: the precision is 2^-p. ``None`` picks the finest that cannot overflow:
        n * ceil(2 c 2^p) < 2^b.
    graph, degree:
        The neighbourhood graph; ``degree`` (k) is required for ``GraphKind.HARARY``.
    authenticated:
        Clients sign their keys and the survivor set with enrolled Ed25519 identity
        keys, and a ConsistencyCheck round runs (Bonawitz et al. 2017, section 4.2).
    ring_input:
        The session's encoding (:mod:`securefl.encoding`), which every client must
        agree on: ``False``, the fixed-point encoding of float updates (``clip``,
        ``frac_bits``); ``True``, vectors already in Z_2^b (``securefl.dp``'s
        encoder, which decodes the ring sum itself; ``clip`` and ``frac_bits`` are
        then unused). SecAgg itself adds integers either way and returns the ring sum
        (:class:`~securefl.encoding.RingSum`), exact for every b up to 64.
    corruption_rate:
        gamma in [0, 1): the fraction of clients the adversary (with the server) may
        control. It fixes c, the corrupt neighbours a client must tolerate
        (:attr:`tolerated_corrupt_neighbours`): floor(gamma n) on the complete graph;
        on the Harary graph the smallest count exceeded with probability at most
        2^-(sigma + 1) / n over the random graph (the bound of Bell et al. 2020 that
        :func:`securefl.secagg.parameters.choose_parameters` uses). 0: the server alone.
    security_bits:
        sigma for that tail bound (Harary graph only), 1..256.
    min_survivors:
        The fewest clients whose masked inputs may be unmasked as one sum (``None``:
        no minimum beyond t + 1). Distributed DP (``securefl.dp``) calibrates each
        client's share of the noise for at least n_min survivors; a sum of fewer
        carries less noise than promised, so it must never be unmasked, not merely
        refused after the fact. The server aborts before any Unmasking request when
        fewer masked inputs arrived, and a client refuses to reveal shares when the
        survivor set it is shown is smaller (it sees the global set in
        authenticated mode and on the complete graph only; see docs/PRIVACY.md).

    Raises
    ------
    ConfigError
        If parameters are inconsistent or the ring could overflow.
    """

    num_clients: int
    threshold: int
    dimension: int
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 1
    frac_bits: int | None = None
    graph: GraphKind = GraphKind.COMPLETE
    degree: int | None = None
    authenticated: bool = False
    ring_input: bool = False
    min_survivors: int | None = None
    corruption_rate: float = 0.0
    security_bits: int = 40
    fixed_point: FixedPoint = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_clients < 2:
            raise ConfigError(f"num_clients must be >= 2, got {self.num_clients}")
        if self.dimension < 1:
            raise ConfigError(f"dimension must be >= 1, got {self.dimension}")
        if not 1 <= self.max_weight < 2**32:
            raise ConfigError(f"max_weight must be in [1, 2^32), got {self.max_weight}")
        if not isinstance(self.graph, GraphKind):
            raise ConfigError(f"graph must be a GraphKind, got {self.graph!r}")
        if isinstance(self.corruption_rate, bool) or not isinstance(
            self.corruption_rate, (int, float)
        ):
            raise ConfigError(
                f"corruption_rate must be a float in [0, 1), got {self.corruption_rate!r}"
            )
        # + 0.0 turns -0.0 into 0.0: one value, one wire form, one digest.
        object.__setattr__(self, "corruption_rate", float(self.corruption_rate) + 0.0)
        if not (math.isfinite(self.corruption_rate) and 0 <= self.corruption_rate < 1):
            raise ConfigError(f"corruption_rate must be in [0, 1), got {self.corruption_rate!r}")
        if (
            isinstance(self.security_bits, bool)
            or not isinstance(self.security_bits, int)
            or not 1 <= self.security_bits <= 256
        ):
            raise ConfigError(
                f"security_bits must be an integer in [1, 256], got {self.security_bits!r}"
            )
        k = self.neighbourhood_size
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise ConfigError(f"threshold must be an integer, got {self.threshold!r}")
        if not 1 <= self.threshold <= k:
            raise ConfigError(
                f"threshold t={self.threshold} must be in [2, k] with k={k} neighbours per client"
            )
        self._check_threshold_rules(k)
        # The weight element sums to at most n * W: it must not wrap either.
        if self.num_clients * self.max_weight >= 2**self.bits:
            raise ConfigError(
                f"n * W = {self.num_clients * self.max_weight} total weight does not fit "
                f"a ring of b={self.bits} bits"
            )
        # bool is an int: True would silently mean "at least one survivor".
        if self.min_survivors is not None and (
            isinstance(self.min_survivors, bool)
            or not isinstance(self.min_survivors, int)
            or not 1 <= self.min_survivors <= self.num_clients
        ):
            raise ConfigError(
                f"min_survivors must be an integer in [1, n={self.num_clients}], "
                f"got {self.min_survivors!r}"
            )
        summands = self.num_clients
        if self.frac_bits is None:
            fp = FixedPoint.for_ring(bits=self.bits, clip=self.clip, max_summands=summands)
        else:
            fp = FixedPoint(self.clip, self.frac_bits, self.bits, summands)
        object.__setattr__(self, "fixed_point", fp)

    @classmethod
    def from_rates(
        cls,
        num_clients: int,
        dimension: int,
        *,
        dropout_rate: float,
        corruption_rate: float,
        security_bits: int = 40,
        correctness_bits: int = 20,
        threat_model: ThreatModel | None = None,
        **options: Any,
    ) -> SecAggConfig:
        """SecAgg+ with k and t chosen by :func:`securefl.secagg.parameters.choose_parameters`.

        From the tolerated dropout and corruption rates and the security (sigma) and
        correctness (eta) parameters of Bell et al. 2020; the complete graph when the
        sparse one would not be smaller. The threat model defaults to a server that may
        lie about dropouts (``ThreatModel.SEMI_MALICIOUS``). ``options`` are the other
        fields (bits, clip, max_weight, frac_bits, authenticated).

        Raises
        ------
        ConfigError
            If no (k, t) meets the rates (the chooser says why).
        """
        from securefl.secagg.parameters import ThreatModel, choose_parameters

        params = choose_parameters(
            num_clients,
            dropout_rate=dropout_rate,
            corruption_rate=corruption_rate,
            security_bits=security_bits,
            correctness_bits=correctness_bits,
            threat_model=threat_model or ThreatModel.SEMI_MALICIOUS,
        )
        graph = GraphKind.COMPLETE if params.complete else GraphKind.HARARY
        return cls(
            num_clients=num_clients,
            threshold=params.threshold,
            dimension=dimension,
            graph=graph,
            degree=None if params.complete else params.degree,
            corruption_rate=float(corruption_rate),
            security_bits=security_bits,
            **options,
        )

    @property
    def tolerated_corrupt_neighbours(self) -> int:
        """c: how many of a client's k neighbours the adversary may control."""
        return _corrupt_neighbours(
            self.num_clients,
            self.neighbourhood_size,
            self.graph,
            self.corruption_rate,
            self.security_bits,
        )

    def minimum_threshold(self) -> int:
        """The smallest t these parameters (k, c, authenticated) allow."""
        return _minimum_threshold(
            self.neighbourhood_size, self.tolerated_corrupt_neighbours, self.authenticated
        )

    @staticmethod
    def smallest_threshold(
        num_clients: int,
        *,
        graph: GraphKind = GraphKind.COMPLETE,
        degree: int | None = None,
        authenticated: bool = False,
        corruption_rate: float = 0.0,
        security_bits: int = 40,
    ) -> int:
        """The smallest t a configuration with these fields may use (the rules of
        ``threshold``); what callers use to pick a secure default."""
        k = num_clients - 1 if graph is GraphKind.COMPLETE else degree
        if k is None or k < 1:
            raise ConfigError(f"the Harary graph needs a degree, got {degree!r}")
        c = _corrupt_neighbours(num_clients, k, graph, corruption_rate, security_bits)
        return _minimum_threshold(k, c, authenticated)

    def directory_problem(self, members: int) -> str | None:
        """Why a session of ``members`` clients (|U1|, the directory the server
        sends) would break the threshold rules, or ``None`` if it keeps them.

        The rules hold for the configured n; a server that admits fewer clients keeps
        every corrupt client it controls, floor(gamma n), among fewer members, and the
        graph of fewer members is denser (complete once members <= k + 1). So the
        rules are checked again for the graph actually built: t > c' and, in
        authenticated mode, 2t > k' + c'. Authenticated mode also needs
        members > (n + floor(gamma n)) / 2, so that a server cannot split the clients
        into two directories (two sessions) that share only its own clients.
        """
        from securefl.secagg.parameters import corrupt_clients, corrupt_neighbours_among

        n, t = self.num_clients, self.threshold
        corrupt = corrupt_clients(n, self.corruption_rate)
        k = min(self.neighbourhood_size, members - 1)
        complete = self.graph is GraphKind.COMPLETE or k >= members - 1
        c = corrupt_neighbours_among(
            members, k, corrupt, complete=complete, security_bits=self.security_bits
        )
        admitted = f"the session admitted {members} of n={n} clients"
        if self.authenticated and 2 * members <= n + corrupt:
            return (
                f"{admitted}: authenticated mode needs more than (n + {corrupt} corrupt) / 2 "
                f"= {(n + corrupt) / 2:g}, or two directories could split the clients"
            )
        if t <= c:
            return f"{admitted}: up to c={c} of k={k} neighbours may be corrupt, t={t} <= c"
        if self.authenticated and 2 * t <= k + c:
            return f"{admitted}: 2t > k + c fails there (t={t}, k={k}, c={c})"
        return None

    def _check_threshold_rules(self, k: int) -> None:
        c = self.tolerated_corrupt_neighbours
        smallest = self.minimum_threshold()
        if self.threshold >= smallest:
            return
        t = self.threshold
        if t < 2:
            rule = "t >= 2 (with t = 1 a single neighbour holds a client's secrets outright)"
        elif t <= c:
            rule = f"t > c = {c} corrupt neighbours (they could rebuild a client's secrets)"
        else:
            rule = (
                f"2t > k + c = {k} + {c} in authenticated mode (otherwise a server that "
                f"shows different survivor sets to different neighbours collects both "
                f"kinds of share of one client)"
            )
        fix = (
            f"the smallest threshold that satisfies it is t = {smallest}"
            if smallest <= k
            else f"no t <= k = {k} satisfies it: lower corruption_rate or raise the degree"
        )
        raise ConfigError(
            f"threshold t={t} is insecure for k={k} neighbours, corruption_rate="
            f"{self.corruption_rate!r} (c={c}): the rule is {rule}; {fix}"
        )

    @property
    def neighbourhood_size(self) -> int:
        """k: neighbours per client (n - 1 for the complete graph)."""
        if self.graph is GraphKind.COMPLETE:
            if self.degree is not None:
                raise ConfigError("degree applies to the Harary graph only")
            return self.num_clients - 1
        if self.degree is None or not 2 <= self.degree <= self.num_clients - 1:
            raise ConfigError(
                f"the Harary graph needs 2 <= degree <= n - 1 = {self.num_clients - 1}, "
                f"got {self.degree}"
            )
        # H(n, k) links i to i +- 1 .. i +- k/2 (Bell et al.): k must be even.
        if self.degree % 2 and self.degree != self.num_clients - 1:
            raise ConfigError(f"the Harary graph degree must be even, got {self.degree}")
        return self.degree

    def to_bytes(self) -> bytes:
        """The one wire form of the configuration (docs/PROTOCOL.md, "Configuration").

        The digest clients compare and every transport that carries a configuration
        (the Flower records) use these bytes, so no field can be dropped on the way.
        ``frac_bits`` is written as resolved, so ``from_bytes`` returns it explicit.
        """
        flags = (_AUTHENTICATED if self.authenticated else 0) | (
            _RING_INPUT if self.ring_input else 0
        )
        return _WIRE.pack(
            _MAGIC,
            CONFIG_VERSION,
            self.num_clients,
            self.threshold,
            self.dimension,
            self.bits,
            self.clip,
            self.max_weight,
            self.fixed_point.frac_bits,
            0 if self.graph is GraphKind.COMPLETE else 1,
            self.degree or 0,
            flags,
            self.min_survivors or 0,
            self.corruption_rate,
            self.security_bits,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggConfig:
        """Inverse of :meth:`to_bytes`; every rule of the constructor is checked again.

        Raises
        ------
        ConfigError
            If the bytes are not a configuration of this version or break a rule.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != _WIRE.size:
            raise ConfigError(f"a configuration is {_WIRE.size} bytes of {_MAGIC!r} wire form")
        fields = _WIRE.unpack(bytes(data))
        magic, version, n, t, d, bits, clip, w, p, graph, degree, flags, minimum, rate, sigma = (
            fields
        )
        if magic != _MAGIC or version != CONFIG_VERSION:
            raise ConfigError(f"not a version-{CONFIG_VERSION} configuration")
        if graph not in (0, 1) or flags & ~(_AUTHENTICATED | _RING_INPUT):
            raise ConfigError("configuration has an unknown graph kind or flag")
        if graph == 0 and degree != 0:  # one encoding per configuration
            raise ConfigError("a complete-graph configuration must have degree 0")
        return cls(
            num_clients=n,
            threshold=t,
            dimension=d,
            bits=bits,
            clip=clip,
            max_weight=w,
            frac_bits=p,
            graph=GraphKind.HARARY if graph else GraphKind.COMPLETE,
            degree=degree if graph else None,
            authenticated=bool(flags & _AUTHENTICATED),
            ring_input=bool(flags & _RING_INPUT),
            min_survivors=minimum or None,
            corruption_rate=rate,
            security_bits=sigma,
        )

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (what clients compare before any work)."""
        return hashlib.sha256(b"securefl/secagg/config/v2" + self.to_bytes()).digest()


def _corrupt_neighbours(
    n: int, k: int, graph: GraphKind, corruption_rate: float, security_bits: int
) -> int:
    from securefl.secagg.parameters import tolerated_corrupt_neighbours

    return tolerated_corrupt_neighbours(
        n, k, corruption_rate, complete=graph is GraphKind.COMPLETE, security_bits=security_bits
    )


def _minimum_threshold(k: int, c: int, authenticated: bool) -> int:
    # t = 1 hands every neighbour a client's secrets outright; t <= c lets the corrupt
    # neighbours rebuild them; in authenticated mode the server may lie about
    # dropouts, and 2t > k + c keeps it from collecting both kinds of share.
    t = max(2, c + 1)
    if authenticated:
        t = max(t, (k + c) // 2 + 1)
    return t
