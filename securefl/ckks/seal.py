"""Microsoft SEAL's serialized ``Ciphertext``: parse and build (SEAL 4.x).

``Ciphertext::save`` writes a 16-byte header and a payload. Header, little-endian::

    u16 magic 0xA15E | u8 header size (16) | u8 version major | u8 version minor |
    u8 compression (0 none, 1 zlib, 2 zstd) | u16 reserved (0) | u64 total size

The payload, after decompression::

    +0   4 x u64  parms_id (hash of the parameters at the ciphertext's level)
    +32  u8       is_ntt_form (1 for CKKS)
    +33  u64      size: polynomials in the ciphertext (2 when fresh)
    +41  u64      N, the polynomial modulus degree
    +49  u64      L, the number of RNS limbs at this level
    +57  f64      scale
    +65  u64      correction factor (1 for CKKS; new in SEAL 4.0)
    +73  16 bytes header of the nested coefficient array (same layout, compression 0)
    +89  u64      coefficient count, size * L * N
    +97  u64      coefficients [size][L][N], each of limb l below q_l

SEAL <= 4.3 loads only its own exact version, so a ciphertext built here carries the
version bytes of the ciphertexts it was computed from.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefl.ckks._backend import zstd_decompress_into
from securefl.errors import InvalidMessage

__all__ = [
    "HEADER_SIZE",
    "PAYLOAD_PREFIX_SIZE",
    "CiphertextInfo",
    "read_ciphertext",
    "write_ciphertext",
]

MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")
_PREFIX = struct.Struct("<4QBQQQdQ")  # parms_id, is_ntt_form, size, N, L, scale, correction
_COUNT = struct.Struct("<Q")
HEADER_SIZE = _HEADER.size  # 16
PAYLOAD_PREFIX_SIZE = _PREFIX.size + HEADER_SIZE + _COUNT.size  # 97
_NONE, _ZLIB, _ZSTD = 0, 1, 2
SUPPORTED_MAJOR = 4
MAX_POLY_MODULUS_DEGREE = 1 << 17
MAX_LIMBS = 64


@dataclass(frozen=True)
class CiphertextInfo:
    """The metadata of one SEAL ciphertext.

    Parameters
    ----------
    version:
        SEAL (major, minor) version bytes of its header.
    parms_id:
        The four u64 words identifying its parameters and level.
    polys:
        Polynomials in the ciphertext (SEAL's ``size``).
    poly_modulus_degree:
        N.
    limbs:
        RNS limbs L at its level.
    scale:
        Its CKKS scale.
    """

    version: tuple[int, int]
    parms_id: tuple[int, int, int, int]
    polys: int
    poly_modulus_degree: int
    limbs: int
    scale: float

    @property
    def coeff_count(self) -> int:
        """``polys * limbs * poly_modulus_degree``."""
        return self.polys * self.limbs * self.poly_modulus_degree


def _read_header(data: memoryview, what: str) -> tuple[int, int, int, int]:
    if len(data) < HEADER_SIZE:
        raise InvalidMessage(f"{what}: {len(data)} bytes is shorter than a SEAL header")
    magic, hsize, major, minor, compr, reserved, total = _HEADER.unpack_from(data, 0)
    if magic != MAGIC or hsize != HEADER_SIZE:
        raise InvalidMessage(f"{what}: not a SEAL object (bad magic or header size)")
    if major != SUPPORTED_MAJOR:
        raise InvalidMessage(f"{what}: SEAL version {major}.{minor}; only 4.x is supported")
    if reserved != 0:
        raise InvalidMessage(f"{what}: reserved header bytes are not zero")
    if compr not in (_NONE, _ZLIB, _ZSTD):
        raise InvalidMessage(f"{what}: unknown compression mode {compr}")
    return major, minor, compr, total


def read_ciphertext(
    blob: bytes | bytearray | memoryview, *, max_coeffs: int
) -> tuple[CiphertextInfo, npt.NDArray[np.uint64]]:
    """Parse one ``Ciphertext::save`` blob.

    Parameters
    ----------
    blob:
        The blob, uncompressed, zlib- or zstd-compressed.
    max_coeffs:
        The most coefficients the caller accepts (``2 * L * N`` of its context); it bounds
        the memory a compressed blob may expand to.

    Returns
    -------
    (info, coeffs):
        The metadata and the ``uint64`` coefficients, shape ``(polys, limbs, N)``. For an
        uncompressed blob this is a read-only view into ``blob`` (possibly unaligned);
        otherwise a fresh 8-byte-aligned array.

    Raises
    ------
    InvalidMessage
        If the blob is truncated or has trailing bytes, its header or the nested header is
        malformed, the version is not 4.x, the compressed data is corrupt, a field is out
        of range (is_ntt_form != 1, correction factor != 1, N not a power of two, a scale
        that is not finite and positive), or it holds more than ``max_coeffs``
        coefficients. Coefficients are not compared with the moduli here.
    BackendUnavailable
        For a zstd blob when no zstd decoder is available.
    """
    data = memoryview(blob).cast("B")
    major, minor, compr, total = _read_header(data, "ciphertext")
    # A size field that disagrees with the bytes received means truncation or padding.
    if total != len(data):
        raise InvalidMessage(f"ciphertext: header says {total} bytes, got {len(data)}")
    body = data[HEADER_SIZE:]
    limit = PAYLOAD_PREFIX_SIZE + 8 * max_coeffs
    if compr == _NONE:
        payload = body
        base = HEADER_SIZE
        source: memoryview | npt.NDArray[np.uint8] = data
    else:
        # 7 bytes of padding put the coefficients (+97) on an 8-byte boundary.
        buf = np.empty(limit + 1 + 7, dtype=np.uint8)
        if compr == _ZSTD:
            n = zstd_decompress_into(body, buf[7:])
        else:
            d = zlib.decompressobj()
            try:
                out = d.decompress(body, limit + 1)
            except zlib.error as exc:
                raise InvalidMessage(f"ciphertext: corrupt zlib payload: {exc}") from None
            if not d.eof or d.unused_data:
                raise InvalidMessage("ciphertext: zlib payload too long or not terminated")
            n = len(out)
            buf[7 : 7 + n] = np.frombuffer(out, dtype=np.uint8)
        if n > limit:
            raise InvalidMessage(f"ciphertext: holds more than {max_coeffs} coefficients")
        payload = memoryview(buf[7 : 7 + n])  # type: ignore[arg-type]
        base = 7
        source = buf
    if len(payload) < PAYLOAD_PREFIX_SIZE:
        raise InvalidMessage("ciphertext: payload shorter than its fixed fields")
    *pid, ntt, polys, n_deg, limbs, scale, correction = _PREFIX.unpack_from(payload, 0)
    if ntt != 1:
        raise InvalidMessage("ciphertext: not in NTT form (not a CKKS ciphertext)")
    if correction != 1:
        raise InvalidMessage(f"ciphertext: correction factor {correction}, CKKS uses 1")
    if not (1024 <= n_deg <= MAX_POLY_MODULUS_DEGREE and n_deg & (n_deg - 1) == 0):
        raise InvalidMessage(f"ciphertext: N = {n_deg} is not a power of two in [1024, 2^17]")
    if not (1 <= limbs <= MAX_LIMBS and 2 <= polys <= 16):
        raise InvalidMessage(f"ciphertext: size {polys} or {limbs} limbs out of range")
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidMessage(f"ciphertext: invalid scale {scale}")
    count = polys * limbs * n_deg
    if count > max_coeffs:
        raise InvalidMessage(f"ciphertext: {count} coefficients, at most {max_coeffs} allowed")
    imagic, ihsize, imajor, iminor, icompr, ireserved, itotal = _HEADER.unpack_from(
        payload, _PREFIX.size
    )
    (icount,) = _COUNT.unpack_from(payload, _PREFIX.size + HEADER_SIZE)
    if (imagic, ihsize, imajor, iminor, icompr, ireserved) != (
        MAGIC,
        HEADER_SIZE,
        major,
        minor,
        _NONE,
        0,
    ):
        raise InvalidMessage("ciphertext: malformed header of the coefficient array")
    if icount != count or itotal != HEADER_SIZE + _COUNT.size + 8 * count:
        raise InvalidMessage("ciphertext: coefficient count disagrees with size * L * N")
    if len(payload) != PAYLOAD_PREFIX_SIZE + 8 * count:
        raise InvalidMessage(
            f"ciphertext: payload of {len(payload)} bytes, expected "
            f"{PAYLOAD_PREFIX_SIZE + 8 * count}"
        )
    coeffs = np.frombuffer(
        source, dtype="<u8", count=count, offset=base + PAYLOAD_PREFIX_SIZE
    ).reshape(polys, limbs, n_deg)
    info = CiphertextInfo(
        (major, minor),
        (pid[0], pid[1], pid[2], pid[3]),
        polys,
        n_deg,
        limbs,
        scale,
    )
    return info, coeffs


def write_ciphertext(
    info: CiphertextInfo, coeffs: npt.NDArray[np.uint64], *, ntt_form: bool = True
) -> bytes:
    """Build an uncompressed ``Ciphertext::save`` blob that SEAL loads.

    Parameters
    ----------
    info:
        The metadata to write; its version should be the one of the inputs.
    coeffs:
        ``uint64`` coefficients, shape ``(polys, limbs, N)``; any strides.
    ntt_form:
        The is_ntt_form flag. CKKS ciphertexts are in NTT form; ``False`` writes
        polynomials in coefficient form, which SEAL loads and can bring to NTT form
        (:mod:`securefl.ckks.flooding` adds its noise that way). :func:`read_ciphertext`
        refuses such blobs: they never come from peers.

    Returns
    -------
    bytes
        The blob, compression mode 0.

    Raises
    ------
    ValueError
        If the array's shape disagrees with ``info``.
    """
    shape = (info.polys, info.limbs, info.poly_modulus_degree)
    if coeffs.shape != shape or coeffs.dtype != np.uint64:
        raise ValueError(f"coefficients must be uint64 of shape {shape}")
    count = info.coeff_count
    major, minor = info.version
    total = HEADER_SIZE + PAYLOAD_PREFIX_SIZE + 8 * count
    head = _HEADER.pack(MAGIC, HEADER_SIZE, major, minor, _NONE, 0, total)
    prefix = _PREFIX.pack(
        *info.parms_id,
        1 if ntt_form else 0,
        info.polys,
        info.poly_modulus_degree,
        info.limbs,
        info.scale,
        1,
    )
    inner = _HEADER.pack(MAGIC, HEADER_SIZE, major, minor, _NONE, 0, HEADER_SIZE + 8 + 8 * count)
    body = np.ascontiguousarray(coeffs, dtype="<u8").tobytes()
    return b"".join((head, prefix, inner, _COUNT.pack(count), body))
