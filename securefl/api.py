"""One call to aggregate client updates with a chosen protocol, in-process.

``securefl.aggregate(updates, weights, protocol=...)`` runs the whole protocol for
simulated clients (the in-memory transport for SecAgg / SecAgg+, the CKKS client and
server for ``"ckks"``) and returns the weighted mean in the clients' own structure
(array, dict of arrays, torch state_dict) with what it cost: seconds per phase and
bytes sent and received per client. ``"plain"`` is unprotected FedAvg, the baseline.

Every protocol checks its inputs the same way before anything runs, so that no
protocol returns a number the others would refuse: one layout for all clients (names,
order, shapes, dtypes, numpy or torch), integer weights >= 1, finite values. All of
them clip to ``[-clip, clip]`` and count what they clipped, and each secure protocol
warns (:class:`PrecisionWarning`) when its error bound on the mean exceeds 1% of the
inputs' scale.
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt

from securefl import vectors
from securefl.encoding import FixedPointEncoder
from securefl.errors import ConfigError
from securefl.primitives.quantize import FixedPoint
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage

if TYPE_CHECKING:
    from securefl.dp import DPConfig, DPPlan
    from securefl.transports.inmemory import SessionReport

__all__ = [
    "PROTOCOLS",
    "AggregationResult",
    "ClippingWarning",
    "OnClip",
    "PrecisionWarning",
    "Protocol",
    "aggregate",
    "ckks_available",
]

Protocol = Literal["plain", "secagg", "secagg+", "ckks"]
PROTOCOLS: tuple[str, ...] = ("plain", "secagg", "secagg+", "ckks")
OnClip = Literal["warn", "error", "ignore"]
PRECISION_TARGET = 0.01
"""The largest error bound on the mean, relative to the inputs' scale, that passes
without a :class:`PrecisionWarning`."""
MAX_WEIGHT = 2**32
"""Weights are below this: SecAgg's weight element and CKKS's weight slot carry them."""


class ClippingWarning(UserWarning):
    """Coordinates beyond ``clip`` were clipped: the mean is of the clipped values."""


class PrecisionWarning(UserWarning):
    """The protocol's error bound on the mean exceeds 1% of the inputs' scale."""


def ckks_available() -> bool:
    """Whether the ``"ckks"`` protocol can run here (TenSEAL installed)."""
    import importlib.util

    return importlib.util.find_spec("tenseal") is not None


@dataclass
class AggregationResult:
    """The weighted mean and what computing it cost.

    ``aggregate`` has the structure of the clients' updates. ``contributors`` are the
    clients whose updates are in it; ``phase_seconds`` maps a phase name to seconds
    (``client:<round>`` summed over clients, ``server:<round>``); byte counts are per
    client, as sent on the wire.
    """

    protocol: str
    aggregate: vectors.Update
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    total_weight: int
    phase_seconds: dict[str, float] = field(default_factory=dict)
    bytes_sent: dict[int, int] = field(default_factory=dict)
    bytes_received: dict[int, int] = field(default_factory=dict)
    dp: DPPlan | None = None
    """With ``dp=``: the calibrated plan (noise, gamma, epsilon per round and in total)."""
    clipped: dict[int, int] = field(default_factory=dict)
    """Per contributor: how many of its coordinates were beyond ``clip`` and clipped,
    0 when none (every protocol clips alike; all 0 with ``clip=None``). Empty with
    ``dp=``, whose plan clips each update's L2 norm instead."""

    @property
    def seconds(self) -> float:
        return sum(self.phase_seconds.values())


