"""Flower 1.42 SecAgg+ as a benchmark baseline, computed by Flower's own code.

Nothing of Flower is re-implemented here. Every masking, quantization, Shamir and key-agreement
step is a call into the installed ``flwr`` package (pinned: ``flwr==1.42.0``):

* client: the stage functions of the SecAgg+ Mod,
  ``flwr/client/mod/secure_aggregation/secaggplus_mod.py`` (``_setup``, ``_share_keys``,
  ``_collect_masked_vectors``), on Flower's own ``SecAggPlusState``;
* server: the stage methods of ``SecAggPlusWorkflow`` in
  ``flwr/server/workflow/secure_aggregation/secaggplus_workflow.py``
  (``setup_stage``, ``share_keys_stage``, ``collect_masked_vectors_stage``, ``unmask_stage``);
* full round: ``SecAggPlusWorkflow.__call__`` driving a ``ClientApp(mods=[secaggplus_mod])`` per
  client, i.e. Flower's real workflow and real Mod, in process.

Flower's simulation engine (``flwr.simulation.run_simulation``) is not used here: it runs
ClientApps in Ray actor processes, and this module compares computation, not transports, against
securefl's in-process simulator. Instead securefl's in-process Grid
(:class:`securefl.transports.flower.local_grid.LocalGrid`, here ``_LiveGrid``) hands each
message to the ClientApp of its destination; it only moves messages (each instruction is
deep-copied, standing in for the serialization of a real Grid: the Mod pops keys from the
ConfigRecord it receives). The only non-Flower code on the measured path is that transport and a
pass-through ``aggregate_fit`` (``_PassThrough``) that hands the secure aggregate on instead of
re-averaging 45 copies of it. (The comparison inside Flower's own simulation engine is
``benchmarks/test_bench_flower_adapter.py``.)

Used by ``securefl bench --compare flower`` and ``benchmarks/test_flower_baseline.py``.

Flower's SecAgg+ pipeline (what the functions below run)
--------------------------------------------------------
Client, ``secaggplus_mod._collect_masked_vectors`` (stage "collect masked vectors"):

1. Decrypt the k forwarded share ciphertexts (Fernet, key from ``generate_shared_key``:
   ECDH P-384 + HKDF-SHA256, ``crypto/symmetric_encryption.py``) and store the shares.
2. Weight: ``ratio = num_examples / max_weight``; ``q_ratio = round(ratio * Q)``;
   ``dq_ratio = q_ratio / Q``; ``parameters_multiply(params, dq_ratio)``
   (``ndarrays_arithmetic.py``). The weight travels inside the masked vector:
   ``factor_combine(q_ratio, ...)`` prepends a 1-element array ``[q_ratio]``.
3. Quantize (``quantization.py:quantize``): clip to ``[-c, c]``, shift by ``+c``, scale by
   ``Q / (2c)`` into ``[0, Q]`` (Q + 1 levels), then **stochastic rounding**
   (``_stochastic_round``: ``ceil(v)``, minus 1 with probability ``ceil(v) - v``; unbiased for
   the float value it is given; the coins come from NumPy's *global legacy* RNG
   ``np.random.rand``, not a CSPRNG). Output dtype **int32**. The arithmetic runs in the input's
   dtype: for float32 updates ``dq * x``, ``+ c`` and ``* Q/(2c)`` are rounded to float32
   first (at the defaults up to ~1/4 step, deterministic), so rounding is unbiased only for
   float64 input.
4. Private mask ``pseudo_rand_gen(rd_seed, M, shapes)`` (``secaggplus_utils.py``) added, then for
   each of the k neighbours a pairwise mask ``pseudo_rand_gen(generate_shared_key(sk1, pk1_v))``,
   added if ``nid > v`` else subtracted. ``pseudo_rand_gen`` XOR-folds the seed bytes into a
   **32-bit** seed for ``np.random.RandomState`` (MT19937) and draws
   ``randint(0, M - 1, dtype=int64)``: values in ``[0, M - 2]``. So each mask has a 2^32 seed
   space and comes from a non-cryptographic generator. Arithmetic is int64 (no reduction
   between terms); ``parameters_mod(.., M)`` (a bit mask, M is a power of two) once at the end.
5. Wire: ``ndarray_to_bytes`` = ``np.save`` of the **int64** arrays: 8 bytes per coordinate
   (+ a 128-byte .npy header per array, + the factor array), for a 32-bit ring.

Server, ``SecAggPlusWorkflow``:

* ``collect_masked_vectors_stage``: ``bytes_to_ndarray`` (``np.load``) of each survivor's vector,
  running int64 ``parameters_addition``, one ``parameters_mod(.., M)``.
* ``unmask_stage``: for every sampled client, ``combine_shares`` (pycryptodome Shamir over
  GF(2^128), 16-byte chunks of the PKCS#7-padded secret; the 32-byte ``rd_seed`` is 3 chunks,
  the PEM-encoded P-384 ``sk1`` ~20 chunks); a survivor's private mask is regenerated and
  subtracted; for a dropped client, ECDH(sk1_dropped, pk1_v) + ``pseudo_rand_gen`` for **every**
  neighbour v (dropped neighbours included; those pairs cancel) is added/subtracted. Then
  ``parameters_mod``, ``factor_extract`` (``q_total = sum q_ratio``), ``dequantize``
  (``q * 2c/Q - c``, float64), ``+= -(n_active - 1) * c``, ``*= Q / q_total``.
  The output is the **weighted average** ``sum dq_i x_i / sum dq_i`` over survivors (float64),
  not the sum.

Quantization at the same bit budget: defaults (``SecAggPlusWorkflow.__init__``) are
``clipping_range c = 8.0``, ``quantization_range Q = 2**22``, ``modulus_range M = 2**32``,
``max_weight = 1000``. A client's value uses log2(Q + 1) ~ 22 bits of a 32-bit ring (headroom for
M / Q ~ 1024 summands, checked nowhere but by a warning on ``num_shares``), and 64 bits on the
wire. Step ``2c/Q`` (2^-18 ~ 3.8e-6 at the defaults) applies to ``dq_i * x_i``, so a client
with ``num_examples << max_weight`` has an effective step of ``2c / (Q * dq_i)``. The error of
Flower's output is below ``n_active * (1 + float32 rounding) * (2c/Q) / sum dq_i``
(:func:`flower_expected_average`).

Neighbours (``setup_stage``): node ids shuffled (``random.shuffle``) on a ring; each client's
neighbourhood is the ``num_shares`` consecutive ids centred on it, itself included, so
``num_shares = k + 1`` for k neighbours (odd for SecAgg+); ``num_shares = n`` is complete SecAgg.
``reconstruction_threshold`` t counts shares, the client's own share included.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

with warnings.catch_warnings():
    # flwr 1.42 imports typer, which touches a deprecated click attribute at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod.secure_aggregation.secaggplus_mod import (
        SecAggPlusState,
        _collect_masked_vectors,
        _setup,
        _share_keys,
        secaggplus_mod,
    )
    from flwr.clientapp import ClientApp
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.secaggplus_constants import (
        RECORD_KEY_CONFIGS,
        Key,
        Stage,
    )
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (
        SecAggPlusWorkflow,
        WorkflowState,
    )

    from securefl.transports.flower.local_grid import LocalGrid, task_identity

DEFAULT_CLIPPING_RANGE = 8.0  # SecAggPlusWorkflow defaults
DEFAULT_QUANTIZATION_RANGE = 2**22
DEFAULT_MODULUS_RANGE = 2**32
DEFAULT_MAX_WEIGHT = 1000.0
_RUN_ID = 1

Update = list[np.ndarray] | np.ndarray


def _as_list(update: Update) -> list[np.ndarray]:
    return [update] if isinstance(update, np.ndarray) else list(update)


def _distinct_node_ids(rng: np.random.Generator, n: int) -> list[int]:
    """Random positive 63-bit node ids, as a SuperLink assigns (the order decides mask signs)."""
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(v) for v in rng.integers(1, 2**63 - 1, n - len(ids)))
    return sorted(ids)


# --------------------------------------------------------------------------------------------
# Client: one client's "collect masked vectors" stage
# --------------------------------------------------------------------------------------------


@dataclass
class FlowerClientGroup:
    """k + 1 Flower clients that finished stages 0 (setup) and 1 (share keys) together.

    A complete neighbourhood: each client's ``SecAggPlusState`` (as the Mod stores it in its
    Context, ``state.to_dict()``) and the stage-2 config the server forwards to it (the
    ciphertexts of the shares its k neighbours encrypted for it, and their sources).
    """

    node_ids: list[int]
    states: dict[int, dict[str, Any]]
    stage2_configs: dict[int, dict[str, Any]]


def flower_client_group(
    num_neighbours: int,
    *,
    seed: int = 0,
    threshold: int | None = None,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    quantization_range: int = DEFAULT_QUANTIZATION_RANGE,
    modulus_range: int = DEFAULT_MODULUS_RANGE,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> FlowerClientGroup:
    """Setup (not timed): run Flower's ``_setup`` and ``_share_keys`` for k + 1 clients.

    Key pairs (two P-384 pairs per client, ``generate_key_pairs``) and the private-mask seed
    (``os.urandom(32)``) are drawn inside Flower and cannot be seeded; ``seed`` only fixes the
    node ids.
    """
    k1 = num_neighbours + 1
    t = threshold if threshold is not None else k1 // 2 + 1
    nids = _distinct_node_ids(np.random.default_rng(seed), k1)
    setup_cfg = {  # what SecAggPlusWorkflow.setup_stage sends
        Key.SAMPLE_NUMBER: k1,
        Key.SHARE_NUMBER: k1,
        Key.THRESHOLD: t,
        Key.CLIPPING_RANGE: float(clipping_range),
        Key.TARGET_RANGE: int(quantization_range),
        Key.MOD_RANGE: int(modulus_range),
        Key.MAX_WEIGHT: float(max_weight),
    }
    states: dict[int, SecAggPlusState] = {}
    public_keys: dict[str, list[bytes]] = {}
    for nid in nids:
        state = SecAggPlusState()
        state.nid = nid  # secaggplus_mod: state.nid = msg.metadata.dst_node_id
        keys = _setup(state, ConfigRecord(dict(setup_cfg)))
        public_keys[str(nid)] = [
            cast(bytes, keys[Key.PUBLIC_KEY_1]),
            cast(bytes, keys[Key.PUBLIC_KEY_2]),
        ]
        states[nid] = state
    # Routing mirrors SecAggPlusWorkflow.share_keys_stage (fwd_srcs / fwd_ciphertexts).
    fwd: dict[int, tuple[list[int], list[bytes]]] = {nid: ([], []) for nid in nids}
    for nid, state in states.items():
        res = _share_keys(state, ConfigRecord(dict(public_keys)))
        destinations = cast(list[int], res[Key.DESTINATION_LIST])
        ciphertexts = cast(list[bytes], res[Key.CIPHERTEXT_LIST])
        for dst, ct in zip(destinations, ciphertexts, strict=True):
            fwd[dst][0].append(nid)
            fwd[dst][1].append(ct)
    return FlowerClientGroup(
        node_ids=nids,
        states={nid: st.to_dict() for nid, st in states.items()},
        stage2_configs={
            nid: {Key.CIPHERTEXT_LIST: cts, Key.SOURCE_LIST: srcs}
            for nid, (srcs, cts) in fwd.items()
        },
    )


def flower_client_masked_input(
    update: Update,
    num_neighbours: int,
    *,
    clipping_range: float,
    quantization_range: int,
    modulus_range: int,
    seed: int,
    num_examples: int = int(DEFAULT_MAX_WEIGHT),
    max_weight: float = DEFAULT_MAX_WEIGHT,
    group: FlowerClientGroup | None = None,
    node_id: int | None = None,
) -> list[np.ndarray]:
    """What one Flower client computes and sends in "collect masked vectors".

    Runs ``secaggplus_mod._collect_masked_vectors`` itself: decrypt k share ciphertexts,
    k ECDH + HKDF for the pairwise seeds (Flower derives them here, in this stage, so they are
    part of the measured work), weight, quantize, private mask, k pairwise masks, mod M,
    ``ndarray_to_bytes``. Also included: ``ndarrays_to_parameters`` of the update (the legacy
    NumPyClient path serializes the fit result before the Mod sees it) and decoding Flower's
    wire bytes back to arrays for the caller (one ``np.load`` per array).

    Without ``group`` the group (key generation and share keys for k + 1 clients) is built
    inside, which is slow: benchmarks pass one from :func:`flower_client_group`.

    ``seed`` seeds NumPy's global legacy RNG, from which Flower's quantizer draws its rounding
    coins (and nothing else here), so the result is reproducible for a given group.

    Returns Flower's wire layout decoded: ``[array([q_ratio]), masked_0, masked_1, ...]``,
    int64, values in ``[0, modulus_range)``. Default weight: ``num_examples == max_weight``
    (``q_ratio = Q``, no weighting).
    """
    if group is None:
        group = flower_client_group(
            num_neighbours,
            seed=seed,
            clipping_range=clipping_range,
            quantization_range=quantization_range,
            modulus_range=modulus_range,
            max_weight=max_weight,
        )
    if len(group.node_ids) != num_neighbours + 1:
        raise ValueError(f"group has {len(group.node_ids) - 1} neighbours, not {num_neighbours}")
    nid = group.node_ids[0] if node_id is None else node_id
    # secaggplus_mod rebuilds its state from the Context at every message.
    state = SecAggPlusState(**group.states[nid])
    # Equivalent to the server having sent these values in the setup stage.
    state.clipping_range = float(clipping_range)
    state.target_range = int(quantization_range)
    state.mod_range = int(modulus_range)
    state.max_weight = float(max_weight)
    np.random.seed(seed)
    parameters = ndarrays_to_parameters(_as_list(update))
    config = ConfigRecord(dict(group.stage2_configs[nid]))
    res = _collect_masked_vectors(state, config, num_examples, parameters)
    return [bytes_to_ndarray(b) for b in cast(list[bytes], res[Key.MASKED_PARAMETERS])]


# --------------------------------------------------------------------------------------------
# In-process transport for Flower's real workflow and Mod
# --------------------------------------------------------------------------------------------


def _stage_of(msg: Message) -> str:
    return str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])


def _payload_bytes(msg: Message) -> int:
    """Bytes values in a reply's ConfigRecords (lists of bytes included)."""
    total = 0
    for record in msg.content.config_records.values():
        for value in record.values():
            if isinstance(value, bytes):
                total += len(value)
            elif isinstance(value, list):
                total += sum(len(v) for v in value if isinstance(v, bytes))
    return total


