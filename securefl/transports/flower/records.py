"""How securefl's protocol messages travel inside Flower's records.

Every message between the securefl strategy and the securefl client mod carries one
``ConfigRecord`` under the key :data:`RECORD_KEY`. Its values are plain Flower config
values; the protocol message itself is the binary codec of ``docs/PROTOCOL.md``
(``securefl.secagg.codec``) stored as one ``bytes`` value, so Flower never sees the
protocol's structure and the same decoder (size-checked, fuzzed) guards both ends.

=============  ===========  ======================================================
key            direction    value
=============  ===========  ======================================================
``version``    both         :data:`FORMAT_VERSION` (int)
``session``    both         16 random bytes naming one aggregation session (one
                            FL round); a reply for another session is rejected
``message``    both         ``codec.encode`` of the protocol message (bytes)
``client-id``  to client    the client's protocol id, u32 (int)
``config``     to client    with ``SessionStart`` only: the :class:`SecAggConfig`
                            in its one wire form (:func:`pack_config`); the client
                            checks it against the digest in ``SessionStart`` and
                            against its own policy
``dp-plan``    to client    with ``SessionStart`` of a differential-privacy session
                            only: the 32-byte :meth:`DPPlan.digest` the server
                            decodes with; the client refuses any plan but its own
=============  ===========  ======================================================

An Unmasking request may carry a second envelope under :data:`NEXT_RECORD_KEY`: the
next FL round's ``SessionStart``, answered by ``AdvertiseKeys`` under the same key, so
that a round after the first needs three exchanges instead of four.

Decoding never trusts the peer: a missing key, a wrong type or malformed bytes
raise :class:`securefl.errors.InvalidMessage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, RecordDict

from securefl.errors import ConfigError, InvalidMessage
from securefl.secagg.config import MAX_CLIENT_ID, SecAggConfig

if TYPE_CHECKING:
    from securefl.dp import DPPlan

__all__ = [
    "DP_DIGEST_BYTES",
    "FORMAT_VERSION",
    "NEXT_RECORD_KEY",
    "RECORD_KEY",
    "SESSION_BYTES",
    "Envelope",
    "dp_mismatch",
    "pack_config",
    "read_envelope",
    "read_weight",
    "unpack_config",
    "write_envelope",
]

RECORD_KEY = "securefl"
"""Key of securefl's ConfigRecord in a message's RecordDict."""

NEXT_RECORD_KEY = "securefl-next"
"""Key of a second envelope: the next FL round's ``SessionStart`` (and the client's
``AdvertiseKeys``) riding on this round's Unmasking exchange."""

FORMAT_VERSION = 3
"""3: ring-input (differential privacy) sessions and the ``dp-plan`` field."""
SESSION_BYTES = 16
DP_DIGEST_BYTES = 32


@dataclass(frozen=True)
class Envelope:
    """One protocol message with its session tag and, server to client, its routing."""

    session: bytes
    message: bytes
    client_id: int | None = None
    config: bytes | None = None
    dp_plan: bytes | None = None
    """With a DP session's ``SessionStart``: the digest of the server's DP plan."""

    def __repr__(self) -> str:
        # The payload may be a masked vector or encrypted shares: show sizes only.
        return f"Envelope(session={self.session.hex()}, message={len(self.message)} bytes)"


def pack_config(config: SecAggConfig) -> bytes:
    """The session parameters a client needs: :meth:`SecAggConfig.to_bytes`, the one
    wire form the digest also hashes, so no field (``min_survivors``, the corruption
    rate, ``ring_input``) can be dropped on the way."""
    return config.to_bytes()