def aggregate(
    updates: Sequence[vectors.Update],
    weights: Sequence[int] | None = None,
    *,
    protocol: Protocol = "secagg+",
    dropouts: Mapping[int, Stage] | None = None,
    clip: float | None = 8.0,
    on_clip: OnClip = "warn",
    bits: int = 32,
    max_weight: int | None = None,
    threshold: int | None = None,
    degree: int | None = None,
    authenticated: bool = False,
    rng: Callable[[int], bytes] | None = None,
    threads: int | None = None,
    dp: DPConfig | DPPlan | None = None,
) -> AggregationResult:
    """Aggregate ``updates`` (one per client) with ``protocol``.

    Every protocol checks the inputs alike before it runs (a layout that differs, a
    weight that is not an integer, a NaN: the same error whatever the protocol),
    clips alike and returns the same structure and dtypes.

    Parameters
    ----------
    updates:
        One update per client: a numpy array, a dict/list of arrays or a torch
        state_dict. All clients must have the same layout: the same container and
        framework (numpy or torch), the same names in the same order, the same shapes
        and the same dtypes.
    weights:
        Integer weights n_k >= 1, below 2^32 (e.g. examples per client); 1 each by
        default. Python and numpy integers, and floats with an integer value (``3.0``),
        are taken exactly; anything else (``1.5``, ``True``, NaN, ``"3"``) is refused.
    protocol:
        ``"plain"`` (no protection), ``"secagg"`` (complete graph), ``"secagg+"``
        (random Harary graph) or ``"ckks"`` (CKKS encryption, needs the ckks extra).
    dropouts:
        client index -> the round before which it vanishes (SecAgg rounds). For
        ``"ckks"`` and ``"plain"`` a scheduled client simply sends nothing.
    clip:
        Every protocol clips each coordinate to ``[-clip, clip]``, so that all of them
        compute the same mean: SecAgg's fixed-point code needs the range, and plain
        and CKKS apply it too so their results compare with SecAgg's. Choose it to
        cover the values (model weights, not only deltas, when aggregating whole
        models). ``None``: no clipping, for ``"plain"`` and ``"ckks"`` only.
        ``result.clipped`` counts the clipped coordinates per contributor.
    on_clip:
        What a coordinate beyond ``clip`` does: ``"warn"`` (default) clips it and
        emits one :class:`ClippingWarning` naming each client, its count and its
        largest value; ``"error"`` refuses the update before anything runs;
        ``"ignore"`` clips without a warning. The counts are reported in every case.
    bits:
        SecAgg's ring Z_2^bits; the precision is the finest that cannot overflow
        (``SecAggConfig.frac_bits``). Unused by ``"plain"`` and ``"ckks"``.
    max_weight:
        W, the largest weight any client may use (the clients agree on it in advance);
        by default the largest weight given.
    threshold, degree:
        t and, for SecAgg+, the even degree k. Defaults (``securefl.secagg.defaults``,
        shared with ``securefl bench``, ``securefl serve`` and the Flower strategy):
        SecAgg+ takes k and t from the parameter chooser for 10 % of the clients
        dropping out and at least one (or the scheduled ``dropouts`` where they are
        more) and 10 % colluding with the server; the complete graph takes
        t = floor(n / 2) + 1, at most k - 1, raised to the rules' smallest. A
        threshold below the rules of ``SecAggConfig`` (t >= 2, t > c; 2t > k + c in
        authenticated mode) raises ``ConfigError`` naming the smallest one allowed.
    authenticated:
        SecAgg's authenticated mode (Ed25519 identities, ConsistencyCheck round).
    rng, threads:
        Randomness (tests inject a seeded DRBG) and threads per party.
    dp:
        Distributed differential privacy (``securefl.dp``, SecAgg / SecAgg+ only): a
        ``DPConfig`` (calibrated here for the updates' dimension) or a ready
        ``DPPlan``. Each client clips its update to L2 norm ``dp.clip``, folds in the
        public weight n_k / W, and adds its share of the noise inside the ring; the
        result is the noisy weighted mean, and ``result.dp`` says what it cost in
        epsilon. ``clip``, ``on_clip`` and ``bits`` above are then unused (the plan
        has its own) and ``result.clipped`` is empty.

    Returns
    -------
    AggregationResult
        ``aggregate`` is the weighted mean of the contributors' clipped updates in
        the clients' structure. Float leaves keep their dtype; integer and bool leaves
        come back as ``float64`` (the mean of integers is not an integer, and is never
        rounded), as numpy arrays or torch tensors like the inputs.

    Warns
    -----
    ClippingWarning
        With ``on_clip="warn"``, if a contributor had coordinates beyond ``clip``.
    PrecisionWarning
        If the protocol's worst-case error on a coordinate of the mean exceeds 1% of
        the inputs' scale (their largest magnitude after clipping). SecAgg: the
        rounding of each contribution, ``m * 2^-p * W / N`` for m contributors of
        total weight N (the message names the smallest ``bits`` that suffices). CKKS:
        ``securefl.ckks.flooding.error_bound / N``. Plain sums in float64: never.

    Raises
    ------
    ValueError
        If the clients' layouts differ (naming the client, and the keys, order, shape,
        dtype or framework that differs from client 0's), a value is NaN or infinite,
        or, with ``on_clip="error"``, a value is beyond ``clip``: each names the client
        index, the value and where it is (``'w'[1, 0]``).
    TypeError
        If an update is not an array, dict, list or state_dict of supported leaves
        (naming the client).
    ConfigError
        For an unknown protocol, parameters that cannot work, or a weight that is not
        an integer in [1, 2^32) and at most ``max_weight`` (naming the client and the
        weight). ``ConfigError`` is also a ``ValueError``.
    ProtocolAbort
        If the session aborts (too many dropouts).
    """
    from securefl.errors import ProtocolAbort

    n = len(updates)
    if n < 2:
        raise ConfigError("aggregation needs at least two clients")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if dp is not None and protocol not in ("secagg", "secagg+"):
        raise ConfigError(f"dp= needs protocol 'secagg' or 'secagg+', got {protocol!r}")
    if on_clip not in ("warn", "error", "ignore"):
        raise ConfigError(f"on_clip must be 'warn', 'error' or 'ignore', got {on_clip!r}")
    if dp is None:
        _check_clip(protocol, clip)
    checked_weights = _check_weights(weights, n)
    top = _check_max_weight(checked_weights, max_weight)
    inputs = _prepare(updates, None if dp is not None else clip, on_clip)
    dropouts = dict(dropouts or {})

    if dp is not None:
        return _secagg_dp(
            inputs,
            checked_weights,
            dp,
            protocol=protocol,
            dropouts=dropouts,
            max_weight=top,
            threshold=threshold,
            degree=degree,
            authenticated=authenticated,
            rng=rng,
            threads=threads,
        )
    bound: float
    if protocol == "plain":
        result = _plain(inputs, checked_weights, dropouts)
        bound = 0.0  # float64 sums: exact to the inputs' own rounding
    elif protocol == "ckks":
        result, bound = _ckks(inputs, checked_weights, dropouts, threads)
    else:
        from securefl.transports.inmemory import run_session

        assert clip is not None  # _check_clip refused None for SecAgg
        config = SecAggConfig(
            num_clients=n,
            dimension=inputs.layout.size,
            bits=bits,
            clip=float(clip),
            max_weight=top,
            authenticated=authenticated,
            **_graph_options(
                protocol, n, threshold, degree, dropouts=len(dropouts), authenticated=authenticated
            ),
        )
        # The session's fixed-point encoder, on the vectors flattened once above.
        encoder = FixedPointEncoder.for_config(config, threads=threads)
        encoded = [encoder.encode(x, w) for x, w in zip(inputs.flat, checked_weights, strict=True)]
        report = run_session(
            config, encoded, checked_weights, dropouts=dropouts, rng=rng, threads=threads
        )
        if report.result is None:
            raise ProtocolAbort(report.abort_reason or "session aborted")
        mean = vectors.unflatten(report.result.weighted_mean, inputs.out_layout)
        result = _secagg_result(protocol, n, report, mean)
        bound = _secagg_bound(config.fixed_point, len(result.contributors), top, result)
    result.clipped = {i: inputs.clipped[i] for i in result.contributors}
    if on_clip == "warn":
        _warn_clipped(inputs, result.contributors, clip)
    _warn_precision(protocol, inputs, result, bound, bits=bits, clip=clip, max_weight=top)
    return result


