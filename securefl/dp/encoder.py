"""The DP encoder: distributed differential privacy as one of SecAgg's encoders.

:class:`DPEncoder` wraps :func:`~securefl.dp.pipeline.encode_update` and
:func:`~securefl.dp.pipeline.decode_aggregate` behind the interface of
:mod:`securefl.encoding`, so that ``securefl.aggregate``, the network service and the
Flower adapter encode and decode a DP round the same way: one object per round, built
from the plan, the round's public seed and W.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from securefl import vectors
from securefl.dp.calibration import DPPlan
from securefl.dp.pipeline import DPAggregate, decode_aggregate, encode_update
from securefl.encoding.ring import RingVector
from securefl.primitives.masking import RingArray

__all__ = ["DPEncoder"]


class _Summed(Protocol):
    """A ring sum with who is in it: :class:`securefl.encoding.RingSum` or a
    transport's result that carries one."""

    @property
    def ring_sum(self) -> RingArray | None: ...
    @property
    def total_weight(self) -> int: ...
    @property
    def contributors(self) -> tuple[int, ...]: ...


class DPEncoder:
    """One DP round's encoder.

    Parameters
    ----------
    plan:
        The agreed :class:`~securefl.dp.DPPlan`.
    round_seed:
        The round's public seed (>= 16 bytes, the same for every client): the service
        and Flower use the session's nonce.
    max_weight:
        W: a client's weight n_k is folded in as n_k / W.
    rng:
        Where each client's 32 secret bytes come from (``None``: the OS, drawn inside
        the pipeline). Tests and ``--dp-reproducible`` inject a seeded generator.
    threads:
        Threads for the native pipeline.

    Security
    --------
    The secret bytes of :meth:`encode` fix that client's noise: they must be fresh per
    client and round and never leave the client; the encoder keeps none of them.
    """

    def __init__(
        self,
        plan: DPPlan,
        *,
        round_seed: bytes,
        max_weight: int,
        rng: Callable[[int], bytes] | None = None,
        threads: int | None = None,
    ) -> None:
        self.plan = plan
        self.round_seed = round_seed
        self.max_weight = max_weight
        self._rng = rng
        self._threads = threads

    def __repr__(self) -> str:
        return f"DPEncoder(plan {self.plan.digest().hex()[:16]}..., W={self.max_weight})"

    def encode(
        self,
        update: vectors.Update,
        weight: int,
        *,
        client_id: int = 0,
        session: bytes | None = None,
    ) -> RingVector:
        """Clip, weight, rotate, round and noise ``update`` into the ring.

        ``session`` binds the secret's derived keys (HKDF salt; default the round
        seed) and ``client_id`` their info, as :func:`~securefl.dp.encode_update` says.

        Raises
        ------
        ValueError
            If the update does not fit the plan or the weight is out of [1, W].
        """
        if not 1 <= weight <= self.max_weight:
            raise ValueError(f"weight must be in [1, {self.max_weight}], got {weight!r}")
        encoded = encode_update(
            update,
            self.plan,
            round_seed=self.round_seed,
            secret=None if self._rng is None else self._rng(32),
            session=self.round_seed if session is None else session,
            client_id=client_id,
            weight=weight / self.max_weight,
            threads=self._threads,
        )
        return RingVector(encoded.ring, self.plan.config.bits)

    def decode_aggregate(self, ring: _Summed) -> DPAggregate:
        """The noisy sum and mean behind ``ring``'s sum.

        Raises
        ------
        ConfigError
            If fewer clients are in the sum than the noise is calibrated for.
        ValueError
            If the result carries no ring sum.
        """
        if ring.ring_sum is None:
            raise ValueError("the result carries no ring sum")
        return decode_aggregate(
            ring.ring_sum,
            self.plan,
            round_seed=self.round_seed,
            survivors=len(ring.contributors),
            total_weight=ring.total_weight / self.max_weight,
            threads=self._threads,
        )

    def decode(self, ring: _Summed) -> npt.NDArray[np.float64]:
        """The noisy weighted mean (:meth:`decode_aggregate`'s ``mean``)."""
        return self.decode_aggregate(ring).mean