class _LiveGrid(LocalGrid):
    """Flower's ClientApps in this process (:class:`LocalGrid`, exceptions propagate),
    with what the bench needs of each delivery.

    ``silent``: stage -> node ids that do not answer in that stage (dropouts; they do not
    compute either). ``record``: stage -> replies, filled when given. ``uploaded``: node id ->
    bytes of every bytes value its replies carried (keys, ciphertexts, masked vectors, shares),
    accumulated when given: a lower bound of what Flower's wire would carry.
    """

    def __init__(
        self,
        apps: dict[int, tuple[ClientApp, Context]],
        silent: dict[str, set[int]] | None = None,
        record: dict[str, list[Message]] | None = None,
        uploaded: dict[int, int] | None = None,
    ) -> None:
        super().__init__(apps, raise_errors=True)
        self.silent, self.record, self.uploaded = silent or {}, record, uploaded

    def deliver(self, message: Message) -> Message | None:
        stage = _stage_of(message)
        nid = message.metadata.dst_node_id
        if nid in self.silent.get(stage, ()):
            return None
        reply = super().deliver(message)
        assert reply is not None  # raise_errors: a ClientApp answers or raises
        if self.record is not None:
            self.record.setdefault(stage, []).append(reply)
        if self.uploaded is not None:
            self.uploaded[nid] = self.uploaded.get(nid, 0) + _payload_bytes(reply)
        return reply


