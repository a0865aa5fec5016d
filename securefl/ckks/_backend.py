"""Optional backends of :mod:`securefl.ckks`: TenSEAL and a zstd decoder.

TenSEAL is imported lazily, here and nowhere else in securefl, so that the rest of the
package works without it. A zstd decoder is needed only to read TenSEAL's own
serialization: every save path TenSEAL exposes (``CKKSVector.serialize``,
``Ciphertext.save``) writes SEAL blobs in SEAL's default compression mode, zstd, and the
Python API offers neither another mode nor raw access to the coefficients. The decoder is
the ``zstandard`` package (installed with the ``ckks`` extra) or, failing that, the
standard library's ``compression.zstd`` (Python >= 3.14).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import BackendUnavailable, InvalidMessage

__all__ = ["sealapi", "tenseal", "zstd_backend", "zstd_decompress_into"]

_INSTALL_HINT = "install the CKKS extra: pip install 'securefl[ckks]' (TenSEAL >= 0.3.16)"

Decoder = Callable[[memoryview, npt.NDArray[np.uint8]], int]


def tenseal() -> Any:
    """Import TenSEAL (and its ``sealapi`` type registrations) on first use.

    Returns
    -------
    module
        The ``tenseal`` module.

    Raises
    ------
    BackendUnavailable
        If TenSEAL is not installed.
    """
    try:
        ts = importlib.import_module("tenseal")
        # Registers SEAL's Modulus type, without which coeff_modulus() cannot be read.
        importlib.import_module("tenseal.sealapi")
    except ImportError as exc:
        raise BackendUnavailable(f"securefl.ckks needs TenSEAL; {_INSTALL_HINT}") from exc
    return ts


def _stdlib_decoder() -> Decoder | None:
    try:
        zstd: Any = importlib.import_module("compression.zstd")
    except ImportError:
        return None

    def decode(src: memoryview, dst: npt.NDArray[np.uint8]) -> int:
        d = zstd.ZstdDecompressor()
        # max_length bounds the output: a decompression bomb stops one byte past the limit.
        out = d.decompress(src, max_length=dst.size + 1)
        if len(out) > dst.size or not d.eof:
            raise InvalidMessage("zstd payload longer than its header allows")
        dst[: len(out)] = np.frombuffer(out, dtype=np.uint8)
        return len(out)

    return decode


def _zstandard_decoder() -> Decoder | None:
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError:
        return None

    def decode(src: memoryview, dst: npt.NDArray[np.uint8]) -> int:
        try:
            # A streaming reader bounded by dst's size: a decompression bomb is cut off
            # one byte past the limit instead of filling memory.
            reader = zstandard.ZstdDecompressor().stream_reader(src)
            out = reader.read(dst.size + 1)
        except zstandard.ZstdError:
            raise InvalidMessage("corrupt zstd payload") from None
        if len(out) > dst.size:
            raise InvalidMessage("zstd payload longer than its header allows")
        dst[: len(out)] = np.frombuffer(out, dtype=np.uint8)
        return len(out)

    return decode


def sealapi() -> Any:
    """TenSEAL's bindings of Microsoft SEAL (``tenseal.sealapi``), imported on first use.

    securefl uses them only where TenSEAL's own API has no equivalent: decryption to a
    plaintext (to flood it, :mod:`securefl.ckks.flooding`) and complex encoding (the
    contribution tags, :mod:`securefl.ckks.contributions`).

    Raises
    ------
    BackendUnavailable
        If TenSEAL is not installed.
    """
    tenseal()
    return importlib.import_module("tenseal.sealapi")


@functools.cache
def _decoder() -> tuple[str, Decoder] | None:
    for name, factory in (
        ("zstandard", _zstandard_decoder),
        ("compression.zstd", _stdlib_decoder),
    ):
        decoder = factory()
        if decoder is not None:
            return name, decoder
    return None


def zstd_backend() -> str:
    """Name the zstd decoder in use: ``"zstandard"`` or ``"compression.zstd"``.

    Raises
    ------
    BackendUnavailable
        If none is available.
    """
    found = _decoder()
    if found is None:
        raise BackendUnavailable(
            "reading TenSEAL's zstd-compressed ciphertexts needs a zstd decoder: "
            "pip install zstandard (part of the ckks extra), or use Python >= 3.14"
        )
    return found[0]


def zstd_decompress_into(src: memoryview, dst: npt.NDArray[np.uint8]) -> int:
    """Decompress one zstd frame into ``dst``, never writing past its end.

    Parameters
    ----------
    src:
        The compressed bytes.
    dst:
        A contiguous ``uint8`` buffer sized for the expected output.

    Returns
    -------
    int
        The number of bytes written; the caller checks it equals what it expects.

    Raises
    ------
    InvalidMessage
        If the frame is corrupt or decompresses to more than ``dst.size`` bytes.
    BackendUnavailable
        If no zstd decoder is available.
    """
    zstd_backend()
    found = _decoder()
    assert found is not None
    return found[1](src, dst)
