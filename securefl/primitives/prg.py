"""The pseudo-random generator: AES-128 in counter mode.

Every mask and every bit of rounding noise in securefl is a slice of the keystream
``AES_k(ctr0) || AES_k(ctr0 + 1) || ...`` with a 128-bit big-endian counter (NIST SP
800-38A, section 6.5). The native core computes it with AES-NI or VAES when the CPU
has them and with a constant-time bitsliced implementation otherwise; all give the
same bytes as the ``cryptography`` package's ``modes.CTR``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefl.primitives._native import Backend, check_backend, core, key_bytes

__all__ = ["available_backends", "default_backend", "keystream"]

_ZERO_COUNTER = bytes(16)


def keystream(
    key: bytes,
    nbytes: int,
    *,
    counter_block: bytes = _ZERO_COUNTER,
    backend: Backend = "auto",
) -> npt.NDArray[np.uint8]:
    """Return ``nbytes`` of the AES-128-CTR keystream of ``key``.

    Parameters
    ----------
    key:
        16-byte AES key.
    nbytes:
        Length of the output, >= 0.
    counter_block:
        The initial 16-byte counter block (big-endian); all zeros by default, which
        is the stream masks and rounding noise use.
    backend:
        Force one implementation (tests compare them); ``"auto"`` picks the fastest.

    Returns
    -------
    numpy.ndarray
        A new ``uint8`` array.

    Raises
    ------
    TypeError, ValueError
        If the key or counter block is not 16 bytes, or ``nbytes`` < 0.
    BackendUnavailable
        If ``backend`` is not supported by this CPU.

    Security
    --------
    A (key, counter) pair must never produce two different masks: derive a fresh key
    per purpose (HKDF) instead of reusing one.
    """
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    out = np.empty(nbytes, dtype=np.uint8)
    core.keystream_into(
        out,
        key_bytes(key),
        key_bytes(counter_block, "counter_block"),
        check_backend(backend),
    )
    return out


def available_backends() -> list[str]:
    """The AES backends this CPU supports (``"portable"`` always)."""
    return list(core.available_backends())


def default_backend() -> str:
    """The backend ``"auto"`` selects on this CPU."""
    return str(core.default_backend())
