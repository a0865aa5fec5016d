"""The transport-independent DP hook: a client-side encode and a server-side decode.

Any transport (the in-memory simulator, the network service, Flower) can add
distributed DP to SecAgg in three steps (Kairouz, Liu, Steinke 2021, Algorithm 1;
Agarwal, Kairouz, Liu 2021, Algorithm 1):

1. Everyone agrees on a :class:`~securefl.dp.calibration.DPPlan` (from a
   :class:`~securefl.dp.calibration.DPConfig` and the dimension) and, every round,
   on a fresh public ``round_seed`` (the server may choose it: it only fixes the
   rotation).
2. Each client calls :func:`encode_update` and hands the ring vector to a SecAgg
   session configured with ``ring_input=True`` and ``dimension = plan.padded_dimension``
   (:func:`secagg_config` builds one).
3. The server calls :func:`decode_aggregate` on the unmasked ring sum
   (``AggregateResult.ring_sum``) and gets the noisy sum and mean.

Keys: the rotation key is HKDF-SHA256 of the round seed, bound to the plan's digest
(salt) and the purpose; a client's rounding and noise keys are HKDF of a fresh
client secret (32 bytes from the OS by default), bound to the session id, the
purpose and the client id. No ``numpy.random``, no clock.
"""

from __future__ import annotations

import numbers
import secrets
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import numpy as np
import numpy.typing as npt

from securefl import vectors
from securefl.dp.calibration import DPPlan
from securefl.errors import ConfigError
from securefl.primitives import dp as native
from securefl.primitives import kdf
from securefl.primitives.masking import RingArray
from securefl.secagg.config import MAX_CLIENT_ID

__all__ = [
    "DPAggregate",
    "EncodedUpdate",
    "decode_aggregate",
    "encode_update",
    "rotation_key",
    "secagg_config",
]

ROTATION = b"securefl/dp/rotation/v1"
ROUNDING = b"securefl/dp/rounding/v1"
NOISE = b"securefl/dp/noise/v1"
_MIN_SEED_BYTES = 16


def rotation_key(plan: DPPlan, round_seed: bytes) -> bytes:
    """The rotation's 16-byte key: HKDF(round_seed, salt = plan digest, info = purpose).

    Raises
    ------
    ValueError
        If ``round_seed`` is shorter than 16 bytes.
    """
    if not isinstance(round_seed, (bytes, bytearray)) or len(round_seed) < _MIN_SEED_BYTES:
        raise ValueError(f"round_seed must be at least {_MIN_SEED_BYTES} bytes")
    return kdf.derive(bytes(round_seed), session=plan.digest(), purpose=ROTATION, length=16)


@dataclass(frozen=True)
class EncodedUpdate:
    """A client's DP-encoded update: what it hands to SecAgg.

    ``ring`` has the padded length D and dtype uint32/uint64; ``layout`` restores the
    update's structure after decoding; ``tries`` counts rounding attempts.
    """

    ring: RingArray
    layout: vectors.Layout
    tries: int

    def __repr__(self) -> str:  # the ring vector is noisy but still per-client data
        return f"EncodedUpdate(D={self.ring.size}, tries={self.tries})"

    def __reduce__(self) -> NoReturn:
        # Unmasked, the vector carries only this client's share of the noise (1/n_min
        # of what the guarantee assumes): it must leave the client only through SecAgg.
        raise TypeError("EncodedUpdate holds an unmasked client vector and cannot be pickled")


def encode_update(
    update: vectors.Update,
    plan: DPPlan,
    *,
    round_seed: bytes,
    secret: bytes | None = None,
    session: bytes = b"",
    client_id: int = 0,
    weight: float = 1.0,
    out: RingArray | None = None,
    threads: int | None = None,
) -> EncodedUpdate:
    """Clip, rotate, scale, round and noise one client's update into Z_{2^b}.

    Parameters
    ----------
    update:
        An array, dict/list of arrays or torch state_dict (see :mod:`securefl.vectors`).
    plan:
        The agreed plan; ``plan.dimension`` must equal the flattened size.
    round_seed:
        This round's public seed (>= 16 bytes), the same for every client.
    secret:
        >= 16 bytes of fresh secret randomness for this client and round; drawn from
        the OS (``secrets``) when omitted. Tests pass a fixed value.
    session, client_id:
        Bind the derived keys to a session and a client (HKDF salt and info); the
        id is in [0, 2^32 - 2], as SecAgg's.
    weight:
        A public weight in (0, 1] folded in after clipping (the L2 norm stays <= c,
        so the sensitivity is unchanged).
    out, threads:
        An optional destination (length ``plan.padded_dimension``, dtype of the ring)
        to reuse across rounds, and threads for the native pipeline.

    Returns
    -------
    EncodedUpdate

    Raises
    ------
    ValueError
        If the update's size differs from ``plan.dimension``, holds NaN/inf, or the
        weight or ``client_id`` is out of range.
    TypeError
        If ``client_id`` is not an integer.

    Security
    --------
    ``secret`` (and the keys derived from it) must never be reused for another
    vector nor revealed: it determines the noise. The result must leave the client
    only masked by SecAgg; the server is meant to see only the noisy sum.
    """
    flat, layout = vectors.flatten(update)
    if flat.size != plan.dimension:
        raise ValueError(f"update has {flat.size} values but the plan is for {plan.dimension}")
    if not 0 < weight <= 1:
        raise ValueError(f"weight must be in (0, 1], got {weight}")
    # The id is a u32 in the key derivation (struct.error otherwise), as in SecAgg.
    if isinstance(client_id, bool) or not isinstance(client_id, numbers.Integral):
        raise TypeError(f"client_id must be an integer, got {client_id!r}")
    if not 0 <= client_id <= MAX_CLIENT_ID:
        raise ValueError(f"client_id must be in [0, {MAX_CLIENT_ID}], got {client_id}")
    seed = secrets.token_bytes(32) if secret is None else bytes(secret)
    if len(seed) < _MIN_SEED_BYTES:
        raise ValueError(f"secret must be at least {_MIN_SEED_BYTES} bytes")
    rounding = kdf.derive(seed, session=session, purpose=ROUNDING, ids=(client_id,), length=16)
    noise = kdf.derive(seed, session=session, purpose=NOISE, ids=(client_id,), length=16)
    ring, tries = native.encode(
        flat,
        plan.spec,
        rotation_key=rotation_key(plan, round_seed),
        rounding_key=rounding,
        noise_key=noise,
        weight=weight,
        out=out,
        threads=threads,
    )
    return EncodedUpdate(ring, layout, tries)