@dataclass
class _Inputs:
    """The clients' updates, flattened, checked and clipped, with what clipping did."""

    flat: list[npt.NDArray[np.floating[Any]]]
    layout: vectors.Layout
    out_layout: vectors.Layout
    """``layout`` with integer and bool leaves as float64: the mean's layout."""
    clipped: list[int]
    """Per client: coordinates beyond the clip."""
    largest: list[tuple[int, float]]
    """Per client: (flat index, value) of its largest magnitude before clipping."""
    scale: list[float]
    """Per client: its largest magnitude after clipping."""


def _check_clip(protocol: str, clip: float | None) -> None:
    if clip is None:
        if protocol in ("secagg", "secagg+"):
            # SecAgg's fixed-point code needs a range; deriving it from the data would
            # leak every client's largest value to the others.
            raise ConfigError(
                f"protocol {protocol!r} needs a finite clip > 0 for its fixed-point code; "
                "clip=None (no clipping) is for 'plain' and 'ckks' only"
            )
        return
    if isinstance(clip, bool) or not isinstance(clip, int | float | np.integer | np.floating):
        raise ConfigError(f"clip must be a number > 0 or None, got {clip!r}")
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"clip must be finite and > 0, got {clip!r}")


def _check_weights(weights: Sequence[int] | None, n: int) -> list[int]:
    """The weights as exact Python ints; each refusal names the client and the value."""
    if weights is None:
        return [1] * n
    given = list(weights)
    if len(given) != n:
        raise ConfigError(
            f"{len(given)} weights for {n} clients; give one integer weight >= 1 per client"
        )
    checked = []
    for i, w in enumerate(given):
        # bool is an int to Python: True would silently count as one example.
        if isinstance(w, bool | np.bool_):
            raise ConfigError(f"client {i}'s weight {w!r} is a bool; give an integer >= 1")
        try:
            value = operator.index(w)
        except TypeError:
            value = None
            if isinstance(w, float | np.floating) and math.isfinite(w) and float(w).is_integer():
                value = int(w)
        if value is None:
            # int(1.9999) == 1: a fractional weight would be truncated without a word.
            raise ConfigError(
                f"client {i}'s weight {w!r} is not an integer; weights are integers >= 1 "
                "(e.g. examples per client), which SecAgg and CKKS carry exactly"
            )
        if not 1 <= value < MAX_WEIGHT:
            raise ConfigError(f"client {i}'s weight {value} is not in [1, 2^32)")
        checked.append(value)
    return checked


