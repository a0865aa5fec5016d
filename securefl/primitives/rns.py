"""Modular sums of RNS polynomials: the server-side addition of CKKS ciphertexts.

A SEAL/TenSEAL ciphertext's data is ``uint64`` coefficients laid out ``[size][L][N]``
(``size`` polynomials, L limbs, one per prime q_l of the modulus chain, N coefficients
each). Adding ciphertexts adds these arrays limb by limb modulo q_l.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from securefl.primitives._native import core, thread_count

__all__ = ["MAX_MODULUS", "rns_sum"]

MAX_MODULUS = 1 << 62
"""Moduli must be below 2^62 (SEAL's are at most 61 bits)."""


def _moduli_array(moduli: Sequence[int] | npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    if isinstance(moduli, np.ndarray):
        return moduli
    values = [operator.index(q) for q in moduli]
    for limb, q in enumerate(values):
        if not 2 <= q < MAX_MODULUS:
            raise ValueError(f"modulus q_{limb} = {q} is not in [2, 2^62)")
    return np.array(values, dtype=np.uint64)


def rns_sum(
    inputs: Sequence[npt.NDArray[np.uint64]],
    moduli: Sequence[int] | npt.NDArray[np.uint64],
    *,
    out: npt.NDArray[np.uint64] | None = None,
    threads: int | None = None,
) -> npt.NDArray[np.uint64]:
    """Return ``sum_j inputs[j] mod q_l`` limb by limb.

    Parameters
    ----------
    inputs:
        n >= 1 C-contiguous ``uint64`` arrays of one shape ``(size, L, N)``, every
        coefficient of limb l below q_l.
    moduli:
        q_0 .. q_{L-1}, each in [2, 2^62).
    out:
        Optional destination of the same shape; may be one of the inputs.
    threads:
        Worker threads; ``None`` uses every available core.

    Raises
    ------
    TypeError, ValueError
        On wrong dtypes or shapes, bad moduli, or an input coefficient >= its modulus;
        the message names the first offending input (its position in ``inputs``) and
        coefficient. When ``out`` is one of the inputs (an accumulator), every input is
        checked before anything is written, so the accumulator is left unchanged;
        otherwise ``out`` is unspecified after an error.
    """
    arrays = list(inputs)
    if not arrays:
        raise ValueError("rns_sum needs at least one input")
    q = _moduli_array(moduli)
    if out is None:
        first = arrays[0]
        if not isinstance(first, np.ndarray):
            raise TypeError(f"inputs[0] must be a numpy.ndarray, got {type(first).__name__}")
        out = np.empty(first.shape, dtype=np.uint64)
    core.rns_sum(arrays, q, out, threads=thread_count(threads))
    return out
