"""One call to aggregate client updates with a chosen protocol, in-process.

``securefl.aggregate(updates, weights, protocol=...)`` runs the whole protocol for
simulated clients (the in-memory transport for SecAgg / SecAgg+, the CKKS client and
server for ``"ckks"``) and returns the weighted mean in the clients' own structure
(array, dict of arrays, torch state_dict) with what it cost: seconds per phase and
bytes sent and received per client. ``"plain"`` is unprotected FedAvg, the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

import numpy as np

from securefl import vectors
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage

if TYPE_CHECKING:
    from securefl.dp import DPConfig, DPPlan
    from securefl.transports.inmemory import SessionReport

__all__ = ["PROTOCOLS", "AggregationResult", "Protocol", "aggregate", "ckks_available"]

Protocol = Literal["plain", "secagg", "secagg+", "ckks"]
PROTOCOLS: tuple[str, ...] = ("plain", "secagg", "secagg+", "ckks")


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

    @property
    def seconds(self) -> float:
        return sum(self.phase_seconds.values())


def aggregate(
    updates: Sequence[vectors.Update],
    weights: Sequence[int] | None = None,
    *,
    protocol: Protocol = "secagg+",
    dropouts: Mapping[int, Stage] | None = None,
    clip: float = 8.0,
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

    Parameters
    ----------
    updates:
        One update per client: a numpy array, a dict/list of arrays or a torch
        state_dict, all with the same layout.
    weights:
        Integer weights n_k (e.g. examples per client); 1 each by default.
    protocol:
        ``"plain"`` (no protection), ``"secagg"`` (complete graph), ``"secagg+"``
        (random Harary graph) or ``"ckks"`` (CKKS encryption, needs the ckks extra).
    dropouts:
        client index -> the round before which it vanishes (SecAgg rounds). For
        ``"ckks"`` and ``"plain"`` a scheduled client simply sends nothing.
    clip, bits:
        SecAgg's fixed-point code: coordinates are clipped to [-clip, clip] and
        summed in Z_2^bits. Choose clip to cover the values (model weights, not only
        deltas, when aggregating whole models).
    max_weight:
        W, the largest weight any client may use (the clients agree on it in advance);
        by default the largest weight given.
    threshold, degree:
        t and, for SecAgg+, the even degree k. Defaults: t = floor(k / 2) + 1 with
        k = n - 1 (SecAgg) or k = min(n - 1, the even number nearest 2 log2 n, at
        least 4) (SecAgg+). ``SecAggConfig.from_rates`` derives them from dropout and
        corruption rates instead. A threshold below the rules of ``SecAggConfig``
        (t >= 2; 2t > k in authenticated mode) raises ``ConfigError`` naming the
        smallest one allowed.
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
        epsilon. ``clip`` and ``bits`` above are then unused (the plan has its own).

    Raises
    ------
    ConfigError
        For an unknown protocol or parameters that cannot work.
    ProtocolAbort
        If the session aborts (too many dropouts).
    """
    from securefl.errors import ProtocolAbort

    n = len(updates)
    if n < 2:
        raise ConfigError("aggregation needs at least two clients")
    weights = [1] * n if weights is None else [int(w) for w in weights]
    if len(weights) != n or min(weights) < 1:
        raise ConfigError("give one integer weight >= 1 per client")
    dropouts = dict(dropouts or {})
    if dp is not None and protocol not in ("secagg", "secagg+"):
        raise ConfigError(f"dp= needs protocol 'secagg' or 'secagg+', got {protocol!r}")
    if protocol == "plain":
        return _plain(updates, weights, dropouts)
    if protocol == "ckks":
        return _ckks(updates, weights, dropouts, threads)
    if protocol not in ("secagg", "secagg+"):
        raise ConfigError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if dp is not None:
        return _secagg_dp(
            updates,
            weights,
            dp,
            protocol=protocol,
            dropouts=dropouts,
            max_weight=max_weight,
            threshold=threshold,
            degree=degree,
            authenticated=authenticated,
            rng=rng,
            threads=threads,
        )

    from securefl.transports.inmemory import flatten_updates, run_session

    _, layout = flatten_updates(updates[:1])
    config = SecAggConfig(
        num_clients=n,
        dimension=layout.size,
        bits=bits,
        clip=clip,
        max_weight=max_weight if max_weight is not None else max(weights),
        authenticated=authenticated,
        **_graph_options(protocol, n, threshold, degree),
    )
    report = run_session(config, updates, weights, dropouts=dropouts, rng=rng, threads=threads)
    if report.result is None:
        raise ProtocolAbort(report.abort_reason or "session aborted")
    return _secagg_result(protocol, n, report, report.aggregate)


class _GraphOptions(TypedDict):
    threshold: int
    graph: GraphKind
    degree: int | None