def _check_max_weight(weights: list[int], max_weight: int | None) -> int:
    if max_weight is None:
        return max(weights)
    if isinstance(max_weight, bool):
        raise ConfigError(f"max_weight must be an integer, got {max_weight!r}")
    try:
        top = operator.index(max_weight)
    except TypeError:
        raise ConfigError(f"max_weight must be an integer, got {max_weight!r}") from None
    if not 1 <= top < MAX_WEIGHT:
        raise ConfigError(f"max_weight must be in [1, 2^32), got {top}")
    for i, w in enumerate(weights):
        if w > top:
            raise ConfigError(f"client {i}'s weight {w} exceeds max_weight={top}")
    return top


def _prepare(updates: Sequence[vectors.Update], clip: float | None, on_clip: str) -> _Inputs:
    """Flatten every update, check it against client 0's and clip it (in our copy)."""
    flat: list[npt.NDArray[np.floating[Any]]] = []
    clipped: list[int] = []
    largest: list[tuple[int, float]] = []
    scale: list[float] = []
    layout: vectors.Layout | None = None
    # Coordinates of different parameters would be added together (CKKS would return
    # the mixture under the last client's names): iter_flattened checks each layout.
    for i, (x, layout) in enumerate(vectors.iter_flattened(updates)):
        finite = np.isfinite(x)
        if not finite.all():
            # One NaN would make the whole mean NaN (plain) or abort the session.
            j = int(np.argmin(finite))
            raise ValueError(
                f"client {i}'s update holds {float(x[j])} at {layout.locate(j)}; every "
                "value must be finite"
            )
        del finite
        magnitude = np.abs(x)
        j = int(np.argmax(magnitude)) if x.size else 0
        peak = float(magnitude[j]) if x.size else 0.0
        # Compared in float64, as the quantizer does, whatever the vector's dtype.
        count = 0 if clip is None else int(np.count_nonzero(magnitude > np.float64(clip)))
        del magnitude
        if count and on_clip == "error":
            raise ValueError(
                f"client {i}'s update holds {float(x[j]):g} at {layout.locate(j)}, beyond "
                f"clip={clip:g} ({count} coordinate(s) beyond it; on_clip='error'); raise "
                "clip to cover the values, or pass on_clip='warn' to clip them"
            )
        largest.append((j, float(x[j]) if x.size else 0.0))
        if count:
            assert clip is not None
            np.clip(x, -clip, clip, out=x)  # x is flatten's copy, never the caller's
            peak = min(peak, clip)
        flat.append(x)
        clipped.append(count)
        scale.append(peak)
    assert layout is not None
    return _Inputs(flat, layout, layout.float_leaves(), clipped, largest, scale)


