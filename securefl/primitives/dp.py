"""Native kernels of distributed differential privacy: rotation, noise, encode, decode.

Thin, validated wrappers over ``securefl._core`` (``csrc/src/dp_*.cpp``). The pipeline
is that of Kairouz, Liu and Steinke (ICML 2021, section 4, "KLS") and Agarwal,
Kairouz and Liu (NeurIPS 2021, section 4, "AKL"): clip, randomized Walsh-Hadamard
rotation, scale by 1/gamma, conditional randomized rounding, integer noise (discrete
Gaussian, Canonne-Kamath-Steinke 2020 Algorithm 3; or Skellam), wrap into Z_{2^b}.
Every coin is AES-128-CTR keystream of a caller-supplied key; see
``csrc/include/securefl/dp.hpp`` for the exact layout of each stream and for the
precision of the samplers (binary64 Bernoulli trials, not rational arithmetic).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from securefl.primitives._native import Backend, check_backend, core, key_bytes, thread_count
from securefl.primitives.masking import RingArray, ring_dtype

__all__ = [
    "NOISE_KINDS",
    "EncodeSpec",
    "NoiseKind",
    "decode",
    "encode",
    "padded_dimension",
    "rotate",
    "sample_noise",
]

NoiseKind = Literal["none", "discrete_gaussian", "skellam"]
NOISE_KINDS: tuple[str, ...] = ("none", "discrete_gaussian", "skellam")


def _check_kind(kind: str) -> str:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise {kind!r}; expected one of {NOISE_KINDS}")
    return kind


def padded_dimension(d: int) -> int:
    """The rotation's length: the smallest power of two >= ``d`` (1 <= d <= 2^40).

    Raises
    ------
    TypeError
        If ``d`` is not an integer (3.5 used to be padded to 4).
    ValueError
        If ``d`` is out of range.
    """
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        raise TypeError(f"dimension must be an integer, got {d!r}")
    if d < 1:
        raise ValueError(f"dimension must be >= 1, got {d}")
    return int(core.dp_padded_dimension(int(d)))


def rotate(
    x: npt.NDArray[np.float64],
    key: bytes,
    *,
    inverse: bool = False,
    normalize: bool = True,
    threads: int | None = None,
    backend: Backend = "auto",
) -> npt.NDArray[np.float64]:
    """The randomized Walsh-Hadamard rotation ``H diag(s) x / sqrt(D)`` (or its inverse).

    Parameters
    ----------
    x:
        ``float64`` vector whose length D is a power of two; not modified.
    key:
        16-byte key whose keystream bits are the signs s (public: derived from the
        round's public seed).
    inverse:
        Apply ``diag(s) H y / sqrt(D)`` instead, the exact inverse in real arithmetic.
    normalize:
        Without the 1/sqrt(D) factor, ``rotate(rotate(x), inverse=True) == D * x``
        exactly for integer-valued x (no rounding at all).

    Returns
    -------
    numpy.ndarray
        A new ``float64`` vector.

    Raises
    ------
    TypeError
        If ``x`` is not a float64 array.
    ValueError
        If its length is not a power of two.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError("x must be a float64 numpy array")
    y = np.array(x, dtype=np.float64, order="C", copy=True).reshape(-1)
    core.dp_rotate_inplace(
        y,
        key_bytes(key),
        inverse=inverse,
        normalize=normalize,
        threads=thread_count(threads),
        backend=check_backend(backend),
    )
    return y


def sample_noise(
    n: int,
    key: bytes,
    *,
    kind: NoiseKind,
    param: float,
    threads: int | None = None,
    backend: Backend = "auto",
) -> npt.NDArray[np.int64]:
    """``n`` independent integer noise samples from ``key``'s keystream.

    Parameters
    ----------
    n:
        How many samples.
    key:
        16-byte noise key.
    kind, param:
        ``"discrete_gaussian"`` with param = sigma (N_Z(0, sigma^2)), ``"skellam"``
        with param = mu, the variance (Poisson(mu/2) - Poisson(mu/2)), or ``"none"``.

    Returns
    -------
    numpy.ndarray
        ``int64`` samples; the same for the same key whatever ``threads`` is.

    Raises
    ------
    ValueError
        For an unknown kind or a parameter out of range.

    Security
    --------
    The noise is what protects the aggregate: a noise key must be secret, fresh per
    vector, and never revealed (a server that learns it subtracts the noise).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.empty(n, dtype=np.int64)
    core.dp_sample_noise_into(
        out,
        key_bytes(key),
        kind=_check_kind(kind),
        param=float(param),
        threads=thread_count(threads),
        backend=check_backend(backend),
    )
    return out


@dataclass(frozen=True)
class EncodeSpec:
    """Numbers the client pipeline needs (computed by :mod:`securefl.dp.calibration`).

    Parameters
    ----------
    clip:
        c: L2 clip of the input vector.
    gamma:
        The real value of one integer step (the scale is 1/gamma).
    bits:
        b: the ring Z_{2^b}, 2 <= b <= 64.
    norm_bound, error_bound:
        Conditional rounding redraws while ``||r||_2 > norm_bound`` or
        ``||r - v||_2 > error_bound`` (v the scaled rotated vector, r its rounding).
    noise, noise_param:
        The integer noise (see :func:`sample_noise`).
    max_tries:
        Rounding attempts before giving up.
    """

    clip: float
    gamma: float
    bits: int
    norm_bound: float
    error_bound: float
    noise: NoiseKind
    noise_param: float
    max_tries: int = 32

    @property
    def dtype(self) -> np.dtype[np.uint32] | np.dtype[np.uint64]:
        """Storage dtype of the ring."""
        return ring_dtype(self.bits)


def encode(
    x: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    spec: EncodeSpec,
    *,
    rotation_key: bytes,
    rounding_key: bytes,
    noise_key: bytes,
    weight: float = 1.0,
    out: RingArray | None = None,
    threads: int | None = None,
    backend: Backend = "auto",
) -> tuple[RingArray, int]:
    """The client's DP encoding of a flat vector into Z_{2^b} (KLS section 4).

    Parameters
    ----------
    x:
        ``float32``/``float64`` vector of length d; every value must be finite.
    spec:
        The calibrated numbers.
    rotation_key, rounding_key, noise_key:
        16-byte keys: the rotation's (public, per round), the rounding coins' and the
        noise's (secret, fresh per vector).
    weight:
        A public weight in (0, 1] multiplied in after clipping (keeps the L2 norm <= c).
    out:
        Optional C-contiguous destination of the padded length and dtype ``spec.dtype``
        (reused across rounds, it saves the page faults of a fresh array).

    Returns
    -------
    (numpy.ndarray, int)
        The ring vector of the padded length D (dtype ``spec.dtype``) and the number
        of rounding attempts used.

    Raises
    ------
    TypeError
        If ``x`` is not a float32/float64 numpy array.
    ValueError
        If ``x`` is not finite (first index named), the spec is invalid, or rounding
        failed ``spec.max_tries`` times.

    Security
    --------
    ``rounding_key`` and ``noise_key`` must never be reused for another vector nor
    revealed; the output must only ever leave the client masked by SecAgg.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    src = np.ascontiguousarray(x).reshape(-1)
    if out is None:
        out = np.empty(padded_dimension(src.size), dtype=spec.dtype)
    elif not isinstance(out, np.ndarray) or out.dtype != spec.dtype:
        raise TypeError(f"out must be a numpy array of dtype {spec.dtype}")
    tries = core.dp_encode_into(
        src,
        out,
        key_bytes(rotation_key, "rotation_key"),
        key_bytes(rounding_key, "rounding_key"),
        key_bytes(noise_key, "noise_key"),
        clip=float(spec.clip),
        weight=float(weight),
        gamma=float(spec.gamma),
        bits=int(spec.bits),
        norm_bound=float(spec.norm_bound),
        error_bound=float(spec.error_bound),
        max_tries=int(spec.max_tries),
        noise=_check_kind(spec.noise),
        noise_param=float(spec.noise_param),
        threads=thread_count(threads),
        backend=check_backend(backend),
    )
    return out, int(tries)


def decode(
    total: RingArray,
    dimension: int,
    *,
    gamma: float,
    bits: int,
    rotation_key: bytes,
    threads: int | None = None,
    backend: Backend = "auto",
) -> npt.NDArray[np.float64]:
    """The server's decoding of a ring sum: centre, times gamma, inverse rotation.

    Parameters
    ----------
    total:
        The ring sum (``uint32``/``uint64``, values < 2^b) of padded length D.
    dimension:
        d <= D: how many leading coordinates to return.
    gamma, bits, rotation_key:
        As used by the clients.

    Returns
    -------
    numpy.ndarray
        ``float64`` vector of length d: the sum of the clients' clipped, weighted
        vectors plus the sum of their noise (times gamma, rotated back).

    Raises
    ------
    TypeError, ValueError
        For a wrong dtype, a length that is not a power of two, or values >= 2^b.
    """
    if not isinstance(total, np.ndarray):
        raise TypeError(f"total must be a numpy.ndarray, got {type(total).__name__}")
    src = np.ascontiguousarray(total).reshape(-1)
    if not 1 <= dimension <= src.size:
        raise ValueError(f"dimension must be in [1, {src.size}], got {dimension}")
    out = np.empty(dimension, dtype=np.float64)
    core.dp_decode_into(
        src,
        out,
        key_bytes(rotation_key, "rotation_key"),
        gamma=float(gamma),
        bits=int(bits),
        threads=thread_count(threads),
        backend=check_backend(backend),
    )
    return out