@dataclass(frozen=True)
class DPAggregate:
    """What the server learns: the noisy sum (and mean) of the survivors' vectors.

    ``noisy_sum`` = sum_u w_u clip(x_u) + noise, flat, with noise of std about
    ``plan.client_noise_std * sqrt(survivors)`` per coordinate (more than the plan's
    worst case when more clients survive). ``mean`` divides by the total weight.
    """

    noisy_sum: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    total_weight: float
    survivors: int

    def unflatten(self, layout: vectors.Layout) -> Any:
        """The mean in the clients' own structure."""
        return vectors.unflatten(self.mean, layout)


def decode_aggregate(
    ring_sum: RingArray | npt.NDArray[np.floating],
    plan: DPPlan,
    *,
    round_seed: bytes,
    survivors: int,
    total_weight: float | None = None,
    threads: int | None = None,
) -> DPAggregate:
    """Re-centre, unscale and unrotate the ring sum of ``survivors`` encoded updates.

    Parameters
    ----------
    ring_sum:
        The unmasked sum in Z_{2^b} (length ``plan.padded_dimension``); a float array
        of exact integers is accepted (transports that carry floats).
    plan, round_seed:
        As the clients used.
    survivors:
        How many clients' vectors are in the sum (>= 1, <= n).
    total_weight:
        Sum of the survivors' public weights (default: ``survivors``, weights of 1).

    Returns
    -------
    DPAggregate

    Raises
    ------
    ConfigError
        If ``survivors`` is out of range or fewer than the plan's worst case (the
        privacy guarantee would not hold for this aggregate).
    ValueError
        If the ring sum has the wrong length or values outside Z_{2^b}.
    """
    cfg = plan.config
    if not cfg.min_survivors <= survivors <= cfg.num_clients:
        raise ConfigError(
            f"{survivors} survivors: the plan's noise is calibrated for "
            f"{cfg.min_survivors}..{cfg.num_clients}; decoding fewer would release an "
            "aggregate with less noise than promised"
        )
    total = np.asarray(ring_sum)
    if total.dtype.kind not in "uif":
        raise ValueError(f"ring sum must hold integers, got dtype {total.dtype}")
    if total.size != plan.padded_dimension:
        raise ValueError(f"ring sum has {total.size} values, expected {plan.padded_dimension}")
    # Checked before any cast: a cast to the ring's dtype would wrap (or, for floats,
    # truncate) values outside Z_{2^b} and decode a corrupted sum as a plausible one.
    if total.dtype.kind == "f" and not np.all(np.isfinite(total) & (total == np.floor(total))):
        raise ValueError("ring sum must hold integers")
    if total.size and (total.min() < 0 or total.max() >= 2**cfg.bits):
        raise ValueError(f"ring sum has values outside Z_2^{cfg.bits}")
    ring = cast(RingArray, total.astype(plan.spec.dtype, copy=False))
    noisy = native.decode(
        ring,
        plan.dimension,
        gamma=plan.gamma,
        bits=cfg.bits,
        rotation_key=rotation_key(plan, round_seed),
        threads=threads,
    )
    weight = float(survivors if total_weight is None else total_weight)
    if not weight > 0:
        raise ValueError(f"total_weight must be > 0, got {weight}")
    return DPAggregate(noisy, noisy / weight, weight, survivors)


def secagg_config(plan: DPPlan, **options: Any) -> Any:
    """A :class:`~securefl.secagg.config.SecAggConfig` that carries encoded updates.

    ``options`` are SecAggConfig's other fields (threshold, graph, degree, ...);
    ``num_clients``, ``bits``, ``dimension`` and ``ring_input`` come from the plan, and
    so does ``min_survivors`` (the plan's n_min): SecAgg then never unmasks a sum of
    fewer clients than the noise is calibrated for.

    Raises
    ------
    ConfigError
        If ``options`` sets a field the plan fixes (``min_survivors`` only when it
        differs from the plan's n_min).
    """
    from securefl.secagg.config import SecAggConfig

    for name in ("num_clients", "bits", "dimension", "ring_input"):
        if name in options:
            raise ConfigError(f"{name} comes from the DP plan")
    n_min = plan.config.min_survivors
    if options.pop("min_survivors", n_min) != n_min:
        # A lower minimum would let SecAgg unmask sums with less noise than promised.
        raise ConfigError(f"min_survivors comes from the DP plan (n_min={n_min})")
    return SecAggConfig(
        num_clients=plan.config.num_clients,
        dimension=plan.padded_dimension,
        bits=plan.config.bits,
        ring_input=True,
        min_survivors=n_min,
        **options,
    )
