"""Choosing the noise and the scale gamma from a privacy target and a ring (KLS sec. 5).

Given (epsilon, delta) for the whole run, n clients of which a fraction may drop out,
T rounds, the L2 clip c, the ring Z_{2^b} and the dimension d (padded to D = 2^k),
:func:`calibrate` returns a :class:`DPPlan`: the per-client noise, gamma, the
conditional-rounding bounds, and the epsilon achieved per round and over T rounds,
computed for the **worst tolerated case**: only n_min = n - floor(n * dropout_rate)
clients survive, so the aggregate carries only n_min clients' noise.

The three constraints (Kairouz, Liu, Steinke 2021, sections 4-5; Agarwal, Kairouz,
Liu 2021, section 4):

1. **Ring.** After the rotation, a coordinate of the sum of n clients is subgaussian
   with variance proxy at most ``s^2 = n^2 c^2 / (D gamma^2) + n / 4 + n sigma_int^2``
   (signal of norm <= n c spread over D coordinates, rounding errors in intervals of
   length 1, the noise; integer units). We require ``2^(b-1) >= k s`` with k =
   ``ring_stddevs`` standard deviations, so a coordinate wraps (modular clipping)
   with probability at most ``2 exp(-k^2 / 2)``. This fixes gamma given the real
   noise std sigma_real = gamma sigma_int:
   ``gamma^2 = (n^2 c^2 / D + n sigma_real^2) / ((2^(b-1) / k)^2 - n / 4)``.
2. **Rounding.** Conditional randomized rounding (KLS section 4.1) redraws the
   rounding until ``||r||_2^2 <= (c/gamma)^2 + D/4 + sqrt(2 ln(1/beta)) (c/gamma +
   sqrt(D)/2)`` (also capped by ``(c/gamma + sqrt(D))^2``) and, for example-level
   sensitivity, ``||r - v||_2^2 <= D/4 + sqrt(D ln(1/beta) / 2)`` (Hoeffding on the
   squared errors). Either fails with probability <= beta.
3. **Privacy.** The integer sensitivity is the first bound for client-level DP
   (a client's whole vector against none) and ``s/gamma + 2 ||r - v||`` bound for a
   unit of sensitivity s < c (one patient within a client's vector); Delta_1 <=
   min(Delta_2^2, sqrt(D) Delta_2). The epsilon of :mod:`securefl.dp.accounting`
   must be <= the target after T rounds.

Larger sigma_real forces a larger gamma (coarser steps), whose rounding error
(~sqrt(D)/2 integer units) then dominates the sensitivity: epsilon tends to a floor
of about ``k sqrt(D n / n_min) / 2^b`` per round however much noise is added. When
the target is below that floor the configuration is refused, naming the bit width
that would suffice: this is the bit-width constraint of both papers.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import struct
from dataclasses import dataclass, field
from typing import Literal

from securefl.dp import accounting
from securefl.errors import ConfigError
from securefl.primitives.dp import EncodeSpec, NoiseKind, padded_dimension

__all__ = ["DPConfig", "DPPlan", "Mechanism", "calibrate"]

Mechanism = Literal["discrete_gaussian", "skellam"]

_MAX_TRIES = 100
_MIN_CLIP, _MAX_CLIP = 1e-100, 1e100
_MAX_U32 = 2**32 - 1
_SEARCH_STEPS = 80


@dataclass(frozen=True)
class DPConfig:
    """What the users of a federation agree on for distributed DP.

    Parameters
    ----------
    epsilon, delta:
        The target for the whole run (all rounds). ``epsilon = math.inf`` disables
        the noise but keeps the pipeline (rotation, rounding): the baseline.
    clip:
        c: each client's vector is clipped to L2 norm c (1e-100 <= c <= 1e100: only
        its ratio to gamma matters, and binary64 must hold its square times n^2).
    num_clients:
        n: the most clients in a round (an integer, 1 .. 2^32 - 1).
    rounds:
        T: how many rounds the same data takes part in (composition; an integer,
        1 .. 2^32 - 1).
    dropout_rate:
        The tolerated fraction of dropouts; the noise is calibrated for the
        survivors of the worst case, n_min = n - floor(n * dropout_rate).
    bits:
        b: the ring Z_{2^b} of SecAgg, an integer 2 <= b <= 53. SecAgg itself adds any
        b <= 64 exactly; the DP decoder re-centres the ring sum in float64 and unrotates
        it there, which is exact only for integers below 2^53.
    mechanism:
        ``"discrete_gaussian"`` (KLS 2021) or ``"skellam"`` (AKL 2021).
    sensitivity:
        The L2 change of a client's vector when one unit of privacy changes.
        ``None``: c, client-level DP (a whole client's contribution, the papers'
        setting). Smaller for example-level DP, e.g. the per-example clip of summed
        per-example gradients.
    beta:
        Conditional rounding's failure probability per attempt (KLS use e^-1/2).
    ring_stddevs:
        k: the ring holds k standard deviations of a coordinate of the sum.

    Raises
    ------
    ConfigError
        If a value is out of range.
    """

    epsilon: float
    delta: float
    clip: float
    num_clients: int
    rounds: int = 1
    dropout_rate: float = 0.0
    bits: int = 20
    mechanism: Mechanism = "discrete_gaussian"
    sensitivity: float | None = None
    beta: float = math.exp(-0.5)
    ring_stddevs: float = 4.0

    def __post_init__(self) -> None:
        # Non-integers used to fail deep inside (struct.error in the digest, TypeError
        # in the accountant); True/False would silently mean 1/0.
        for name in ("num_clients", "rounds", "bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy integers -> int
        if not (self.epsilon > 0):
            raise ConfigError(f"epsilon must be > 0 (math.inf: no noise), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        # The calibration squares (n c)^2 and (1e6 c sqrt(n))^2 in binary64: an absurd
        # clip would overflow there (OverflowError) instead of being refused here.
        if not (math.isfinite(self.clip) and _MIN_CLIP <= self.clip <= _MAX_CLIP):
            raise ConfigError(f"clip must be in [{_MIN_CLIP:g}, {_MAX_CLIP:g}], got {self.clip}")
        # Both are u32 in the plan's digest (and n in SecAgg's wire format).
        if not 1 <= self.num_clients <= _MAX_U32 or not 1 <= self.rounds <= _MAX_U32:
            raise ConfigError(
                f"num_clients and rounds must be in [1, 2^32 - 1], got "
                f"{self.num_clients} and {self.rounds}"
            )
        if not 0 <= self.dropout_rate < 1:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not 2 <= self.bits <= 53:
            raise ConfigError(f"bits must be in [2, 53], got {self.bits}")
        if self.mechanism not in ("discrete_gaussian", "skellam"):
            raise ConfigError(f"unknown mechanism {self.mechanism!r}")
        if self.sensitivity is not None and not (0 < self.sensitivity <= self.clip):
            raise ConfigError(f"sensitivity must be in (0, clip], got {self.sensitivity}")
        if not 0 < self.beta < 1:
            raise ConfigError(f"beta must be in (0, 1), got {self.beta}")
        if not (math.isfinite(self.ring_stddevs) and self.ring_stddevs > 0):
            raise ConfigError(f"ring_stddevs must be finite and > 0, got {self.ring_stddevs}")

    @property
    def min_survivors(self) -> int:
        """n_min: survivors in the worst tolerated dropout case."""
        return self.num_clients - math.floor(self.num_clients * self.dropout_rate)


@dataclass(frozen=True)
class DPPlan:
    """The calibrated parameters of a DP aggregation of d-dimensional vectors.

    Attributes
    ----------
    config:
        What was asked.
    dimension, padded_dimension:
        d and D = 2^ceil(log2 d).
    gamma:
        The real value of one integer step.
    noise_param:
        Per client: sigma (discrete Gaussian) or the variance mu (Skellam), in
        integer units; 0 without noise.
    client_noise_std:
        Per client, real units: gamma * sqrt(variance).
    norm_bound, error_bound:
        Conditional rounding bounds (integer units).
    delta2, delta1:
        Sensitivities of the integer sum (integer units).
    epsilon_per_round, epsilon:
        epsilon at ``config.delta`` for one round and composed over the rounds, with
        n_min survivors (``math.inf`` without noise).
    wrap_probability:
        Upper bound on the probability that one coordinate of the sum wraps.
    """

    config: DPConfig
    dimension: int
    padded_dimension: int
    gamma: float
    noise_param: float
    client_noise_std: float
    norm_bound: float
    error_bound: float
    delta2: float
    delta1: float
    epsilon_per_round: float
    epsilon: float
    wrap_probability: float
    spec: EncodeSpec = field(repr=False)

    @property
    def aggregate_noise_std(self) -> float:
        """Real-unit noise std of one coordinate of the sum with n_min survivors."""
        return self.client_noise_std * math.sqrt(self.config.min_survivors)

    def digest(self) -> bytes:
        """SHA-256 of the numbers every party must share (binds the rotation key)."""
        c = self.config
        encoded = struct.pack(
            "<QQdddIBIIdd",
            self.dimension,
            self.padded_dimension,
            self.gamma,
            self.noise_param,
            c.clip,
            c.bits,
            0 if c.mechanism == "discrete_gaussian" else 1,
            c.num_clients,
            c.rounds,
            self.norm_bound,
            self.error_bound,
        )
        return hashlib.sha256(b"securefl/dp/plan/v1" + encoded).digest()

    def describe(self) -> str:
        """A one-paragraph summary for logs (no secrets)."""
        c = self.config
        return (
            f"{c.mechanism} over {c.num_clients} clients (worst case {c.min_survivors} "
            f"survivors), d={self.dimension} padded to {self.padded_dimension}, b={c.bits}, "
            f"c={c.clip:g}, gamma={self.gamma:.3g}, per-client noise std "
            f"{self.client_noise_std:.3g}; epsilon {self.epsilon_per_round:.3g} per round, "
            f"{self.epsilon:.3g} over {c.rounds} rounds at delta={c.delta:g}"
        )


def _ring_room(config: DPConfig) -> float:
    """(2^(b-1)/k)^2 - n/4: what the ring leaves for signal and noise (integer units)."""
    half = 2.0 ** (config.bits - 1) / config.ring_stddevs
    return half * half - config.num_clients / 4


# The samplers' accurate ranges (dp.hpp): a per-client noise std above these, in integer
# units, is avoided by a coarser gamma (ring bits are then left unused). The discrete
# Gaussian's |Y| = floor(-t ln u), u on a 2^-52 grid, jitters each value by ~2^-52 t:
# ~2^-22 of a step at sigma = 2^30, 2e-4 at 2^38. PTRS's log-acceptance -lambda +
# k ln lambda - ln k! cancels terms of size ~lambda ln lambda in binary64: measured worst
# error 4.4e-5 nats at lambda = mu/2 = 2^33 (std 2^17), 1e-3 at 2^38, O(1) at 2^47.
_MAX_NOISE_STD = {"discrete_gaussian": 2.0**30, "skellam": 2.0**17}


def _gamma(config: DPConfig, D: int, sigma_real: float, room: float) -> float:
    n, c = config.num_clients, config.clip
    ring = math.sqrt((n * n * c * c / D + n * sigma_real**2) / room)
    return max(ring, sigma_real / _MAX_NOISE_STD[config.mechanism])


def _bounds(config: DPConfig, D: int, gamma: float) -> tuple[float, float, float, float]:
    """(norm_bound, error_bound, delta2, delta1) in integer units for this gamma."""
    cg = config.clip / gamma
    log_beta = math.log(1 / config.beta)
    norm2 = min(
        cg * cg + D / 4 + math.sqrt(2 * log_beta) * (cg + math.sqrt(D) / 2),
        (cg + math.sqrt(D)) ** 2,
    )
    err = math.sqrt(D / 4 + math.sqrt(D * log_beta / 2))
    norm = math.sqrt(norm2)
    if config.sensitivity is None or config.sensitivity >= config.clip:
        delta2 = min(norm, cg + err)
    else:
        # Two neighbouring inputs are rounded independently: ||r - r'|| <= s/gamma +
        # ||r - v|| + ||r' - v'|| (both errors pass the check), and <= ||r|| + ||r'||.
        delta2 = min(config.sensitivity / gamma + 2 * err, 2 * norm)
    delta1 = min(delta2 * delta2, math.sqrt(D) * delta2)
    return norm, err, delta2, delta1


def _round_events(
    config: DPConfig, D: int, noise_param: float, delta2: float, delta1: float
) -> tuple[object, ...]:
    survivors = config.min_survivors
    if config.mechanism == "discrete_gaussian":
        return accounting.ddg_events(delta2, delta1, noise_param, survivors, D)
    return accounting.skellam_events(delta2, delta1, survivors * noise_param)


def _evaluate(config: DPConfig, D: int, sigma_real: float, room: float) -> tuple[float, ...]:
    """(gamma, noise_param, norm, err, delta2, delta1, eps_round, eps_total)."""
    gamma = _gamma(config, D, sigma_real, room)
    norm, err, delta2, delta1 = _bounds(config, D, gamma)
    sigma_int = sigma_real / gamma
    param = sigma_int if config.mechanism == "discrete_gaussian" else sigma_int**2
    events = _round_events(config, D, param, delta2, delta1)
    eps_round = accounting.compose_epsilon(events, 1, config.delta)
    eps_total = accounting.compose_epsilon(events, config.rounds, config.delta)
    return gamma, param, norm, err, delta2, delta1, eps_round, eps_total


def _sufficient_bits(config: DPConfig, D: int) -> int | None:
    """The smallest b <= 53 whose epsilon floor is below the target, if any."""
    from dataclasses import replace

    for bits in range(config.bits + 1, 54):
        trial = replace(config, bits=bits)
        room = _ring_room(trial)
        if room > 0 and _floor_epsilon(trial, D, room) <= config.epsilon:
            return bits
    return None


def _floor_epsilon(config: DPConfig, D: int, room: float) -> float:
    # Very large noise: gamma grows with it, and epsilon approaches its floor.
    big = 1e6 * config.clip * math.sqrt(config.num_clients) + 1.0
    return _evaluate(config, D, big, room)[-1]


def calibrate(config: DPConfig, dimension: int) -> DPPlan:
    """The least noise that meets ``config``'s target for ``dimension``-vectors.

    Parameters
    ----------
    config:
        The privacy target, clients, dropout tolerance, rounds, clip and ring.
    dimension:
        d, the length of the flattened update.

    Returns
    -------
    DPPlan
        Noise, gamma, rounding bounds and the achieved epsilon (per round and over
        all rounds, with n_min survivors).

    Raises
    ------
    ConfigError
        If the target cannot be met: too few survivors (fewer than two, so no sum
        hides an individual), a ring too small for n clients' rounding alone, a
        target below the epsilon floor that b bits allow (the message names the
        bit width that would suffice, or says none does), or below the floor that
        the sampler's accurate range allows (noise std <= 2^30 integer steps for
        the discrete Gaussian, 2^17 for Skellam).
    """
    if dimension < 1:
        raise ConfigError(f"dimension must be >= 1, got {dimension}")
    D = padded_dimension(dimension)
    survivors = config.min_survivors
    if survivors < 2:
        raise ConfigError(
            f"too few clients: with n={config.num_clients} and dropout rate "
            f"{config.dropout_rate:g} only {survivors} may survive; distributed noise "
            "needs at least two survivors so that no single client's vector is revealed"
        )
    room = _ring_room(config)
    if room <= 0:
        raise ConfigError(
            f"too few bits: a ring of b={config.bits} bits cannot hold {config.ring_stddevs:g} "
            f"standard deviations of the rounding error of {config.num_clients} clients"
        )
    if math.isinf(config.epsilon):
        gamma = _gamma(config, D, 0.0, room)
        norm, err, delta2, delta1 = _bounds(config, D, gamma)
        return _plan(
            config, dimension, D, gamma, 0.0, norm, err, delta2, delta1, math.inf, math.inf
        )

    floor = _floor_epsilon(config, D, room)
    cap = _MAX_NOISE_STD[config.mechanism]
    if floor > config.epsilon and cap * cap * config.num_clients < room:
        # The sampler's cap, not the ring, bounds the noise in integer steps: more bits
        # would not help (the noise cannot grow past the range where it is accurate).
        raise ConfigError(
            f"cannot reach epsilon={config.epsilon:g} at delta={config.delta:g} over "
            f"{config.rounds} rounds: the {config.mechanism} sampler is accurate only up "
            f"to a per-client noise std of 2^{math.log2(cap):g} integer steps, and at "
            f"that noise rounding {D} coordinates costs epsilon >= {floor:.3g} however "
            "coarse the scale; lower d or the rounds, raise epsilon"
            + (", or use the discrete Gaussian" if config.mechanism == "skellam" else "")
        )
    if floor > config.epsilon:
        bits = _sufficient_bits(config, D)
        hint = (
            f"b >= {bits} bits would suffice"
            if bits is not None
            else "no ring of <= 53 bits suffices; lower d, n or the rounds, or raise epsilon"
        )
        raise ConfigError(
            f"cannot reach epsilon={config.epsilon:g} at delta={config.delta:g} over "
            f"{config.rounds} rounds with b={config.bits} bits: rounding {D} coordinates at "
            f"the resolution this ring allows for {config.num_clients} clients "
            f"({survivors} surviving) costs epsilon >= {floor:.3g} however much noise is "
            f"added; {hint}"
        )
    # epsilon decreases as the noise grows: bisect on log(sigma_real).
    lo, hi = (
        math.log(config.clip * 1e-9),
        math.log(1e6 * config.clip * math.sqrt(config.num_clients) + 1.0),
    )
    for _ in range(_SEARCH_STEPS):
        mid = (lo + hi) / 2
        if _evaluate(config, D, math.exp(mid), room)[-1] <= config.epsilon:
            hi = mid
        else:
            lo = mid
    gamma, param, norm, err, delta2, delta1, eps_round, eps_total = _evaluate(
        config, D, math.exp(hi), room
    )
    return _plan(
        config, dimension, D, gamma, param, norm, err, delta2, delta1, eps_round, eps_total
    )


def _plan(
    config: DPConfig,
    dimension: int,
    D: int,
    gamma: float,
    param: float,
    norm: float,
    err: float,
    delta2: float,
    delta1: float,
    eps_round: float,
    eps_total: float,
) -> DPPlan:
    variance = param**2 if config.mechanism == "discrete_gaussian" else param
    noise: NoiseKind = "none" if param == 0 else config.mechanism
    spec = EncodeSpec(
        clip=config.clip,
        gamma=gamma,
        bits=config.bits,
        norm_bound=norm,
        error_bound=err,
        noise=noise,
        noise_param=param,
        max_tries=_MAX_TRIES,
    )
    return DPPlan(
        config=config,
        dimension=dimension,
        padded_dimension=D,
        gamma=gamma,
        noise_param=param,
        client_noise_std=gamma * math.sqrt(variance),
        norm_bound=norm,
        error_bound=err,
        delta2=delta2,
        delta1=delta1,
        epsilon_per_round=eps_round,
        epsilon=eps_total,
        wrap_probability=min(1.0, 2 * math.exp(-(config.ring_stddevs**2) / 2)),
        spec=spec,
    )
