"""CKKS parameters and contexts: one for the clients (secret key), one for the server.

One party -- a key authority or the first client -- generates the keys and hands every
client a :class:`ClientContext` (with the secret key) over an authenticated, confidential
channel, and the server a :class:`ServerContext` built from :meth:`ClientContext.server_bytes`,
which holds the parameters only: no secret key, and none of the public, relinearization
or Galois keys either, since adding ciphertexts needs none of them. The defaults are
NVIDIA FLARE's (N = 8192, coefficient moduli [60, 40, 40] bits, scale 2^40).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from securefl.ckks._backend import sealapi, tenseal
from securefl.ckks.wire import Spec
from securefl.errors import ConfigError

__all__ = ["CKKSParams", "ClientContext", "ServerContext"]

_DEGREES = (1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters.

    Parameters
    ----------
    poly_modulus_degree:
        N, a power of two in [1024, 32768]; a ciphertext holds N/2 values. Larger N allows
        more modulus bits at 128-bit security and halves the ciphertext count per value.
    coeff_mod_bit_sizes:
        Bit sizes of the coefficient moduli. The last is SEAL's special prime, used only
        for key switching; the others form the data level that ciphertexts live at and
        that the server sums over. SEAL refuses sizes above its 128-bit-security limit for N
        (218 bits in total at N = 8192, 438 at N = 16384).
    scale_bits:
        log2 of the CKKS scale: values are encoded times 2^scale_bits. It sets the
        precision (about scale_bits - 20 bits after the point at N = 8192).

    Raises
    ------
    ConfigError
        If N is not an allowed power of two, fewer than two moduli are given, a modulus size
        is not in [20, 60], or the data level leaves fewer than 20 bits above the scale for
        the integer part of the aggregate.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        if self.poly_modulus_degree not in _DEGREES:
            raise ConfigError(f"poly_modulus_degree must be one of {_DEGREES}")
        sizes = self.coeff_mod_bit_sizes
        if not isinstance(sizes, tuple) or len(sizes) < 2:
            raise ConfigError("coeff_mod_bit_sizes must be a tuple of at least two bit sizes")
        if any(type(b) is not int or not 20 <= b <= 60 for b in sizes):
            raise ConfigError(f"coefficient modulus sizes must be ints in [20, 60], got {sizes}")
        if type(self.scale_bits) is not int or not 20 <= self.scale_bits <= 60:
            raise ConfigError(f"scale_bits must be an int in [20, 60], got {self.scale_bits}")
        # Decryption is correct while |sum * scale| < Q/2 over the data level's moduli.
        if sum(sizes[:-1]) - self.scale_bits < 20:
            raise ConfigError(
                f"the data level ({sum(sizes[:-1])} bits) leaves fewer than 20 bits above "
                f"the scale (2^{self.scale_bits}); add a modulus or lower the scale"
            )


def _spec(ctx: Any) -> Spec:
    seal_ctx = ctx.seal_context().data
    data_level = seal_ctx.first_context_data()
    parms = data_level.parms()
    moduli = tuple(int(m.value()) for m in parms.coeff_modulus())
    pid = [int(w) for w in data_level.parms_id()]
    return Spec(
        int(parms.poly_modulus_degree()),
        moduli,
        (pid[0], pid[1], pid[2], pid[3]),
        float(ctx.global_scale),
    )


def _check_ckks(ctx: Any) -> None:
    scheme = ctx.seal_context().data.first_context_data().parms().scheme()
    # TenSEAL's own enum type differs from sealapi's: compare by name.
    if getattr(scheme, "name", None) != "CKKS":
        raise ConfigError(f"the context's scheme is {scheme}, not CKKS")


def _load(data: bytes | bytearray | memoryview) -> Any:
    ts = tenseal()
    try:
        return ts.context_from(bytes(data))
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on bad bytes
        raise ConfigError(f"not a TenSEAL context: {exc}") from None


class ServerContext:
    """The server's view of a CKKS context: parameters only, never a secret key.

    Construct with :meth:`from_bytes` or :meth:`from_tenseal`.
    """

    def __init__(self, ctx: Any) -> None:
        # The server must be unable to decrypt; refuse rather than silently strip the key.
        if ctx.has_secret_key() or ctx.is_private():
            raise ConfigError(
                "a server context must not hold the secret key; "
                "use ClientContext.server_bytes() to export one"
            )
        _check_ckks(ctx)
        self._ctx = ctx
        self.spec: Spec = _spec(ctx)
        """The data level every client ciphertext must be at."""

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ServerContext:
        """Load a serialized TenSEAL context that holds no secret key.

        Raises
        ------
        ConfigError
            If the bytes are not a TenSEAL context, it is not CKKS, or it holds a secret key.
        """
        return cls(_load(data))

    @classmethod
    def from_tenseal(cls, ctx: Any) -> ServerContext:
        """Wrap a ``tenseal.Context``; the server keeps a reference, never a copy.

        Raises
        ------
        ConfigError
            If it is not CKKS or holds a secret key.
        """
        return cls(ctx)

    @property
    def tenseal(self) -> Any:
        """The underlying ``tenseal.Context`` (public)."""
        return self._ctx

    @property
    def poly_modulus_degree(self) -> int:
        """N."""
        return self.spec.poly_modulus_degree

    @property
    def moduli(self) -> tuple[int, ...]:
        """q_0 .. q_{L-1} of the data level."""
        return self.spec.moduli


@dataclass(frozen=True, eq=False)
class SealTools:
    """SEAL's objects for one client context (``tenseal.sealapi``), built once.

    Parameters
    ----------
    context:
        The ``SEALContext``.
    decryptor:
        A ``Decryptor`` holding the secret key.
    encoder:
        A ``CKKSEncoder``.
    evaluator:
        An ``Evaluator``.
    """

    context: Any
    decryptor: Any
    encoder: Any
    evaluator: Any

    def __repr__(self) -> str:
        return "SealTools(secret key held)"


class ClientContext:
    """A CKKS context with the secret key, for clients.

    Construct with :meth:`generate` or :meth:`from_bytes`.

    Security
    --------
    It holds the secret key that decrypts every client's update: share it only among the
    clients, over confidential channels, never with the server. The same key encrypts
    every round; CKKS decryption results leak information about the noise, so do not
    publish decrypted aggregates beyond the clients either.
    """

    def __init__(self, ctx: Any) -> None:
        if not ctx.has_secret_key():
            raise ConfigError("a client context needs the secret key")
        _check_ckks(ctx)
        self._ctx = ctx
        self.spec: Spec = _spec(ctx)
        """The data level of fresh ciphertexts."""
        self._tools: SealTools | None = None

    def __repr__(self) -> str:
        spec = self.spec
        n, limbs = spec.poly_modulus_degree, len(spec.moduli)
        return f"ClientContext(N={n}, limbs={limbs}, secret key held)"

    def __reduce__(self) -> NoReturn:
        # Serialization of the key must be an explicit act: to_bytes().
        raise TypeError("ClientContext holds the secret key and cannot be pickled")

    @classmethod
    def generate(cls, params: CKKSParams | None = None) -> ClientContext:
        """Generate fresh keys.

        Parameters
        ----------
        params:
            The parameters; FLARE's defaults if omitted.

        Raises
        ------
        ConfigError
            If SEAL rejects the parameters (for example above the security limit for N).
        """
        params = CKKSParams() if params is None else params
        ts = tenseal()
        try:
            ctx = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
            )
        except ValueError as exc:
            raise ConfigError(f"SEAL rejects {params}: {exc}") from None
        ctx.global_scale = 2.0**params.scale_bits
        return cls(ctx)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ClientContext:
        """Load :meth:`to_bytes` output.

        Raises
        ------
        ConfigError
            If the bytes are not a TenSEAL CKKS context with a secret key.
        """
        return cls(_load(data))

    def to_bytes(self) -> bytes:
        """Serialize with the secret and public keys, without relinearization or Galois keys.

        Security
        --------
        The result contains the secret key.
        """
        data: bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return data

    def server_bytes(self) -> bytes:
        """Serialize the parameters only (about 100 bytes), for :meth:`ServerContext.from_bytes`."""
        data: bytes = self._ctx.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return data

    def server_context(self) -> ServerContext:
        """The matching :class:`ServerContext`, via :meth:`server_bytes`."""
        return ServerContext.from_bytes(self.server_bytes())

    @property
    def tenseal(self) -> Any:
        """The underlying ``tenseal.Context`` (holds the secret key)."""
        return self._ctx

    def _seal_tools(self) -> SealTools:
        """SEAL's decryptor, encoder and evaluator for this key, built on first use.

        Security
        --------
        The decryptor releases exact decryptions: securefl uses it only through
        :mod:`securefl.ckks.flooding`, which floods every plaintext first.
        """
        if self._tools is None:
            seal = sealapi()
            context = self._ctx.seal_context().data
            self._tools = SealTools(
                context,
                seal.Decryptor(context, self._ctx.secret_key().data),
                seal.CKKSEncoder(context),
                seal.Evaluator(context),
            )
        return self._tools

    def _secret_key_words(self) -> npt.NDArray[np.uint64]:
        """The secret key's coefficients (NTT form, every limb of the key level), for
        deriving keys from it (:mod:`securefl.ckks.contributions`).

        Security
        --------
        This is the secret key: never log, store or send it.
        """
        data = self._ctx.secret_key().data.data()
        count = int(data.coeff_count())
        return np.fromiter(map(data.__getitem__, range(count)), dtype=np.uint64, count=count)

    @property
    def poly_modulus_degree(self) -> int:
        """N."""
        return self.spec.poly_modulus_degree

    @property
    def slots(self) -> int:
        """Values per ciphertext, N/2."""
        return self.spec.slots
