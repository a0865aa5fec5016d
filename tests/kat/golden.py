"""Golden vectors: one seeded SecAgg session per mode, every byte recorded.

``record(mode)`` drives ``SecAggClient`` and ``SecAggServer`` directly (no transport),
each party with its own seeded DRBG, every message through the codec, and returns
a JSON-ready dict: the configuration's wire form and digest, every message of every
round (hex, in delivery order), the session id, the graph seed, each client's secret
inputs (drawn from its DRBG: mask and encryption private keys, self-mask seed), the
derived keys, each share plaintext with its AEAD associated data, a ``Layout``'s
bytes, and the final ring sum. The keys, associated data and commitments are
recomputed here from the specification (docs/PROTOCOL.md), not read out of the
state machines, so the vectors pin the protocol, not its implementation.

``python tests/kat/make_golden.py`` rewrites ``tests/kat/golden/*.json``; do that
only with a protocol version bump (docs/PROTOCOL.md says why).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from securefl import vectors
from securefl.encoding import FixedPointEncoder
from securefl.secagg import codec
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import KeyDirectory, ShareKeys, Stage
from securefl.secagg.server import SecAggServer
from securefl.testing import reference
from securefl.testing.drbg import Drbg

MODES = ("semi-honest", "authenticated", "secagg-plus", "ring-input")
DROPPED = {"semi-honest": 3, "secagg-plus": 5}
"""A client that vanishes after ShareKeys, so its mask key is rebuilt."""


def config_for(mode: str) -> SecAggConfig:
    if mode == "semi-honest":
        return SecAggConfig(num_clients=4, threshold=2, dimension=6, max_weight=10)
    if mode == "authenticated":
        return SecAggConfig(
            num_clients=4, threshold=3, dimension=6, max_weight=10, authenticated=True
        )
    if mode == "secagg-plus":
        return SecAggConfig(
            num_clients=8,
            threshold=3,
            dimension=6,
            bits=24,
            max_weight=10,
            graph=GraphKind.HARARY,
            degree=4,
        )
    if mode == "ring-input":
        return SecAggConfig(
            num_clients=4, threshold=2, dimension=6, bits=20, ring_input=True, min_survivors=3
        )
    raise ValueError(f"unknown mode {mode!r}")


def _update(config: SecAggConfig, i: int) -> np.ndarray:
    d = config.dimension
    if config.ring_input:
        return ((np.arange(d, dtype=np.uint64) * 7919 + i * 104729) % 2**config.bits).astype(
            np.uint32
        )
    return np.linspace(-0.9 + 0.1 * i, 0.8 - 0.05 * i, d).astype(np.float32)


def _identity(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"golden/identity%d" % i).digest())


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hkdf(secret: bytes, session: bytes, purpose: bytes, ids: tuple[int, ...], n: int) -> bytes:
    info = purpose + b"".join(struct.pack("<I", i) for i in ids)
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=session, info=info).derive(secret)


def _secrets_of(mode: str, i: int) -> dict[str, bytes]:
    """A client's secret inputs: the first three draws of its DRBG."""
    rng = Drbg(f"golden/{mode}/client/{i}")
    mask = bytearray(rng(32))  # shared in its RFC 7748 clamped form
    mask[0] &= 248
    mask[31] = (mask[31] & 127) | 64
    return {"mask_sk": bytes(mask), "encryption_sk": rng(32), "self_mask_seed": rng(32)}


def _layout_bytes() -> str:
    update = {
        "weight": np.zeros((2, 3), dtype=np.float32),
        "bias": np.zeros(2, dtype=np.float64),
    }
    return vectors.flatten(update)[1].to_bytes().hex()


