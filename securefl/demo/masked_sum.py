"""A small end-to-end secure sum: what `make demo` runs until the training demo lands.

Each simulated hospital holds a model update (synthetic data). The hospitals agree a
seed with every other hospital (X25519, then HKDF-SHA256 bound to the session and the
ordered pair), quantize their update with stochastic rounding, and add cancelling
pairwise masks (Bonawitz et al., CCS 2017, section 3). The server sees only masked
vectors, adds them, and recovers the exact sum of the quantized updates, hence the
mean within the quantization bound. This is the masking core of SecAgg without its
dropout recovery (Shamir shares), which the protocol layer adds.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from securefl.primitives import FixedPoint, dequantize, masked_accumulate, quantize, sum_mod


def _session_id(public_keys: list[bytes]) -> bytes:
    # Length-prefixed so that no two key lists hash alike.
    h = hashlib.sha256(b"securefl/demo/session")
    for pk in public_keys:
        h.update(len(pk).to_bytes(4, "big") + pk)
    return h.digest()


def _derive(secret: bytes, session: bytes, purpose: bytes, context: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=16, salt=session, info=purpose + b"|" + context
    ).derive(secret)


def run(*, clients: int = 4, dim: int = 1_000_000, bits: int = 32, clip: float = 1.0) -> int:
    if clients < 2:
        raise SystemExit("the demo needs at least 2 clients")
    fp = FixedPoint.for_ring(bits=bits, clip=clip, max_summands=clients)
    print(
        f"securefl masked-sum demo: {clients} hospitals, {dim:,} parameters, ring Z_2^{bits}, "
        f"clip {clip}, precision 2^-{fp.frac_bits}"
    )
    # Synthetic "model updates": data, not randomness for masks.
    data_rng = np.random.default_rng(2026)
    updates = [data_rng.normal(0.0, 0.1, dim).astype(np.float32) for _ in range(clients)]

    t0 = time.perf_counter()
    private = [X25519PrivateKey.generate() for _ in range(clients)]
    public = [k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in private]
    session = _session_id(public)
    t_keys = time.perf_counter() - t0

    masked = []
    t0 = time.perf_counter()
    for u in range(clients):
        rounding_key = _derive(secrets.token_bytes(32), session, b"rounding", b"%d" % u)
        y = quantize(updates[u], fp, rounding_key)
        seeds, signs = [], []
        for v in range(clients):
            if v == u:
                continue
            shared = private[u].exchange(X25519PublicKey.from_public_bytes(public[v]))
            pair = b"%d,%d" % (min(u, v), max(u, v))
            seeds.append(_derive(shared, session, b"pairwise-mask", pair))
            signs.append(1 if u < v else -1)
        masked_accumulate(y, seeds, signs, bits=fp.bits)
        masked.append(y)
    t_clients = (time.perf_counter() - t0) / clients

    t0 = time.perf_counter()
    total = sum_mod(masked, bits=fp.bits)
    mean = dequantize(total, fp, clients) / clients
    t_server = time.perf_counter() - t0

    plain = np.mean(np.stack(updates).astype(np.float64), axis=0)
    clipped = np.mean(np.clip(np.stack(updates).astype(np.float64), -clip, clip), axis=0)
    err = float(np.max(np.abs(mean - clipped)))
    # One masked vector alone is uniform noise: it is unrelated to its update.
    corr = float(np.corrcoef(masked[0][:100_000].astype(np.float64), updates[0][:100_000])[0, 1])

    print(f"  key agreement (all clients)      {t_keys * 1e3:8.2f} ms")
    print(f"  client: quantize + mask          {t_clients * 1e3:8.2f} ms per client")
    print(f"  server: sum + dequantize         {t_server * 1e3:8.2f} ms")
    print(f"  correlation(masked_0, update_0)   {corr:+.4f}   (masks hide each update)")
    print(f"  max |secure - plain clipped mean| {err:.3e}   (bound: precision {fp.precision:.3e})")
    print(f"  plain mean[:3]  = {np.array2string(plain[:3], precision=6)}")
    print(f"  secure mean[:3] = {np.array2string(mean[:3], precision=6)}")
    if err > fp.precision:
        print("FAILED: the secure mean is off by more than the quantization bound")
        return 1
    print("OK: the server recovered the mean and saw only masked vectors")
    return 0