def _graph_options(
    protocol: str, n: int, threshold: int | None, degree: int | None
) -> _GraphOptions:
    """graph, degree and threshold for ``protocol`` with the documented defaults."""
    if protocol == "secagg":
        graph, k = GraphKind.COMPLETE, n - 1
    else:
        k = degree if degree is not None else max(4, 2 * round(np.log2(n)))
        k = min(k, n - 1)
        graph = GraphKind.HARARY if k < n - 1 else GraphKind.COMPLETE
    return {
        "threshold": threshold if threshold is not None else k // 2 + 1,
        "graph": graph,
        "degree": k if graph is GraphKind.HARARY else None,
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
    updates: Sequence[vectors.Update],
    weights: list[int],
    dp: DPConfig | DPPlan,
    *,
    protocol: str,
    dropouts: Mapping[int, Stage],
    max_weight: int | None,
    threshold: int | None,
    degree: int | None,
    authenticated: bool,
    rng: Callable[[int], bytes] | None,
    threads: int | None,
) -> AggregationResult:
    """SecAgg over DP-encoded updates: encode per client, ring sum, decode (securefl.dp)."""
    import os
    import time

    from securefl import dp as dpmod
    from securefl.errors import ProtocolAbort
    from securefl.transports.inmemory import run_session

    n = len(updates)
    _, layout = vectors.flatten(updates[0])
    plan = dp if isinstance(dp, dpmod.DPPlan) else dpmod.calibrate(dp, layout.size)
    if plan.dimension != layout.size:
        raise ConfigError(f"the DP plan is for d={plan.dimension}, the updates have {layout.size}")
    if n > plan.config.num_clients:
        raise ConfigError(f"{n} clients but the DP plan is sized for {plan.config.num_clients}")
    source = rng or os.urandom
    round_seed = source(32)  # public: it only fixes this round's rotation
    top = max_weight if max_weight is not None else max(weights)
    if max(weights) > top:
        raise ConfigError(f"a weight exceeds max_weight={top}")
    t0 = time.perf_counter()
    encoded = [
        dpmod.encode_update(
            u,
            plan,
            round_seed=round_seed,
            secret=source(32),
            session=round_seed,
            client_id=i,
            weight=w / top,
            threads=threads,
        ).ring
        for i, (u, w) in enumerate(zip(updates, weights, strict=True))
    ]
    encode_seconds = time.perf_counter() - t0
    config = dpmod.secagg_config(
        plan,
        max_weight=top,
        authenticated=authenticated,
        **_graph_options(protocol, n, threshold, degree),
    )
    report = run_session(config, encoded, weights, dropouts=dropouts, rng=rng, threads=threads)
    if report.result is None or report.result.ring_sum is None:
        raise ProtocolAbort(report.abort_reason or "session aborted")
    t0 = time.perf_counter()
    decoded = dpmod.decode_aggregate(
        report.result.ring_sum,
        plan,
        round_seed=round_seed,
        survivors=len(report.result.contributors),
        total_weight=report.result.total_weight / top,
        threads=threads,
    )
    result = _secagg_result(protocol, n, report, decoded.unflatten(layout))
    result.phase_seconds["client:dp-encode"] = encode_seconds
    result.phase_seconds["server:dp-decode"] = time.perf_counter() - t0
    result.dp = plan
    return result


def _plain(
    updates: Sequence[vectors.Update], weights: list[int], dropouts: Mapping[int, Stage]
) -> AggregationResult:
    t0 = time.perf_counter()
    survivors = [i for i in range(len(updates)) if i not in dropouts]
    flat = [vectors.flatten(updates[i]) for i in survivors]
    layout = flat[0][1]
    total = np.zeros(layout.size)
    for (x, lay), i in zip(flat, survivors, strict=True):
        if lay != layout:
            raise ValueError(f"client {i}'s update has a different layout from the others")
        total += weights[i] * x.astype(np.float64)
    total_weight = sum(weights[i] for i in survivors)
    mean = vectors.unflatten(total / total_weight, layout)
    nbytes = sum(x.nbytes for x, _ in flat) // len(flat)
    return AggregationResult(
        protocol="plain",
        aggregate=mean,
        contributors=tuple(survivors),
        dropped=tuple(sorted(dropouts)),
        total_weight=total_weight,
        phase_seconds={"server:sum": time.perf_counter() - t0},
        bytes_sent={i: nbytes for i in survivors},
        bytes_received={i: nbytes for i in survivors},
    )


def _ckks(
    updates: Sequence[vectors.Update],
    weights: list[int],
    dropouts: Mapping[int, Stage],
    threads: int | None,
) -> AggregationResult:
    from securefl import ckks
    from securefl.ckks.contributions import MIN_CONTRIBUTORS
    from securefl.errors import ProtocolAbort

    survivors = [i for i in range(len(updates)) if i not in dropouts]
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
    layout = None
    for i in survivors:
        t0 = time.perf_counter()
        message, layout = ckks.encrypt_update(ctx, updates[i], weights[i])
        phases["client:encrypt"] += time.perf_counter() - t0
        sent[i] = len(message)
        t0 = time.perf_counter()
        server.add(f"client-{i}", message)
        phases["server:sum"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    result = server.result()
    phases["server:sum"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    assert layout is not None
    mean = ckks.decrypt_mean(ctx, result, layout)
    phases["client:decrypt"] = time.perf_counter() - t0
    return AggregationResult(
        protocol="ckks",
        aggregate=mean,
        contributors=tuple(survivors),
        dropped=tuple(sorted(dropouts)),
        total_weight=sum(weights[i] for i in survivors),
        phase_seconds=phases,
        bytes_sent=sent,
        bytes_received=dict.fromkeys(survivors, len(result)),
    )
