"""The client-server wire format of CKKS FedAvg: securefl's ``SFCK`` ciphertext message.

A client's encrypted update is a sequence of C fresh CKKS ciphertexts (TenSEAL's chunks
of N/2 values), each two polynomials of L RNS limbs of N coefficients. securefl ships
them in one ``SFCK`` message whose coefficients are stored *limb-major*: all
coefficients of limb 0 (ciphertext by ciphertext, polynomial by polynomial), then limb
1, ... In that order the server's sum is one call of the native RNS kernel over an
array of shape ``(1, L, C*2*N)``, and the packed encoding (:mod:`securefl.ckks.bitpack`)
runs over long contiguous rows.

Message layout, little-endian; the payload starts on an 8-byte boundary::

    offset  size  field
    0       4     magic b"SFCK"
    4       u8    format version: 1, or 2 with a contribution list
    5       u8    encoding: 0 raw (u64 per coefficient), 1 packed (w_l bits per coefficient)
    6       u8    SEAL version major  } of the SEAL ciphertexts encoded; echoed so
    7       u8    SEAL version minor  } that SEAL loads the result
    8       u32   N, the polynomial modulus degree (power of two, 1024..2^17)
    12      u16   polynomials per ciphertext, 2
    14      u16   L, RNS limbs at the data level (1..64)
    16      u64   length: values in the vector; C = ceil(length / (N/2))
    24      f64   scale
    32      4 u64 parms_id of the data level
    64      L u8  w_l, bits per coefficient of limb l on the wire, zero-padded to a
                  multiple of 8 bytes: 64 for raw; for packed, b_l <= w_l <= 64 where
                  b_l = ceil(log2 q_l)
    version 2 only:
            u32   k, contributions summed (1..2^16)
            u32   0
            k x 16 bytes  contribution nonces, strictly increasing
    then    raw:    L*C*2*N u64, coefficient (l, c, p, k) at ((l*C + c)*2 + p)*N + k
            packed: for each limb l, w_l * (C*2*N/64) u64 words (bitpack format; for
                    w_l = 64 simply the u64 coefficients)

Nothing may follow the payload. A client's encrypted update names its one contribution
(:mod:`securefl.ckks.contributions`: a random nonce whose keyed tag rides encrypted in
the ciphertext), an aggregate every contribution it sums; version 1 (no list) is a vector
of unknown contributions, such as one converted from TenSEAL's own output.

securefl's packed encoding uses w_l = b_l for limbs of at most 56 bits and w_l = 64
above (:func:`wire_width`): packing a 57- to 62-bit limb would save under 12% of it and
costs the most shifts to undo, and the server's time matters more than those bytes
(docs/CKKS.md has the measurements).

Conversion from and to TenSEAL's own serialization of the same ciphertexts lives in
:mod:`securefl.ckks.tenseal_format`; its four functions, once here, still resolve as
deprecated aliases (``securefl.ckks.wire.from_tenseal`` and so on).
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from securefl.ckks import bitpack, seal
from securefl.errors import InvalidMessage

__all__ = [
    "MAGIC",
    "MAX_CONTRIBUTIONS",
    "NONCE_BYTES",
    "Encoding",
    "EncryptedVector",
    "Spec",
    "check_contributions",
    "decode",
    "encode",
    "read_header",
    "wire_width",
]

Encoding: TypeAlias = Literal["raw", "packed"]
U64 = npt.NDArray[np.uint64]

MAGIC = b"SFCK"
VERSION = 1
VERSION_CONTRIBUTIONS = 2
NONCE_BYTES = 16
MAX_CONTRIBUTIONS = 2**16
"""The most contributions one vector may name: bounds the list before it is read, and
keeps the flooded integer slots of an aggregate exact (:mod:`securefl.ckks.flooding`)."""
POLYS = 2
_ENCODINGS: dict[str, int] = {"raw": 0, "packed": 1}
_ENCODING_NAMES = {v: k for k, v in _ENCODINGS.items()}
_FIXED = struct.Struct("<4sBBBBIHHQd4Q")
_COUNT = struct.Struct("<II")
MAX_LENGTH = 2**40
PACK_MAX_BITS = 56
"""Limbs wider than this travel as whole u64 words in the packed encoding."""


def _pad8(n: int) -> int:
    return -(-n // 8) * 8


def wire_width(bits: int) -> int:
    """Bits per coefficient on the wire for a limb whose modulus has ``bits`` bits.

    ``bits`` itself up to :data:`PACK_MAX_BITS` (56), 64 above: a 60-bit limb packed
    would save 6% of its bytes and take the longest to unpack.
    """
    return bits if bits <= PACK_MAX_BITS else 64


def check_contributions(nonces: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Check a contribution list: at most 2^16 nonces of 16 bytes, strictly increasing.

    Returns
    -------
    tuple of bytes
        ``nonces`` itself.

    Raises
    ------
    InvalidMessage
        Naming the first entry that breaks a rule.
    """
    if len(nonces) > MAX_CONTRIBUTIONS:
        raise InvalidMessage(f"{len(nonces)} contributions, at most {MAX_CONTRIBUTIONS}")
    for i, nonce in enumerate(nonces):
        if len(nonce) != NONCE_BYTES:
            raise InvalidMessage(f"contribution {i}: {len(nonce)} bytes, a nonce has 16")
        # One order only, so a contribution listed twice (counted twice) cannot hide.
        if i > 0 and nonce <= nonces[i - 1]:
            raise InvalidMessage(f"contribution {i}: nonces are not strictly increasing")
    return nonces


