"""Configuration of a SecAgg / SecAgg+ session.

Every client checks the server's view of the configuration (by digest) before it
does any work, so a server cannot trick clients into a weaker threshold or ring.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from securefl.errors import ConfigError
from securefl.primitives.quantize import FixedPoint

if TYPE_CHECKING:
    from securefl.secagg.graph import ThreatModel

__all__ = ["MAX_CLIENT_ID", "GraphKind", "SecAggConfig"]

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
        least t responsive neighbours. For the complete graph, t > n / 2 prevents a
        server that lies about dropouts from unmasking anyone.
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
        Clients hand over vectors already encoded in Z_2^b (``securefl.dp``'s
        encodings) instead of floats; ``clip`` and ``frac_bits`` are then unused and
        the server returns the raw ring sum (``AggregateResult.ring_sum``). Needs
        b <= 53 so the sum is exact in float64 for transports that carry floats.
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
        k = self.neighbourhood_size
        if not 1 <= self.threshold <= k:
            raise ConfigError(
                f"threshold t={self.threshold} must be in [1, k] with k={k} neighbours per client"
            )
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
        if self.ring_input and self.bits > 53:
            raise ConfigError(f"ring_input needs bits <= 53, got {self.bits}")
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
        """SecAgg+ with k and t chosen by :func:`securefl.secagg.graph.choose_parameters`.

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
        from securefl.secagg.graph import ThreatModel, choose_parameters

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
            **options,
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

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding of every parameter (what clients compare)."""
        fp = self.fixed_point
        encoded = struct.pack(
            "<IIQBdQIBIB",
            self.num_clients,
            self.threshold,
            self.dimension,
            self.bits,
            self.clip,
            self.max_weight,
            fp.frac_bits,
            0 if self.graph is GraphKind.COMPLETE else 1,
            self.degree or 0,
            int(self.authenticated),
        )
        if self.ring_input:  # appended only when set: existing digests are unchanged
            encoded += b"ring"
        if self.min_survivors is not None:  # likewise: clients must agree on the minimum
            encoded += b"min" + struct.pack("<I", self.min_survivors)
        return hashlib.sha256(b"securefl/secagg/config/v1" + encoded).digest()
