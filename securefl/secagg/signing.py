"""What authenticated-mode signatures cover (labels keep the two kinds apart)."""

from __future__ import annotations

import struct

ADVERTISE = b"securefl/secagg/advertise/v2"
CONSISTENCY = b"securefl/secagg/consistency/v1"


def advertise_payload(
    nonce: bytes,
    config_digest: bytes,
    client_id: int,
    mask_pk: bytes,
    enc_pk: bytes,
    commitment: bytes,
) -> tuple[bytes, bytes]:
    """(label, payload) a client signs with its identity key in AdvertiseKeys: both
    public keys and the commitment to its self-mask seed."""
    return ADVERTISE, (
        nonce + config_digest + struct.pack("<I", client_id) + mask_pk + enc_pk + commitment
    )


def consistency_payload(session: bytes, survivors: tuple[int, ...]) -> tuple[bytes, bytes]:
    """(label, payload) a client signs in ConsistencyCheck: the session and U3."""
    ids = struct.pack(f"<I{len(survivors)}I", len(survivors), *survivors)
    return CONSISTENCY, session + ids