def record(mode: str) -> dict[str, Any]:
    config = config_for(mode)
    n = config.num_clients
    identities = {i: _identity(i) for i in range(n)}
    public_ids = {i: _raw_public(k) for i, k in identities.items()}
    auth: dict[str, Any] = {"identity_public_keys": public_ids} if config.authenticated else {}
    clients = {
        i: SecAggClient(
            i,
            config,
            _update(config, i),
            1 + (i * 3) % config.max_weight,
            identity_key=identities[i] if config.authenticated else None,
            rng=Drbg(f"golden/{mode}/client/{i}"),
            threads=1,
            **auth,
        )
        for i in range(n)
    }
    server = SecAggServer(
        config,
        identity_public_keys=public_ids if config.authenticated else None,
        rng=Drbg(f"golden/{mode}/server"),
        threads=1,
    )
    dropped = DROPPED.get(mode)
    messages: list[dict[str, Any]] = []
    start = server.start()
    inbox = {i: codec.encode(start) for i in clients}
    directory: KeyDirectory | None = None
    share_keys: dict[int, ShareKeys] = {}
    while server.stage not in (Stage.COMPLETED, Stage.ABORTED):
        stage = server.stage
        for cid in sorted(inbox):
            wire = inbox[cid]
            messages.append({"round": stage.value, "to": cid, "hex": wire.hex()})
            message = codec.decode(wire)
            if isinstance(message, KeyDirectory):
                directory = message
            if cid == dropped and stage is Stage.MASKED_INPUT_COLLECTION:
                continue  # vanished after sharing its keys
            reply = clients[cid].handle(message)
            if reply is None:
                continue
            up = codec.encode(reply)
            messages.append({"round": stage.value, "from": cid, "hex": up.hex()})
            decoded = codec.decode(up)
            if isinstance(decoded, ShareKeys):
                share_keys[cid] = decoded
            assert server.receive(cid, decoded), server.rejections
        inbox = {cid: codec.encode(m) for cid, m in server.close_round().items()}
    assert server.stage is Stage.COMPLETED, server.abort_reason
    assert server.result is not None and directory is not None

    session = _session_id(start.nonce, config.digest(), directory)
    seed = hashlib.sha256(b"securefl/secagg/graph-seed/v2" + session).digest()[:16]
    assert directory.graph_seed == seed
    out: dict[str, Any] = {
        "mode": mode,
        "wire_version": codec.VERSION,
        "config_bytes": config.to_bytes().hex(),
        "config_digest": config.digest().hex(),
        "session_id": session.hex(),
        "graph_seed": directory.graph_seed.hex(),
        "layout_bytes": _layout_bytes(),
        "messages": messages,
    }
    assert (
        config.digest() == hashlib.sha256(b"securefl/secagg/config/v2" + config.to_bytes()).digest()
    )
    out.update(_derived(mode, config, start.nonce, directory, share_keys, session))
    if config.ring_input:
        _check_masked_inputs(config, messages, out)
    ring = _ring_sum(config, server)
    out["contributors"] = list(server.result.contributors)
    out["total_weight"] = server.result.total_weight
    out["ring_sum"] = [int(v) for v in ring]
    return out


def _ring_sum(config: SecAggConfig, server: SecAggServer) -> np.ndarray:
    result = server.result
    assert result is not None
    if config.ring_input:
        return result.ring_sum
    # The float mean is a function of the ring sum; pin the mean's exact float64 bits
    # (SecAgg returns the ring sum; the fixed-point encoder decodes it).
    return FixedPointEncoder.for_config(config).decode(result).view(np.uint64)