def _warn_clipped(inputs: _Inputs, contributors: Sequence[int], clip: float | None) -> None:
    hit = [i for i in contributors if inputs.clipped[i]]
    if not hit:
        return
    shown = []
    for i in hit[:10]:
        j, value = inputs.largest[i]
        shown.append(
            f"client {i}: {inputs.clipped[i]} (largest {value:g} at {inputs.layout.locate(j)})"
        )
    if len(hit) > 10:
        shown.append(f"and {len(hit) - 10} more clients")
    total = sum(inputs.clipped[i] for i in hit)
    warnings.warn(
        f"clip={clip:g} clipped {total} coordinate(s) of {len(hit)} client(s), so the mean "
        f"is of clipped values: {', '.join(shown)}; raise clip to cover the values, or "
        "pass on_clip='error' to refuse them or 'ignore' to accept them silently "
        "(result.clipped has the counts)",
        ClippingWarning,
        stacklevel=3,
    )


def _secagg_bound(
    fp: FixedPoint, contributors: int, max_weight: int, result: AggregationResult
) -> float:
    """Worst-case error of a coordinate of SecAgg's mean: each contribution is rounded
    by less than one step 2^-p, and the sum is scaled by W / N."""
    return contributors * fp.precision * max_weight / result.total_weight


def _warn_precision(
    protocol: str,
    inputs: _Inputs,
    result: AggregationResult,
    bound: float,
    *,
    bits: int,
    clip: float | None,
    max_weight: int,
) -> None:
    scale = max((inputs.scale[i] for i in result.contributors), default=0.0)
    if scale == 0.0 or bound <= PRECISION_TARGET * scale:  # all zeros: nothing to lose
        return
    m = len(result.contributors)
    if protocol == "ckks":
        what = f"CKKS's noise (decryption flooding included, {m} contributions)"
        advice = "scale the inputs up (CKKS's error is absolute) or use SecAgg with more bits"
    else:
        assert clip is not None
        n = len(inputs.flat)
        what = f"SecAgg's fixed-point code (bits={bits}, clip={clip:g}, {n} clients)"
        need = _bits_needed(bits, clip, n, m, max_weight, result.total_weight, scale)
        advice = (
            f"use bits={need} or more, or a smaller clip"
            if need is not None
            else "even bits=64 is too coarse: lower clip or scale the inputs up"
        )
    warnings.warn(
        f"{what} bounds the mean's error by {bound:.3g}, more than "
        f"{PRECISION_TARGET:.0%} of the inputs' scale (largest |value| {scale:.3g}); "
        f"{advice}",
        PrecisionWarning,
        stacklevel=3,
    )


def _bits_needed(
    bits: int, clip: float, n: int, m: int, max_weight: int, total_weight: int, scale: float
) -> int | None:
    """The smallest ring (<= 64 bits) whose bound meets the target, if any."""
    for b in range(bits + 1, 65):
        if n * max_weight >= 2**b:
            continue  # the weight element would wrap
        try:
            fp = FixedPoint.for_ring(bits=b, clip=clip, max_summands=n)
        except ConfigError:
            continue
        if m * fp.precision * max_weight / total_weight <= PRECISION_TARGET * scale:
            return b
    return None


