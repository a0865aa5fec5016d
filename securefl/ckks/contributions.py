"""Contribution tags: a client checks how many encrypted updates an aggregate sums.

Every client of a CKKS session holds the secret key, so an "aggregate" that is one
client's ciphertext would show that client's update to whoever decrypts it. A server
cannot be kept from sending one, but it can be caught. Each :func:`encrypt_update
<securefl.ckks.client.encrypt_update>` message is one *contribution*:

- a fresh 16-byte random nonce ``r``, in the clear in the message (the SFCK contribution
  list, :mod:`securefl.ckks.wire`);
- its tag ``t = HMAC-SHA256(K, r)[:8]`` read as four 16-bit integers ``t_0..t_3``,
  encrypted in the imaginary parts of slots 0..3 of the message's last ciphertext (the
  data are real, so these parts are free; TenSEAL's own decryption ignores them). ``K`` is
  derived from the CKKS secret key (HKDF-SHA256), so every client has it and the server
  does not.

Adding ciphertexts adds the tags. The server lists the nonces of everything it summed;
a decrypting client refuses an aggregate that lists fewer than ``min_contributors``
distinct nonces (:class:`TooFewContributors`, before decrypting anything), or whose
decrypted tag slots differ from the sum of the listed nonces' tags
(:class:`UnverifiedAggregate`).

What this proves: a server that forms the aggregate by adding, subtracting or repeating
whole ciphertexts passes only if it added each listed contribution exactly once; any
other integer combination matches four unknown 16-bit sums with probability 2^-64. A
listed nonce also cannot be invented: its tag needs ``K``.

What it does not prove (docs/CKKS.md, "Threat model"): that the contributions come from
distinct clients or from this round (a server may replay one client's contributions of
earlier rounds: each has its own nonce); anything against a server colluding with a
client (who holds ``K`` and the secret key); and anything against a server that
multiplies ciphertexts by plaintext polynomials -- it cannot isolate one contribution
that way (an integer polynomial cannot zero most slots while keeping the tag slots), but
it can scramble the aggregate. The count a transport's server reports beside the
aggregate (a contributor list) is its word; this one is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import weakref

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefl.ckks._backend import sealapi
from securefl.ckks.keys import ClientContext
from securefl.ckks.wire import NONCE_BYTES
from securefl.errors import ConfigError, InvalidMessage

__all__ = [
    "MIN_CONTRIBUTORS",
    "TAG_SLOTS",
    "TooFewContributors",
    "UnverifiedAggregate",
    "check_minimum",
    "contribution_key",
    "expected_tags",
    "new_nonce",
    "tag",
    "tag_plaintext",
]

MIN_CONTRIBUTORS = 2
"""The default, and the smallest allowed, ``min_contributors``: one contribution is that
client's own update."""
TAG_SLOTS = 4
"""Slots 0..3 of the last ciphertext carry the tag in their imaginary parts."""
TAG_BITS = 16
"""Bits per tag slot: four slots, a 64-bit tag; sums of 2^16 contributions stay below 2^32."""
TAG_TOLERANCE = 0.25
"""How far a decrypted tag slot may be from its integer: the flooded slot's standard
deviation is at most 1/32 (:mod:`securefl.ckks.flooding`), so 0.25 is 8 of them."""
_KEY_INFO = b"securefl ckks contribution tags v1"
_keys: weakref.WeakKeyDictionary[ClientContext, bytes] = weakref.WeakKeyDictionary()


class TooFewContributors(InvalidMessage):
    """An aggregate lists fewer contributions than this client requires.

    ``count`` is the number of contributions the aggregate names, ``minimum`` the
    client's ``min_contributors``. Raised before anything is decrypted.
    """

    def __init__(self, count: int, minimum: int) -> None:
        super().__init__(
            f"the server's aggregate sums {count} contribution(s), fewer than this "
            f"client's min_contributors = {minimum}; refused without decrypting"
        )
        self.count = count
        self.minimum = minimum


class UnverifiedAggregate(InvalidMessage):
    """An aggregate's decrypted contribution tags differ from those of the contributions
    it lists: the server added, left out or repeated ciphertexts. ``count`` is the number
    it lists."""

    def __init__(self, count: int) -> None:
        super().__init__(
            f"the server's aggregate does not sum the {count} contribution(s) it lists: "
            "its contribution tags differ (ciphertexts added, left out or repeated)"
        )
        self.count = count


def check_minimum(min_contributors: int) -> int:
    """Validate a client's ``min_contributors``.

    Raises
    ------
    TypeError
        If it is not an int (bool included).
    ConfigError
        If it is below 2.
    """
    if isinstance(min_contributors, bool):
        raise TypeError("min_contributors must be an int, not a bool")
    value = operator.index(min_contributors)
    # One contribution is one client's update in the clear to whoever decrypts it.
    if value < MIN_CONTRIBUTORS:
        raise ConfigError(f"min_contributors must be >= {MIN_CONTRIBUTORS}, got {value}")
    return value


def new_nonce() -> bytes:
    """A fresh contribution nonce: 16 bytes from ``os.urandom``."""
    return os.urandom(NONCE_BYTES)


def contribution_key(context: ClientContext) -> bytes:
    """K, the tag key: HKDF-SHA256 of the secret key's coefficients (computed once per
    context).

    Security
    --------
    Anyone with K can forge contributions: it is as secret as the CKKS key it comes
    from. Never log or send it.
    """
    key = _keys.get(context)
    if key is None:
        words = context._secret_key_words()
        info = _KEY_INFO + np.asarray(context.spec.parms_id, dtype="<u8").tobytes()
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            words.astype("<u8").tobytes()
        )
        _keys[context] = key
    return key


def tag(key: bytes, nonce: bytes) -> npt.NDArray[np.int64]:
    """The tag of one contribution: ``HMAC-SHA256(key, nonce)[:8]`` as four 16-bit ints."""
    digest = hmac.new(key, nonce, hashlib.sha256).digest()
    return np.frombuffer(digest[: 2 * TAG_SLOTS], dtype="<u2").astype(np.int64)


def expected_tags(key: bytes, nonces: tuple[bytes, ...]) -> npt.NDArray[np.int64]:
    """The tag slots of an honest sum of the contributions ``nonces``."""
    total = np.zeros(TAG_SLOTS, dtype=np.int64)
    for nonce in nonces:
        total += tag(key, nonce)
    return total


def tag_plaintext(context: ClientContext, tags: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """The plaintext that puts ``i * tags[j]`` into slot j (j < 4) and 0 everywhere else,
    in SEAL's NTT form at the data level: shape ``(L, N)``, limb l below q_l.

    A client adds it to polynomial 0 of its last ciphertext: the ciphertext then encrypts
    its values plus the tag (CKKS encryption is additive in the plaintext).
    """
    tools = context._seal_tools()
    spec = context.spec
    slots = [0j] * spec.slots
    for j, value in enumerate(tags.tolist()):
        slots[j] = complex(0.0, float(value))
    plain = sealapi().Plaintext()
    tools.encoder.encode(slots, list(spec.parms_id), spec.scale, plain)
    count = len(spec.moduli) * spec.poly_modulus_degree
    if int(plain.coeff_count()) != count:
        raise ConfigError("SEAL encoded the tag at an unexpected level")
    words = np.fromiter(map(plain.__getitem__, range(count)), dtype=np.uint64, count=count)
    return words.reshape(len(spec.moduli), spec.poly_modulus_degree)
