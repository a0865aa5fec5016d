"""Key derivation: HKDF-SHA256 (RFC 5869) bound to a session and a purpose.

Every key securefl derives goes through :func:`derive`: the salt binds it to a session
(or to whatever public value scopes it, such as a DP plan's digest) and the info to a
purpose label and, where keys are per party, the parties' ids. Distinct labels make keys
of different roles unrelated; the ids make one party's key useless for another's.
``cryptography`` computes HKDF; nothing here is hand-rolled.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["derive"]


def derive(
    secret: bytes,
    *,
    session: bytes | None,
    purpose: bytes,
    ids: Iterable[int] = (),
    length: int,
) -> bytes:
    """HKDF-SHA256 of ``secret`` with salt = ``session``, info = purpose || ids (u32 LE).

    Parameters
    ----------
    secret:
        The input keying material (a shared secret, a seed).
    session:
        The salt: the session id (or another public scope); ``None``: no salt.
    purpose:
        The purpose label (``b"securefl/..."``), distinct per role.
    ids:
        Party ids appended to the label as little-endian u32.
    length:
        Output bytes.

    Security
    --------
    Two roles must never share a label: a key derived for one purpose must not be
    usable for another.
    """
    info = purpose + b"".join(struct.pack("<I", i) for i in ids)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=session, info=info).derive(secret)