class _GraphOptions(TypedDict):
    threshold: int
    graph: GraphKind
    degree: int | None
    corruption_rate: float


def _graph_options(
    protocol: str,
    n: int,
    threshold: int | None,
    degree: int | None,
    *,
    dropouts: int = 0,
    authenticated: bool = False,
) -> _GraphOptions:
    """graph, degree and threshold for ``protocol``: the shared defaults
    (:mod:`securefl.secagg.defaults`), planned for the scheduled dropouts where they
    are more than the defaults plan for."""
    from securefl.secagg.defaults import DEFAULT_CORRUPTION_RATE, default_config, planned_dropouts

    def derive(rate: Fraction | None) -> SecAggConfig:
        return default_config(
            n,
            1,
            complete=protocol == "secagg",
            threshold=threshold,
            degree=degree,
            dropout_rate=rate,
            corruption_rate=DEFAULT_CORRUPTION_RATE,
            authenticated=authenticated,
        )

    base = None
    if dropouts > planned_dropouts(n):
        # Where no graph survives that many, the session aborts and says so.
        with contextlib.suppress(ConfigError):
            base = derive(Fraction(dropouts, n))
    if base is None:
        base = derive(None)
    return {
        "threshold": base.threshold,
        "graph": base.graph,
        "degree": base.degree,
        "corruption_rate": base.corruption_rate,
    }


def _secagg_result(
    protocol: str, n: int, report: SessionReport, aggregate: vectors.Update
) -> AggregationResult:
    assert report.result is not None
    phases: dict[str, float] = {}
    for stage, seconds in report.client_seconds.items():
        phases[f"client:{stage.value}"] = seconds
    for stage, seconds in report.server_seconds.items():
        phases[f"server:{stage.value}"] = seconds
    return AggregationResult(
        protocol=protocol,
        aggregate=aggregate,
        contributors=report.result.contributors,
        dropped=tuple(i for i in range(n) if i not in report.result.contributors),
        total_weight=report.result.total_weight,
        phase_seconds=phases,
        bytes_sent=report.bytes_up,
        bytes_received=report.bytes_down,
    )


def _secagg_dp(
    inputs: _Inputs,
    weights: list[int],
    dp: DPConfig | DPPlan,
    *,
    protocol: str,
    dropouts: Mapping[int, Stage],
    max_weight: int,
    threshold: int | None,
    degree: int | None,
    authenticated: bool,
    rng: Callable[[int], bytes] | None,
    threads: int | None,
) -> AggregationResult:
    """SecAgg over DP-encoded updates: encode per client, ring sum, decode (securefl.dp)."""
    import os

    from securefl import dp as dpmod
    from securefl.errors import ProtocolAbort
    from securefl.transports.inmemory import run_session

    n = len(inputs.flat)
    size = inputs.layout.size
    plan = dp if isinstance(dp, dpmod.DPPlan) else dpmod.calibrate(dp, size)
    if plan.dimension != size:
        raise ConfigError(f"the DP plan is for d={plan.dimension}, the updates have {size}")
    if n > plan.config.num_clients:
        raise ConfigError(f"{n} clients but the DP plan is sized for {plan.config.num_clients}")
    source = rng or os.urandom
    round_seed = source(32)  # public: it only fixes this round's rotation
    top = max_weight
    t0 = time.perf_counter()
    encoder = dpmod.DPEncoder(
        plan, round_seed=round_seed, max_weight=top, rng=source, threads=threads
    )
    encoded = [
        encoder.encode(x, w, client_id=i)
        for i, (x, w) in enumerate(zip(inputs.flat, weights, strict=True))
    ]
    encode_seconds = time.perf_counter() - t0
    config = dpmod.secagg_config(
        plan,
        max_weight=top,
        authenticated=authenticated,
        **_graph_options(
            protocol, n, threshold, degree, dropouts=len(dropouts), authenticated=authenticated
        ),
    )
    report = run_session(config, encoded, weights, dropouts=dropouts, rng=rng, threads=threads)
    if report.result is None or report.result.ring_sum is None:
        raise ProtocolAbort(report.abort_reason or "session aborted")
    t0 = time.perf_counter()
    decoded = encoder.decode_aggregate(report.result)
    result = _secagg_result(protocol, n, report, decoded.unflatten(inputs.out_layout))
    result.phase_seconds["client:dp-encode"] = encode_seconds
    result.phase_seconds["server:dp-decode"] = time.perf_counter() - t0
    result.dp = plan
    return result