def _derived(
    mode: str,
    config: SecAggConfig,
    nonce: bytes,
    directory: KeyDirectory,
    share_keys: dict[int, ShareKeys],
    session: bytes,
) -> dict[str, Any]:
    """Keys, commitments, associated data and share plaintexts, from the spec."""
    entries = {e.client_id: e for e in directory.entries}
    secrets = {i: _secrets_of(mode, i) for i in entries}
    digest = config.digest()
    clients: dict[str, Any] = {}
    for i, s in secrets.items():
        mask = X25519PrivateKey.from_private_bytes(s["mask_sk"])
        enc = X25519PrivateKey.from_private_bytes(s["encryption_sk"])
        assert _raw_public(mask) == entries[i].mask_public_key
        assert _raw_public(enc) == entries[i].encryption_public_key
        commitment = hashlib.sha256(
            b"securefl/secagg/self-mask-commitment/v2"
            + nonce
            + digest
            + struct.pack("<I", i)
            + s["self_mask_seed"]
        ).digest()
        assert commitment == entries[i].self_mask_commitment
        clients[str(i)] = {
            **{k: v.hex() for k, v in s.items()},
            "self_mask_commitment": commitment.hex(),
            "self_mask_key": _hkdf(
                s["self_mask_seed"], session, b"securefl/secagg/self-mask/v1", (i,), 16
            ).hex(),
        }
    pairwise: dict[str, str] = {}
    shares: list[dict[str, Any]] = []
    for sender, message in sorted(share_keys.items()):
        enc = X25519PrivateKey.from_private_bytes(secrets[sender]["encryption_sk"])
        mask = X25519PrivateKey.from_private_bytes(secrets[sender]["mask_sk"])
        for recipient, blob in message.ciphertexts:
            peer = entries[recipient]
            agreed = enc.exchange(X25519PublicKey.from_public_bytes(peer.encryption_public_key))
            key = _hkdf(
                agreed,
                session,
                b"securefl/secagg/share-encryption/v1",
                (sender, recipient),
                32,
            )
            ad = b"securefl/secagg/shares/v1" + session + struct.pack("<BII", 1, sender, recipient)
            plaintext = AESGCM(key).decrypt(blob[:12], blob[12:], ad)
            shares.append(
                {
                    "from": sender,
                    "to": recipient,
                    "key": key.hex(),
                    "associated_data": ad.hex(),
                    "plaintext": plaintext.hex(),
                }
            )
            lo, hi = min(sender, recipient), max(sender, recipient)
            secret = mask.exchange(X25519PublicKey.from_public_bytes(peer.mask_public_key))
            pairwise[f"{lo}-{hi}"] = _hkdf(
                secret, session, b"securefl/secagg/pairwise-mask/v1", (lo, hi), 16
            ).hex()
    return {
        "clients": clients,
        "pairwise_mask_keys": pairwise,
        "shares": shares,
        "nonce": nonce.hex(),
    }


def _session_id(nonce: bytes, digest: bytes, directory: KeyDirectory) -> bytes:
    """The session id by its definition in docs/PROTOCOL.md."""
    h = hashlib.sha256(b"securefl/secagg/session/v2")
    for part in (nonce, digest):
        h.update(struct.pack("<I", len(part)) + part)
    for e in directory.entries:
        h.update(struct.pack("<I", e.client_id))
        for field in (e.mask_public_key, e.encryption_public_key, e.self_mask_commitment):
            h.update(struct.pack("<I", len(field)) + field)
    return h.digest()


def _check_masked_inputs(
    config: SecAggConfig, messages: list[dict[str, Any]], out: dict[str, Any]
) -> None:
    """Ring input has no rounding: each y_u must be x_u || n_u plus PRG(self-mask key)
    plus and minus PRG(s_uv), rebuilt here from the recorded keys with `cryptography`'s
    AES-CTR (docs/PROTOCOL.md, "The masked vector"), so the derived keys are pinned to
    the bytes the clients sent."""
    d, ring = config.dimension, 2**config.bits
    for m in messages:
        if m["round"] != "MaskedInputCollection" or "from" not in m:
            continue
        u = m["from"]
        sent = codec.decode(bytes.fromhex(m["hex"]))
        want = np.append(_update(config, u).astype(np.uint64), 1 + (u * 3) % config.max_weight)
        keys = [(bytes.fromhex(out["clients"][str(u)]["self_mask_key"]), 1)]
        for pair, key in out["pairwise_mask_keys"].items():
            lo, hi = (int(x) for x in pair.split("-"))
            if u in (lo, hi):
                keys.append((bytes.fromhex(key), 1 if u == lo else -1))
        for key, sign in keys:
            stream = reference.mask(key, d + 1, np.dtype(np.uint32)).astype(np.uint64)
            stream %= ring
            want = (want + (stream if sign > 0 else (ring - stream) % ring)) % ring
        assert np.array_equal(sent.vector.astype(np.uint64), want), f"y_{u} differs"
