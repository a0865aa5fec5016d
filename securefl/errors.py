"""Exceptions raised by securefl.

Every error securefl raises on purpose derives from :class:`SecureFLError`. Errors
about a caller's arguments also derive from the matching built-in (``ValueError``,
``TypeError``) so that generic code keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "DecryptionError",
    "InvalidMessage",
    "ProtocolAbort",
    "SecureFLError",
    "ServiceError",
]


class SecureFLError(Exception):
    """Base class of every securefl error."""


class ConfigError(SecureFLError, ValueError):
    """A configuration cannot work: for example a ring too small for the sum."""


class ProtocolAbort(SecureFLError):
    """A protocol session ended without a result; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidMessage(SecureFLError, ValueError):
    """Bytes from a peer that do not decode to a valid message."""


class DecryptionError(SecureFLError):
    """Authenticated decryption failed.

    The message is deliberately uninformative: telling a wrong key from a forged
    ciphertext would help an attacker.
    """


class BackendUnavailable(SecureFLError, RuntimeError):
    """The requested implementation (an AES backend, an optional package) is missing."""


class ServiceError(SecureFLError):
    """The network service failed: the server is unreachable or went away, refused this
    client (not enrolled, bad certificate), rejected a frame, dropped the client from
    its session, or did not answer within the deadline. ``code`` names the gRPC status
    (``"UNAVAILABLE"``, ``"PERMISSION_DENIED"``, ...) or ``"DROPPED"``."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code
