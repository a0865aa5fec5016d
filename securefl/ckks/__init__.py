"""CKKS-encrypted FedAvg on TenSEAL, with the server's ciphertext sum in the native core.

The second protocol family of securefl (docs/CKKS.md): the clients share one CKKS secret
key, encrypt their weighted updates ``n_k * x_k`` and weights ``n_k``, and a server
without the key adds the ciphertexts; the clients decrypt the sums and divide. Each
update carries a contribution tag so that a client refuses an "aggregate" of fewer than
``min_contributors`` updates (:mod:`securefl.ckks.contributions`), and every decryption
is flooded with noise (:mod:`securefl.ckks.flooding`). Every client holds the secret key:
the server plus any one client can decrypt every update (docs/CKKS.md, "Threat model"). NVIDIA
FLARE's homomorphic-encryption aggregation (TenSEAL, sequential ``+`` on the server) is
the reference: securefl's server adds the serialized RNS coefficients directly with
:func:`securefl.primitives.rns_sum` and emits a ciphertext that TenSEAL decrypts
bit-identically to its own ``+``.

TenSEAL is an optional dependency (``pip install 'securefl[ckks]'``), imported on first
use; this package is the only part of securefl that imports it.

Typical round::

    ctx = ClientContext.generate()                      # key authority
    server = Aggregator(ServerContext.from_bytes(ctx.server_bytes()))
    message, layout = encrypt_update(ctx, model.state_dict(), weight=n_k)   # each client
    server.add("client-7", message)                     # server, one client at a time
    mean = decrypt_mean(ctx, server.result(), layout)   # each client
"""

from securefl.ckks.client import (
    DecryptedAggregate,
    decrypt_aggregate,
    decrypt_mean,
    decrypt_vector,
    encrypt_update,
    encrypt_vector,
)
from securefl.ckks.contributions import TooFewContributors, UnverifiedAggregate
from securefl.ckks.flooding import FLOOD_BITS
from securefl.ckks.keys import CKKSParams, ClientContext, ServerContext
from securefl.ckks.server import Aggregator, OutputFormat
from securefl.ckks.wire import Encoding, EncryptedVector, Spec

__all__ = [
    "FLOOD_BITS",
    "Aggregator",
    "CKKSParams",
    "ClientContext",
    "DecryptedAggregate",
    "Encoding",
    "EncryptedVector",
    "OutputFormat",
    "ServerContext",
    "Spec",
    "TooFewContributors",
    "UnverifiedAggregate",
    "decrypt_aggregate",
    "decrypt_mean",
    "decrypt_vector",
    "encrypt_update",
    "encrypt_vector",
]