class _ReplayGrid(LocalGrid):
    """Answers with replies recorded by a live run (the clients' work is not re-done)."""

    def __init__(self, replies: dict[str, list[Message]]) -> None:
        super().__init__({})
        self.replies = replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        stage = _stage_of(messages[0])
        replies = self.replies[stage]
        asked = {m.metadata.dst_node_id for m in messages}
        if not {r.metadata.src_node_id for r in replies} <= asked:
            raise RuntimeError(f"replay of stage {stage} does not match the requests")
        return list(replies)


class _PassThrough(FedAvg):
    """``aggregate_fit`` receives the secure aggregate in every FitRes; pass it on once."""

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        return results[0][1].parameters, {}


class _FixedUpdateClient(NumPyClient):
    def __init__(self, update: list[np.ndarray], num_examples: int) -> None:
        self.update, self.num_examples = update, num_examples

    def fit(self, parameters: Any, config: Any) -> Any:
        return self.update, self.num_examples, {}


def _client_fn(update: list[np.ndarray], num_examples: int) -> Any:
    def client_fn(context: Context) -> Any:
        return _FixedUpdateClient(update, num_examples).to_client()

    return client_fn


@dataclass
class FlowerRound:
    """Inputs of one Flower SecAgg+ round (built by :func:`flower_prepare_round`, not timed)."""

    updates: list[list[np.ndarray]]
    weights: list[int]
    node_ids: list[int]
    dropped: list[int]  # indices into updates; they drop after ShareKeys
    num_shares: int
    threshold: int
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float

    @property
    def survivors(self) -> list[int]:
        gone = set(self.dropped)
        return [i for i in range(len(self.updates)) if i not in gone]