def dp_mismatch(config: SecAggConfig, plan: DPPlan) -> str | None:
    """Why ``config`` cannot carry updates encoded with ``plan``; ``None`` if it can.

    It must be a ring-input session of the plan's padded dimension, ring bits and
    number of clients, and SecAgg must refuse to unmask fewer survivors than the
    plan's noise is calibrated for (n_min; more is allowed). The strategy checks the
    sessions it opens and the mod the sessions it is offered, with the same rule.
    """
    if not config.ring_input:
        return "differential privacy needs a ring_input session, the configuration has none"
    wanted = {
        "dimension": plan.padded_dimension,
        "bits": plan.config.bits,
        "num_clients": plan.config.num_clients,
    }
    for name, value in wanted.items():
        if getattr(config, name) != value:
            return f"{name}: the configuration has {getattr(config, name)}, the DP plan {value}"
    n_min = plan.config.min_survivors
    # A smaller sum carries less noise than the plan promises: it must never be unmasked.
    if config.min_survivors is None or config.min_survivors < n_min:
        return (
            f"min_survivors: the configuration has {config.min_survivors}, the DP plan "
            f"needs at least n_min={n_min}"
        )
    return None


def unpack_config(data: bytes) -> SecAggConfig:
    """Rebuild the configuration packed by :func:`pack_config`.

    Raises
    ------
    InvalidMessage
        If the bytes are not a configuration or describe an invalid one.
    """
    try:
        return SecAggConfig.from_bytes(data)
    except (ConfigError, ValueError) as exc:
        # A server proposing an unusable session is a bad message, not a local bug.
        raise InvalidMessage(f"config: {exc}") from None


def write_envelope(content: RecordDict, envelope: Envelope, key: str = RECORD_KEY) -> None:
    """Store ``envelope`` in ``content`` under ``key``."""
    record = ConfigRecord(
        {
            "version": FORMAT_VERSION,
            "session": envelope.session,
            "message": envelope.message,
        }
    )
    if envelope.client_id is not None:
        record["client-id"] = envelope.client_id
    if envelope.config is not None:
        record["config"] = envelope.config
    if envelope.dp_plan is not None:
        record["dp-plan"] = envelope.dp_plan
    content.config_records[key] = record


def _bytes(record: ConfigRecord, key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise InvalidMessage(f"record field {key!r}: expected bytes")
    return value


def read_envelope(content: RecordDict, key: str = RECORD_KEY) -> Envelope:
    """Read securefl's record (the one under ``key``) from a message's content.

    Raises
    ------
    InvalidMessage
        If the record is missing, of another format version, or a field is missing
        or has the wrong type or size.
    """
    record = content.config_records.get(key)
    if record is None:
        raise InvalidMessage(f"no {key!r} ConfigRecord in the message")
    version = record.get("version")
    # bool is an int in Python: `True` must not pass for version 1.
    if type(version) is not int or version != FORMAT_VERSION:
        raise InvalidMessage(f"unsupported record format version {version!r}")
    session = _bytes(record, "session")
    if len(session) != SESSION_BYTES:
        raise InvalidMessage(f"session tag must be {SESSION_BYTES} bytes")
    client_id = record.get("client-id")
    if client_id is not None and (
        type(client_id) is not int or not 0 <= client_id <= MAX_CLIENT_ID
    ):
        raise InvalidMessage("record field 'client-id': expected a u32 client id")
    config = record.get("config")
    if config is not None and not isinstance(config, bytes):
        raise InvalidMessage("record field 'config': expected bytes")
    dp_plan = record.get("dp-plan")
    if dp_plan is not None and (not isinstance(dp_plan, bytes) or len(dp_plan) != DP_DIGEST_BYTES):
        raise InvalidMessage(f"record field 'dp-plan': expected a {DP_DIGEST_BYTES}-byte digest")
    return Envelope(session, _bytes(record, "message"), client_id, config, dp_plan)


def read_weight(content: RecordDict, key: str, max_weight: int) -> int:
    """The integer FedAvg weight (e.g. number of examples) of a user's train reply.

    Raises
    ------
    InvalidMessage
        If no MetricRecord holds ``key`` as a number, or it is not an integer in
        [1, ``max_weight``].
    """
    for metrics in content.metric_records.values():
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        # NaN and infinity would slip through int(): reject them by name.
        if not math.isfinite(value) or value != int(value) or not 1 <= value <= max_weight:
            raise InvalidMessage(
                f"weight {key!r} = {value} must be an integer in [1, W = {max_weight}]"
            )
        return int(value)
    raise InvalidMessage(f"the train reply has no numeric {key!r} metric (the FedAvg weight)")