def _plain(inputs: _Inputs, weights: list[int], dropouts: Mapping[int, Stage]) -> AggregationResult:
    t0 = time.perf_counter()
    survivors = [i for i in range(len(inputs.flat)) if i not in dropouts]
    total_weight = sum(weights[i] for i in survivors)
    flat_mean = vectors.weighted_mean(
        [inputs.flat[i] for i in survivors], [weights[i] for i in survivors]
    )
    mean = vectors.unflatten(flat_mean, inputs.out_layout)
    nbytes = inputs.flat[0].nbytes
    return AggregationResult(
        protocol="plain",
        aggregate=mean,
        contributors=tuple(survivors),
        dropped=tuple(sorted(dropouts)),
        total_weight=total_weight,
        phase_seconds={"server:sum": time.perf_counter() - t0},
        bytes_sent=dict.fromkeys(survivors, nbytes),
        bytes_received=dict.fromkeys(survivors, nbytes),
    )


def _ckks(
    inputs: _Inputs,
    weights: list[int],
    dropouts: Mapping[int, Stage],
    threads: int | None,
) -> tuple[AggregationResult, float]:
    """The CKKS mean and its documented error bound (``flooding.error_bound / N``)."""
    from securefl import ckks
    from securefl.ckks.contributions import MIN_CONTRIBUTORS
    from securefl.ckks.flooding import error_bound
    from securefl.errors import ProtocolAbort

    survivors = [i for i in range(len(inputs.flat)) if i not in dropouts]
    if len(survivors) < MIN_CONTRIBUTORS:
        # The "sum" of one ciphertext is that client's update: no client decrypts it.
        raise ProtocolAbort(
            f"only {len(survivors)} client(s) sent an update; a CKKS aggregate needs at "
            f"least {MIN_CONTRIBUTORS} contributions"
        )
    phases = {"setup:keys": 0.0, "client:encrypt": 0.0, "server:sum": 0.0, "client:decrypt": 0.0}
    t0 = time.perf_counter()
    ctx = ckks.ClientContext.generate()
    server = ckks.Aggregator(ckks.ServerContext.from_bytes(ctx.server_bytes()), threads=threads)
    phases["setup:keys"] = time.perf_counter() - t0
    sent: dict[int, int] = {}
    for i in survivors:
        t0 = time.perf_counter()
        # The flat vector: its layout was checked against every other client's above.
        message, _ = ckks.encrypt_update(ctx, inputs.flat[i], weights[i])
        phases["client:encrypt"] += time.perf_counter() - t0
        sent[i] = len(message)
        t0 = time.perf_counter()
        server.add(f"client-{i}", message)
        phases["server:sum"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    result = server.result()
    phases["server:sum"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    decrypted = ckks.decrypt_aggregate(ctx, result)
    mean = vectors.unflatten(decrypted.mean, inputs.out_layout)
    phases["client:decrypt"] = time.perf_counter() - t0
    total_weight = sum(weights[i] for i in survivors)
    outcome = AggregationResult(
        protocol="ckks",
        aggregate=mean,
        contributors=tuple(survivors),
        dropped=tuple(sorted(dropouts)),
        total_weight=total_weight,
        phase_seconds=phases,
        bytes_sent=sent,
        bytes_received=dict.fromkeys(survivors, len(result)),
    )
    return outcome, error_bound(ctx.spec, len(survivors)) / total_weight