@dataclass
class FlowerRoundResult:
    aggregate: list[np.ndarray]  # Flower's output: weighted average over survivors, float64
    survivors: list[int]
    dropped: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


def flower_prepare_round(
    n: int = 50,
    d: int = 1_000_000,
    dropout: float = 0.1,
    *,
    num_shares: int = 11,
    threshold: int = 6,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    quantization_range: int = DEFAULT_QUANTIZATION_RANGE,
    modulus_range: int = DEFAULT_MODULUS_RANGE,
    max_weight: float = DEFAULT_MAX_WEIGHT,
    updates: Sequence[Update] | None = None,
    weights: Sequence[int] | None = None,
    dropped: Sequence[int] | None = None,
    seed: int = 0,
) -> FlowerRound:
    """Updates (uniform in [-1, 1), float32, unless given), weights (default ``max_weight``
    each, i.e. unweighted), node ids and the clients that drop after ShareKeys (``dropped``
    indices, or ``round(dropout * n)`` drawn), all from ``seed``."""
    rng = np.random.default_rng(seed)
    if updates is None:
        ups = [[rng.uniform(-1.0, 1.0, d).astype(np.float32)] for _ in range(n)]
    else:
        ups = [_as_list(u) for u in updates]
    n = len(ups)
    ws = [int(max_weight)] * n if weights is None else [int(w) for w in weights]
    if dropped is None:
        dropped = sorted(int(i) for i in rng.choice(n, round(dropout * n), replace=False))
    else:
        dropped = sorted(int(i) for i in dropped)
        if any(not 0 <= i < n for i in dropped):
            raise ValueError(f"dropped indices must be in [0, {n})")
    return FlowerRound(
        updates=ups,
        weights=ws,
        node_ids=_distinct_node_ids(rng, n),
        dropped=dropped,
        num_shares=num_shares,
        threshold=threshold,
        clipping_range=float(clipping_range),
        quantization_range=int(quantization_range),
        modulus_range=int(modulus_range),
        max_weight=float(max_weight),
    )


