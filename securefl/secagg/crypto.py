"""Key agreement, key derivation, share encryption and signatures for SecAgg.

Everything here uses the ``cryptography`` package: X25519 (RFC 7748), HKDF-SHA256
(RFC 5869), AES-256-GCM and Ed25519 (RFC 8032). Each derived key is bound to the
session id, its purpose and the ordered pair of client ids, so no key serves two
purposes or two sessions (Bonawitz et al., CCS 2017, section 4).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from securefl.errors import DecryptionError
from securefl.primitives import kdf

__all__ = [
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "aead_decrypt",
    "aead_encrypt",
    "clamp_x25519",
    "derive",
    "graph_seed",
    "public_bytes",
    "self_mask_commitment",
    "session_id",
    "shared_secret",
    "sign",
    "verify",
    "x25519_from_private",
]

KEY_BYTES = 32
COMMITMENT_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 12

# Purposes (HKDF info labels). Distinct labels make keys of different roles unrelated.
PAIRWISE_MASK = b"securefl/secagg/pairwise-mask/v1"
SELF_MASK = b"securefl/secagg/self-mask/v1"
SHARE_ENCRYPTION = b"securefl/secagg/share-encryption/v1"
COMMITMENT = b"securefl/secagg/self-mask-commitment/v2"
GRAPH_SEED = b"securefl/secagg/graph-seed/v2"


def x25519_from_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def clamp_x25519(raw: bytes) -> bytes:
    """The canonical (RFC 7748 clamped) form of a 32-byte X25519 private key.

    X25519 ignores bits 0-2 and 255 and sets bit 254, so 2^5 byte strings give one
    key; a client shares the clamped form, so that a reconstructed key is checked
    byte for byte and a holder cannot shift its share into another string that
    passes the public-key check.
    """
    key = bytearray(raw)
    key[0] &= 248
    key[31] &= 127
    key[31] |= 64
    return bytes(key)


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def shared_secret(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 agreement. Raises ValueError for a low-order (all-zero result) peer key."""
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def derive(
    secret: bytes, *, session: bytes, purpose: bytes, ids: Iterable[int], length: int
) -> bytes:
    """HKDF-SHA256 of ``secret`` with salt = session id, info = purpose || ids (u32 each):
    :func:`securefl.primitives.kdf.derive`."""
    return kdf.derive(secret, session=session, purpose=purpose, ids=ids, length=length)


def self_mask_key(seed: bytes, *, session: bytes, client: int) -> bytes:
    """The AES key of client u's self mask PRG(b_u): HKDF of b_u bound to the session and
    u. The client adds it; the server subtracts it once b_u is rebuilt."""
    return derive(seed, session=session, purpose=SELF_MASK, ids=(client,), length=16)


def pairwise_mask_key(secret: bytes, *, session: bytes, pair: tuple[int, int]) -> bytes:
    """s_uv: the AES key of the mask u and v share, from their X25519 agreement, bound
    to the session and the unordered pair (both sides derive the same key). The server
    derives it for a dropped u from u's rebuilt key."""
    u, v = pair
    return derive(
        secret, session=session, purpose=PAIRWISE_MASK, ids=(min(u, v), max(u, v)), length=16
    )


def session_id(
    nonce: bytes, config_digest: bytes, entries: Iterable[tuple[int, bytes, bytes, bytes]]
) -> bytes:
    """Hash of the session nonce, the configuration and every advertised entry
    (client id, both public keys, the self-mask commitment).

    Each field is length-prefixed so that no two different directories hash alike.
    """
    h = hashlib.sha256(b"securefl/secagg/session/v2")
    for part in (nonce, config_digest):
        h.update(struct.pack("<I", len(part)) + part)
    for client_id, *fields in entries:
        h.update(struct.pack("<I", client_id))
        for field in fields:
            h.update(struct.pack("<I", len(field)) + field)
    return h.digest()


def graph_seed(session: bytes) -> bytes:
    """The SecAgg+ graph seed: a hash of the session id, not a server's choice.

    The session id hashes every advertised key, drawn by honest clients only after
    the server fixed its nonce, so the server cannot pick the graph after it knows
    which clients it controls -- except by grinding over whom it admits and the keys
    of the clients it controls (docs/PROTOCOL.md, "Graph seed").
    """
    return hashlib.sha256(GRAPH_SEED + session).digest()[:16]


def self_mask_commitment(nonce: bytes, config_digest: bytes, client_id: int, seed: bytes) -> bytes:
    """SHA-256 commitment to the self-mask seed b_u, bound to session and client.

    Binding: the server checks the b_u it reconstructs against it. Hiding: b_u is 32
    uniformly random bytes, so the hash reveals nothing about it.
    """
    return hashlib.sha256(
        COMMITMENT + nonce + config_digest + struct.pack("<I", client_id) + seed
    ).digest()


def _share_ad(session: bytes, sender: int, recipient: int) -> bytes:
    # Binds sender, recipient, session and round: a ciphertext cannot be replayed to
    # another client, another session or another round.
    return b"securefl/secagg/shares/v1" + session + struct.pack("<BII", 1, sender, recipient)


def aead_encrypt(
    key: bytes, nonce: bytes, plaintext: bytes, *, session: bytes, sender: int, recipient: int
) -> bytes:
    """AES-256-GCM; returns nonce || ciphertext || tag."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _share_ad(session, sender, recipient))


def aead_decrypt(key: bytes, blob: bytes, *, session: bytes, sender: int, recipient: int) -> bytes:
    """Inverse of :func:`aead_encrypt`.

    Raises
    ------
    DecryptionError
        If the ciphertext was forged, altered, replayed from elsewhere or is malformed
        (deliberately without detail).
    """
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionError("share decryption failed")
    try:
        return AESGCM(key).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _share_ad(session, sender, recipient)
        )
    except InvalidTag:
        raise DecryptionError("share decryption failed") from None


def sign(key: Ed25519PrivateKey, label: bytes, payload: bytes) -> bytes:
    return key.sign(label + payload)


def verify(public: bytes, signature: bytes, label: bytes, payload: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature by ``public``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, label + payload)
    except (InvalidSignature, ValueError):
        return False
    return True
