"""The one import of the compiled core, and argument conversions shared by wrappers."""

from __future__ import annotations

import operator
from typing import Literal

from securefl.errors import BackendUnavailable

try:
    from securefl import _core
except ImportError as exc:  # pragma: no cover - depends on how securefl was installed
    raise BackendUnavailable(
        "securefl's compiled core (securefl._core) is missing: install the package "
        "(`pip install .` or `make test`) instead of importing it from the source tree"
    ) from exc

Backend = Literal["auto", "portable", "aesni", "vaes256", "vaes512"]
"""AES-128-CTR implementations; all give identical output."""

BACKENDS: tuple[str, ...] = ("auto", "portable", "aesni", "vaes256", "vaes512")

core = _core


def check_backend(backend: str) -> str:
    """Return ``backend`` if this CPU has it; raise otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown AES backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto" and backend not in _core.available_backends():
        raise BackendUnavailable(f"AES backend {backend!r} is not available on this CPU")
    return backend


def thread_count(threads: int | None) -> int:
    """Map the public ``threads`` argument (None = all available cores) to the core's."""
    if threads is None:
        return 0
    n = operator.index(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1 or None, got {n}")
    return n


def key_bytes(key: object, name: str = "key") -> bytes:
    """A 16-byte AES key from a bytes-like object."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, got {type(key).__name__}")
    raw = bytes(key)
    if len(raw) != 16:
        raise ValueError(f"{name} must be exactly 16 bytes, got {len(raw)}")
    return raw
