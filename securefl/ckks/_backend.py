"""Optional backends of :mod:`securefl.ckks`: TenSEAL and a zstd decoder.

TenSEAL is imported lazily, here and nowhere else in securefl, so that the rest of the
package works without it. A zstd decoder is needed only to read TenSEAL's own
serialization: every save path TenSEAL exposes (``CKKSVector.serialize``,
``Ciphertext.save``) writes SEAL blobs in SEAL's default compression mode, zstd, and the
Python API offers neither another mode nor raw access to the coefficients. The decoder is,
in order of preference: the standard library's ``compression.zstd`` (Python >= 3.14); the
zstd that TenSEAL's own extension module is linked with and exports (``ZSTD_decompress``),
called through :mod:`ctypes` -- the code that compressed the blob, so no new dependency
is needed where TenSEAL is installed; or the system's ``libzstd``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import BackendUnavailable, InvalidMessage

__all__ = ["tenseal", "zstd_backend", "zstd_decompress_into"]

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


def _ctypes_decoder(path: str | None) -> Decoder | None:
    """A decoder over ``ZSTD_decompress`` exported by the shared library at ``path``."""
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        fn = lib.ZSTD_decompress
        is_error = lib.ZSTD_isError
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    is_error.restype = ctypes.c_uint
    is_error.argtypes = [ctypes.c_size_t]

    def decode(src: memoryview, dst: npt.NDArray[np.uint8]) -> int:
        # ZSTD_decompress never writes past dst's capacity and reports an error instead.
        source = np.frombuffer(src, dtype=np.uint8)  # a view: no copy of the input
        n = fn(dst.ctypes.data, dst.size, source.ctypes.data, source.size)
        if is_error(n):
            raise InvalidMessage("corrupt or oversized zstd payload")
        return int(n)

    return decode


def _tenseal_decoder() -> Decoder | None:
    try:
        tenseal()
        path = sys.modules["_tenseal_cpp"].__file__
    except (BackendUnavailable, KeyError):
        return None
    return _ctypes_decoder(path)


def _system_decoder() -> Decoder | None:
    return _ctypes_decoder(ctypes.util.find_library("zstd"))


@functools.cache
def _decoder() -> tuple[str, Decoder] | None:
    for name, factory in (
        ("compression.zstd", _stdlib_decoder),
        ("tenseal-bundled", _tenseal_decoder),
        ("libzstd", _system_decoder),
    ):
        decoder = factory()
        if decoder is not None:
            return name, decoder
    return None


def zstd_backend() -> str:
    """Name the zstd decoder in use: ``"compression.zstd"``, ``"tenseal-bundled"`` or
    ``"libzstd"``.

    Raises
    ------
    BackendUnavailable
        If none is available.
    """
    found = _decoder()
    if found is None:
        raise BackendUnavailable(
            "reading TenSEAL's zstd-compressed ciphertexts needs a zstd decoder: "
            "use Python >= 3.14, a TenSEAL build that exports zstd, or install libzstd"
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