@dataclass(frozen=True)
class Spec:
    """What a valid ciphertext of a CKKS context looks like at its data level.

    Parameters
    ----------
    poly_modulus_degree:
        N.
    moduli:
        q_0 .. q_{L-1} of the data level (the key level's special prime excluded).
    parms_id:
        SEAL's parms_id of the data level.
    scale:
        The context's global scale: every ciphertext must carry exactly this scale.
    """

    poly_modulus_degree: int
    moduli: tuple[int, ...]
    parms_id: tuple[int, int, int, int]
    scale: float

    @property
    def limb_bits(self) -> tuple[int, ...]:
        """b_l = ceil(log2 q_l) for each limb: every coefficient has at most b_l bits."""
        return tuple(q.bit_length() for q in self.moduli)

    @property
    def widths(self) -> tuple[int, ...]:
        """w_l, the bits per coefficient of each limb in the packed encoding."""
        return tuple(wire_width(b) for b in self.limb_bits)

    @property
    def slots(self) -> int:
        """Values per ciphertext, N/2."""
        return self.poly_modulus_degree // 2

    def chunks(self, length: int) -> int:
        """Ciphertexts for a vector of ``length`` values."""
        return -(-length // self.slots)

    def check(
        self,
        poly_modulus_degree: int,
        limbs: int,
        parms_id: tuple[int, int, int, int],
        scale: float,
    ) -> None:
        """Check a ciphertext's metadata against this data level.

        Raises
        ------
        InvalidMessage
            Naming the first field that differs.
        """
        # Each check blocks a ciphertext that SEAL's own `+` would refuse or mis-add:
        # another parameter set or level (N, L, parms_id) or another scale.
        if poly_modulus_degree != self.poly_modulus_degree:
            raise InvalidMessage(
                f"N = {poly_modulus_degree}, the context has N = {self.poly_modulus_degree}"
            )
        if limbs != len(self.moduli):
            raise InvalidMessage(
                f"{limbs} limbs, the context's data level has {len(self.moduli)} "
                "(another level or parameter set)"
            )
        if parms_id != self.parms_id:
            raise InvalidMessage(
                "parms_id differs from the context's data level (another parameter set or level)"
            )
        if scale != self.scale:
            raise InvalidMessage(f"scale {scale!r}, the context's is {self.scale!r}")


@dataclass(frozen=True, eq=False)
class EncryptedVector:
    """The ciphertexts of one encrypted vector, coefficients limb-major.

    Parameters
    ----------
    seal_version:
        SEAL (major, minor) version bytes of the ciphertexts.
    parms_id:
        The ciphertexts' parms_id.
    scale:
        Their scale.
    length:
        Values in the vector (the last ciphertext may hold fewer than N/2).
    widths:
        Bits per coefficient of each limb in the packed encoding (:attr:`Spec.widths`);
        every coefficient of limb l is below ``2**widths[l]``.
    coeffs:
        ``uint64`` array of shape ``(L, C, 2, N)``, C-contiguous.
    contributions:
        The contribution nonces the vector sums, strictly increasing; empty when unknown.
    """

    seal_version: tuple[int, int]
    parms_id: tuple[int, int, int, int]
    scale: float
    length: int
    widths: tuple[int, ...]
    coeffs: U64
    contributions: tuple[bytes, ...] = ()

    @property
    def poly_modulus_degree(self) -> int:
        """N."""
        return int(self.coeffs.shape[3])

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        """Values per ciphertext, as TenSEAL chunks them."""
        slots = self.poly_modulus_degree // 2
        c = int(self.coeffs.shape[1])
        return (slots,) * (c - 1) + (self.length - slots * (c - 1),)


@dataclass(frozen=True)
class Header:
    """The fixed fields of an ``SFCK`` message; see the module docstring."""

    encoding: Encoding
    seal_version: tuple[int, int]
    poly_modulus_degree: int
    length: int
    scale: float
    parms_id: tuple[int, int, int, int]
    widths: tuple[int, ...]
    contributions: tuple[bytes, ...] = ()

    @property
    def version(self) -> int:
        """1 without a contribution list, 2 with one."""
        return VERSION_CONTRIBUTIONS if self.contributions else VERSION

    @property
    def chunks(self) -> int:
        """C, the number of ciphertexts."""
        return -(-self.length // (self.poly_modulus_degree // 2))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(L, C, 2, N)`` of the coefficient array."""
        return (len(self.widths), self.chunks, POLYS, self.poly_modulus_degree)

    @property
    def payload_offset(self) -> int:
        """Where the coefficients start."""
        listed = _COUNT.size + NONCE_BYTES * len(self.contributions) if self.contributions else 0
        return _FIXED.size + _pad8(len(self.widths)) + listed

    def limb_words(self, limb: int) -> int:
        """u64 words limb ``limb`` takes in the payload."""
        count = self.chunks * POLYS * self.poly_modulus_degree
        return bitpack.packed_words(count, self.widths[limb])

    @property
    def size(self) -> int:
        """Total bytes of the message."""
        words = sum(self.limb_words(limb) for limb in range(len(self.widths)))
        return self.payload_offset + 8 * words

    def check(self, spec: Spec) -> None:
        """Check that the ciphertexts belong to ``spec``'s context at its data level.

        Raises
        ------
        InvalidMessage
            Naming the first field that differs.
        """
        spec.check(self.poly_modulus_degree, len(self.widths), self.parms_id, self.scale)
        # A width below b_l would truncate coefficients of this parameter set.
        for limb, (width, bits) in enumerate(zip(self.widths, spec.limb_bits, strict=True)):
            if width < bits:
                raise InvalidMessage(f"limb {limb} sent in {width} bits, q_{limb} has {bits}")


def read_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse and check the fixed fields of an ``SFCK`` message and its total size.

    Raises
    ------
    InvalidMessage
        If the magic, version, encoding, a field's range or the total size is wrong.
    """
    buf = memoryview(data).cast("B")
    if len(buf) < _FIXED.size:
        raise InvalidMessage(f"message of {len(buf)} bytes is shorter than its header")
    magic, version, enc, major, minor, n_deg, polys, limbs, length, scale, *pid = (
        _FIXED.unpack_from(buf, 0)
    )
    if magic != MAGIC:
        raise InvalidMessage("not an SFCK message (bad magic)")
    if version not in (VERSION, VERSION_CONTRIBUTIONS):
        raise InvalidMessage(f"unsupported SFCK version {version}")
    if enc not in _ENCODING_NAMES:
        raise InvalidMessage(f"unknown encoding {enc}")
    if major != seal.SUPPORTED_MAJOR:
        raise InvalidMessage(f"SEAL version {major}.{minor}; only 4.x is supported")
    if not (1024 <= n_deg <= seal.MAX_POLY_MODULUS_DEGREE and n_deg & (n_deg - 1) == 0):
        raise InvalidMessage(f"N = {n_deg} is not a power of two in [1024, 2^17]")
    if polys != POLYS:
        raise InvalidMessage(f"{polys} polynomials per ciphertext; fresh ciphertexts have 2")
    if not 1 <= limbs <= seal.MAX_LIMBS:
        raise InvalidMessage(f"{limbs} limbs is not in [1, {seal.MAX_LIMBS}]")
    if not 1 <= length < MAX_LENGTH:
        raise InvalidMessage(f"vector length {length} is not in [1, 2^40)")
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidMessage(f"invalid scale {scale}")
    if len(buf) < _FIXED.size + _pad8(limbs):
        raise InvalidMessage("message truncated in the limb widths")
    widths = tuple(buf[_FIXED.size : _FIXED.size + limbs])
    if any(buf[_FIXED.size + limbs : _FIXED.size + _pad8(limbs)]):
        raise InvalidMessage("limb widths: padding is not zero")
    if enc == _ENCODINGS["raw"] and any(w != 64 for w in widths):
        raise InvalidMessage("limb widths of a raw message must be 64")
    if any(not 2 <= w <= 64 for w in widths):
        raise InvalidMessage(f"limb widths {widths} not in [2, 64]")
    contributions: tuple[bytes, ...] = ()
    if version == VERSION_CONTRIBUTIONS:
        start = _FIXED.size + _pad8(limbs)
        if len(buf) < start + _COUNT.size:
            raise InvalidMessage("message truncated in the contribution count")
        count, reserved = _COUNT.unpack_from(buf, start)
        # The count is checked before the list is read: it bounds what is parsed.
        if not 1 <= count <= MAX_CONTRIBUTIONS or reserved != 0:
            raise InvalidMessage(
                f"contribution count {count} not in [1, {MAX_CONTRIBUTIONS}] "
                "or reserved bytes not zero"
            )
        start += _COUNT.size
        if len(buf) < start + NONCE_BYTES * count:
            raise InvalidMessage("message truncated in the contribution list")
        contributions = check_contributions(
            tuple(
                bytes(buf[start + NONCE_BYTES * i : start + NONCE_BYTES * (i + 1)])
                for i in range(count)
            )
        )
    header = Header(
        _ENCODING_NAMES[enc],  # type: ignore[arg-type]
        (major, minor),
        n_deg,
        length,
        scale,
        (pid[0], pid[1], pid[2], pid[3]),
        widths,
        contributions,
    )
    # Truncated or padded messages are refused before any coefficient is read.
    if len(buf) != header.size:
        raise InvalidMessage(f"message of {len(buf)} bytes, its header implies {header.size}")
    return header


def decode(
    data: bytes | bytearray | memoryview,
    header: Header | None = None,
    *,
    out: U64 | None = None,
    threads: int = 1,
) -> EncryptedVector:
    """Read the ciphertexts of an ``SFCK`` message.

    Parameters
    ----------
    data:
        The message.
    header:
        Its :func:`read_header` result, if already parsed.
    out:
        Optional C-contiguous ``uint64`` destination of shape ``header.shape``. A raw
        message whose payload is 8-byte aligned is returned as a read-only view of
        ``data`` without copying unless ``out`` is given.
    threads:
        Threads for unpacking.

    Returns
    -------
    EncryptedVector
        Coefficients are below 2^w_l but not yet checked against q_l.

    Raises
    ------
    InvalidMessage
        As :func:`read_header`.
    ValueError
        If ``out`` has the wrong shape or dtype.
    """
    h = read_header(data) if header is None else header
    shape = h.shape
    if out is not None and (
        out.shape != shape or out.dtype != np.uint64 or not out.flags.c_contiguous
    ):
        raise ValueError(f"out must be a C-contiguous uint64 array of shape {shape}")
    buf = memoryview(data).cast("B")
    words = np.frombuffer(buf, dtype="<u8", offset=h.payload_offset)
    if h.encoding == "raw":
        raw = words.reshape(shape)
        if out is not None:
            np.copyto(out, raw)
            coeffs = out
        elif raw.ctypes.data % 8 == 0:
            coeffs = raw
        else:  # the native kernel reads u64 words: give it aligned ones
            coeffs = raw.copy()
    else:
        coeffs = np.empty(shape, dtype=np.uint64) if out is None else out
        per_limb = coeffs.reshape(shape[0], -1)
        start = 0
        for limb, width in enumerate(h.widths):
            n = h.limb_words(limb)
            if width == 64:
                per_limb[limb] = words[start : start + n]
            else:
                bitpack.unpack(words[start : start + n], width, per_limb[limb], threads=threads)
            start += n
    return EncryptedVector(
        h.seal_version, h.parms_id, h.scale, h.length, h.widths, coeffs, h.contributions
    )


def encode(vector: EncryptedVector, encoding: Encoding = "packed", *, threads: int = 1) -> bytes:
    """Serialize ciphertexts as an ``SFCK`` message.

    Parameters
    ----------
    vector:
        The ciphertexts; every coefficient of limb l must be below ``2**vector.widths[l]``.
    encoding:
        ``"packed"`` (``vector.widths`` bits per coefficient) or ``"raw"`` (u64).
    threads:
        Threads for packing.

    Returns
    -------
    bytes
        The message.

    Raises
    ------
    ValueError
        For an unknown encoding, inconsistent fields, a width outside [2, 64], a
        contribution list that breaks :func:`check_contributions`, or a coefficient that
        does not fit its width.
    """
    if encoding not in _ENCODINGS:
        raise ValueError(f"encoding must be 'raw' or 'packed', got {encoding!r}")
    c = vector.coeffs
    limbs = len(vector.widths)
    n_deg = vector.poly_modulus_degree
    if c.dtype != np.uint64 or c.ndim != 4 or c.shape[0] != limbs or c.shape[2] != POLYS:
        raise ValueError(f"coefficients must be uint64 of shape ({limbs}, C, 2, N)")
    if c.shape[1] != -(-vector.length // (n_deg // 2)):
        raise ValueError(f"{c.shape[1]} ciphertexts cannot hold {vector.length} values")
    widths = (64,) * limbs if encoding == "raw" else vector.widths
    if any(not 2 <= w <= 64 for w in widths):
        raise ValueError(f"widths {widths} not in [2, 64]")
    try:
        contributions = check_contributions(vector.contributions)
    except InvalidMessage as exc:
        raise ValueError(str(exc)) from None
    header = Header(
        encoding,
        vector.seal_version,
        n_deg,
        vector.length,
        vector.scale,
        vector.parms_id,
        widths,
        contributions,
    )
    # One buffer, filled in place and copied once into the bytes returned.
    buf = np.zeros(header.size, dtype=np.uint8)
    _FIXED.pack_into(
        buf.data,
        0,
        MAGIC,
        header.version,
        _ENCODINGS[encoding],
        *vector.seal_version,
        n_deg,
        POLYS,
        limbs,
        vector.length,
        vector.scale,
        *vector.parms_id,
    )
    buf[_FIXED.size : _FIXED.size + limbs] = widths
    if contributions:
        start = _FIXED.size + _pad8(limbs)
        _COUNT.pack_into(buf.data, start, len(contributions), 0)
        listed = b"".join(contributions)
        start += _COUNT.size
        buf[start : start + len(listed)] = np.frombuffer(listed, dtype=np.uint8)
    per_limb = c.reshape(limbs, -1)
    start = header.payload_offset
    for limb, width in enumerate(widths):
        n = header.limb_words(limb)
        words = buf[start : start + 8 * n].view(np.uint64)
        if width == 64:
            words[...] = per_limb[limb]
        else:
            bitpack.pack(per_limb[limb], width, out=words.reshape(width, -1), threads=threads)
        start += 8 * n
    return buf.tobytes()


_MOVED_TO_TENSEAL_FORMAT = frozenset(
    {"from_tenseal", "is_tenseal", "read_ciphertext_into", "to_tenseal"}
)


def __getattr__(name: str) -> object:
    """Resolve the TenSEAL conversions that moved to :mod:`securefl.ckks.tenseal_format`.

    Raises
    ------
    AttributeError
        For any other name.
    """
    if name in _MOVED_TO_TENSEAL_FORMAT:
        warnings.warn(
            f"securefl.ckks.wire.{name} is deprecated: use securefl.ckks.tenseal_format.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        # Imported here: tenseal_format imports this module.
        from securefl.ckks import tenseal_format

        return getattr(tenseal_format, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