def _build(
    rnd: FlowerRound,
    record: dict[str, list[Message]] | None = None,
    uploaded: dict[int, int] | None = None,
) -> tuple[SecAggPlusWorkflow, LegacyContext, _LiveGrid]:
    """Fresh ClientApps/Contexts, server LegacyContext and workflow for one run of ``rnd``."""
    apps = {}
    for nid, update, w in zip(rnd.node_ids, rnd.updates, rnd.weights, strict=True):
        app = ClientApp(client_fn=_client_fn(update, w), mods=[secaggplus_mod])
        ctx = Context(
            run_id=_RUN_ID, node_id=nid, node_config={}, state=RecordDict(), run_config={}
        )
        apps[nid] = (app, ctx)
    silent = {Stage.COLLECT_MASKED_VECTORS: {rnd.node_ids[i] for i in rnd.dropped}}
    grid = _LiveGrid(apps, silent, record, uploaded)
    n = len(rnd.node_ids)
    manager = SimpleClientManager()
    for nid in rnd.node_ids:
        manager.register(GridClientProxy(nid, grid, _RUN_ID))
    context = LegacyContext(
        Context(run_id=_RUN_ID, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=_PassThrough(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n),
        client_manager=manager,
    )
    # What DefaultWorkflow sets before calling its fit workflow.
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(
        [np.zeros(a.shape, np.float32) for a in rnd.updates[0]]
    )
    workflow = SecAggPlusWorkflow(
        num_shares=rnd.num_shares,
        reconstruction_threshold=rnd.threshold,
        max_weight=rnd.max_weight,
        clipping_range=rnd.clipping_range,
        quantization_range=rnd.quantization_range,
        modulus_range=rnd.modulus_range,
    )
    return workflow, context, grid


def _result(context: LegacyContext) -> list[np.ndarray]:
    return list(context.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays())


def flower_run_round(rnd: FlowerRound) -> FlowerRoundResult:
    """Timed part of a full round: ``SecAggPlusWorkflow(grid, context)`` with every client a
    ``ClientApp(mods=[secaggplus_mod])``: key generation, share keys (Shamir + Fernet), masked
    input, unmasking, all Flower's code. Dropped clients never answer "collect masked vectors".

    ``extra["uploaded"]``: node index -> payload bytes its replies carried (see ``_LiveGrid``).
    """
    uploaded: dict[int, int] = {}
    workflow, context, grid = _build(rnd, uploaded=uploaded)
    initial = context.state.array_records[MAIN_PARAMS_RECORD]
    with task_identity(_RUN_ID):
        workflow(grid, context)
    if context.state.array_records[MAIN_PARAMS_RECORD] is initial:  # unmask_stage never ran
        raise RuntimeError("Flower's SecAgg+ workflow halted")
    index = {nid: i for i, nid in enumerate(rnd.node_ids)}
    by_index = {index[nid]: b for nid, b in uploaded.items()}
    return FlowerRoundResult(
        _result(context), rnd.survivors, rnd.dropped, extra={"uploaded": by_index}
    )


def flower_full_round(
    n: int = 50, d: int = 1_000_000, dropout: float = 0.1, **kwargs: Any
) -> FlowerRoundResult:
    """One full SecAgg+ round, in process, through Flower's real workflow and Mod.

    ``kwargs`` go to :func:`flower_prepare_round` (num_shares=11 and threshold=6 by default:
    SecAgg+ with k = 10 neighbours). Returns the aggregate (a weighted average, see module doc).
    """
    return flower_run_round(flower_prepare_round(n, d, dropout, **kwargs))


# --------------------------------------------------------------------------------------------
# Server: sum of the masked vectors and unmasking
# --------------------------------------------------------------------------------------------


@dataclass
class FlowerServerInputs:
    """What Flower's server holds before/while unmasking, recorded from one live round."""

    round: FlowerRound
    workflow: SecAggPlusWorkflow
    context: LegacyContext
    after_share_keys: WorkflowState
    after_collect: WorkflowState
    replies: dict[str, list[Message]]  # client replies: masked vectors (bytes), shares
    live_aggregate: list[np.ndarray]


def _fresh_state(s: WorkflowState) -> WorkflowState:
    """Copy of the parts of a WorkflowState that the later stages mutate."""
    new = copy.copy(s)
    new.sampled_node_ids = set(s.sampled_node_ids)
    new.active_node_ids = set(s.active_node_ids)
    new.nid_to_neighbours = {k: set(v) for k, v in s.nid_to_neighbours.items()}
    new.legacy_results = list(s.legacy_results)
    new.failures = list(s.failures)
    return new


def flower_server_setup(
    n: int = 50,
    d: int = 1_000_000,
    *,
    num_shares: int = 11,
    threshold: int = 6,
    num_dropped: int = 5,
    seed: int = 0,
    **kwargs: Any,
) -> FlowerServerInputs:
    """Setup (not timed): one live round through Flower's workflow, stage by stage, recording
    the clients' replies (their masked vectors as Flower's int64 .npy bytes, then their shares
    for unmasking) and the server's WorkflowState after ShareKeys and after the collection."""
    rnd = flower_prepare_round(
        n, d, num_dropped / n, num_shares=num_shares, threshold=threshold, seed=seed, **kwargs
    )
    replies: dict[str, list[Message]] = {}
    workflow, context, grid = _build(rnd, record=replies)
    state = WorkflowState()
    with task_identity(_RUN_ID):
        if not (
            workflow.setup_stage(grid, context, state)
            and workflow.share_keys_stage(grid, context, state)
        ):
            raise RuntimeError("Flower's SecAgg+ workflow halted")
        after_share_keys = _fresh_state(state)
        if not workflow.collect_masked_vectors_stage(grid, context, state):
            raise RuntimeError("Flower's SecAgg+ workflow halted")
        after_collect = _fresh_state(state)
        if not workflow.unmask_stage(grid, context, state):
            raise RuntimeError("Flower's SecAgg+ workflow halted")
    return FlowerServerInputs(
        rnd, workflow, context, after_share_keys, after_collect, replies, _result(context)
    )


def flower_server_unmask(
    inputs: FlowerServerInputs, *, include_sum: bool = True
) -> list[np.ndarray]:
    """Timed part: Flower's server from the masked vectors to the aggregate.

    With ``include_sum`` (default): ``collect_masked_vectors_stage`` (decode and sum the
    survivors' int64 vectors, mod M) then ``unmask_stage`` (Shamir combine of the dropped
    clients' ``sk1`` and the survivors' ``rd_seed``, regenerate and remove masks, dequantize);
    without it, ``unmask_stage`` only. The clients' replies are replayed, not recomputed.
    Returns the aggregate (weighted average, float64), read back from the server Context.

    Cost: int64 decode/add of the survivors' vectors, one ``pseudo_rand_gen`` (MT19937) per
    survivor and per (dropped, neighbour) pair, and ``combine_shares``, which runs
    pycryptodome's Shamir in Python per 16-byte chunk (GIL-bound despite its thread pool): with
    t = 25 it is ~0.2 s per secret and dominates.
    """
    grid = _ReplayGrid(inputs.replies)
    wf, ctx = inputs.workflow, inputs.context
    with task_identity(_RUN_ID):
        if include_sum:
            state = _fresh_state(inputs.after_share_keys)
            ok = wf.collect_masked_vectors_stage(grid, ctx, state)
        else:
            state, ok = _fresh_state(inputs.after_collect), True
        if not (ok and wf.unmask_stage(grid, ctx, state)):
            raise RuntimeError("Flower's SecAgg+ workflow halted")
    return _result(ctx)


# --------------------------------------------------------------------------------------------
# Expected values
# --------------------------------------------------------------------------------------------


def flower_weight_ratio(num_examples: int, max_weight: float, quantization_range: int) -> float:
    """``dq_ratio`` of secaggplus_mod._collect_masked_vectors: the weight Flower applies."""
    return round(num_examples / max_weight * quantization_range) / quantization_range


def flower_expected_average(
    updates: Sequence[Update],
    weights: Sequence[int],
    survivors: Sequence[int],
    *,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    quantization_range: int = DEFAULT_QUANTIZATION_RANGE,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> tuple[list[np.ndarray], float]:
    """Plain weighted average Flower approximates, and a bound on Flower's error.

    Expected: ``sum_i clip(dq_i x_i) / sum_i dq_i`` over survivors, in float64, with
    ``dq_i = round(w_i / max_weight * Q) / Q`` (Flower's realized weights; for ``w_i`` not a
    multiple of ``max_weight / Q`` they differ from ``w_i / max_weight`` by < ``0.5 / Q``).
    Bound: each client's rounding error is < 1 step ``2c/Q`` plus the float rounding of its
    quantizer input (in float32: ``dq x``, ``+ c``, ``* Q/2c``, each a half-ulp of a value of at
    most Q steps: < 3 Q 2^-24 steps in all; 2^-53 for float64), so
    ``|Flower - expected| <= n_active * (1 + 3 Q 2^-24) * (2c/Q) / sum dq_i`` for float32.
    """
    c, q = float(clipping_range), int(quantization_range)
    dq = [flower_weight_ratio(int(weights[i]), max_weight, q) for i in survivors]
    total = sum(dq)
    arrays = [_as_list(updates[i]) for i in survivors]
    expected: list[np.ndarray] = []
    for j in range(len(arrays[0])):
        acc = np.zeros(arrays[0][j].shape, np.float64)
        for r, a in zip(dq, arrays, strict=True):
            acc += np.clip(r * a[j].astype(np.float64), -c, c)
        expected.append(acc / total)
    float_slack = max(3 * q * 2.0 ** (-24 if a.dtype == np.float32 else -53) for a in arrays[0])
    bound = len(survivors) * (1.0 + float_slack) * (2 * c / q) / total
    return expected, bound
