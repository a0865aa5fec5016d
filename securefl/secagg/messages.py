"""Protocol messages and stages of SecAgg / SecAgg+ (Bonawitz et al. 2017, Fig. 4).

Server -> client messages open a round; client -> server messages answer it. The
binary encoding of each is in :mod:`securefl.secagg.codec` and ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Abort",
    "AdvertiseKeys",
    "ClientMessage",
    "ConsistencyCheck",
    "ConsistencyRequest",
    "KeyDirectory",
    "KeyEntry",
    "MaskedInput",
    "ServerMessage",
    "SessionStart",
    "ShareKeys",
    "ShareRouting",
    "Stage",
    "UnmaskingRequest",
    "UnmaskingResponse",
]


class Stage(enum.Enum):
    """Where a party is in the protocol; the round names follow the paper."""

    ADVERTISE_KEYS = "AdvertiseKeys"
    SHARE_KEYS = "ShareKeys"
    MASKED_INPUT_COLLECTION = "MaskedInputCollection"
    CONSISTENCY_CHECK = "ConsistencyCheck"
    UNMASKING = "Unmasking"
    COMPLETED = "Completed"
    ABORTED = "Aborted"


ROUNDS = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT_COLLECTION,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASKING,
)
"""The protocol rounds, in order: a session whose stage is one of them is still running."""


# ---- server -> client ---------------------------------------------------------------


@dataclass(frozen=True)
class SessionStart:
    """Opens AdvertiseKeys: the session nonce and the digest of the configuration."""

    nonce: bytes
    config_digest: bytes


@dataclass(frozen=True)
class KeyEntry:
    """One client's advertised public keys, the commitment to its self-mask seed (and
    its signature in authenticated mode)."""

    client_id: int
    mask_public_key: bytes
    encryption_public_key: bytes
    self_mask_commitment: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class KeyDirectory:
    """Opens ShareKeys: every client that advertised keys (U1), sorted by id, and the
    seed of the neighbourhood graph. The seed is not the server's choice: it is
    derived from the session id (:func:`securefl.secagg.crypto.graph_seed`), and every
    client checks it."""

    graph_seed: bytes
    entries: tuple[KeyEntry, ...]


@dataclass(frozen=True)
class ShareRouting:
    """Opens MaskedInputCollection: the encrypted shares addressed to this client,
    as (sender id, ciphertext), sorted by sender."""

    ciphertexts: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class ConsistencyRequest:
    """Opens ConsistencyCheck (authenticated mode): the survivors of masked input
    collection (U3), sorted."""

    survivors: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskingRequest:
    """Opens Unmasking: which of this client's neighbours survived (reveal their
    self-mask share) and which dropped (reveal their key share). In authenticated
    mode it also carries U3 and the consistency signatures on it."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    all_survivors: tuple[int, ...] = ()
    signatures: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class Abort:
    """The server ended the session without a result."""

    reason: str


ServerMessage = (
    SessionStart | KeyDirectory | ShareRouting | ConsistencyRequest | UnmaskingRequest | Abort
)

# ---- client -> server -----------------------------------------------------------------


@dataclass(frozen=True)
class AdvertiseKeys:
    """Two X25519 public keys and a commitment to the self-mask seed b_u, so that the
    server can verify the b_u it reconstructs (a lying share holder is caught)."""

    sender: int
    mask_public_key: bytes
    encryption_public_key: bytes
    self_mask_commitment: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class ShareKeys:
    """Encrypted Shamir shares for each neighbour, as (recipient id, ciphertext)."""

    sender: int
    ciphertexts: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """y_u: the masked, quantized, weighted update with the weight as last element."""

    sender: int
    bits: int
    vector: npt.NDArray[np.uint32] | npt.NDArray[np.uint64]


@dataclass(frozen=True)
class ConsistencyCheck:
    sender: int
    signature: bytes


@dataclass(frozen=True)
class UnmaskingResponse:
    """Shares for the request: (owner id, 40-byte Shamir share) pairs.

    Security: holds secret shares; never log it.
    """

    sender: int
    self_mask_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def __repr__(self) -> str:
        return (
            f"UnmaskingResponse(sender={self.sender}, "
            f"self_mask_shares=<{len(self.self_mask_shares)}>,"
            f" key_shares=<{len(self.key_shares)}>)"
        )


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | ConsistencyCheck | UnmaskingResponse
