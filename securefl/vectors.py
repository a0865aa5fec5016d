"""Model updates as one flat float vector, and back (Bonawitz et al., CCS 2017, section 4).

Secure aggregation adds vectors: each client masks (or encrypts) one vector x_u of
dimension m and the server learns only the sum. A model update, however, arrives as a
numpy array, a dict or list of arrays, or a torch ``state_dict``. :func:`flatten` turns
any of these into one 1-D float vector and a :class:`Layout`; :func:`unflatten` uses the
layout to restore names, order, shapes and dtypes after aggregation.

Every client of a round must produce the same layout, or the coordinates of the sum
would mix different parameters; the protocol compares layouts with ``==`` and ships
them with :meth:`Layout.to_bytes`, whose format is versioned and strictly checked.

torch is optional and is imported only when a layout needs it; a torch tensor is
recognised without importing torch (an object can only be a tensor if torch is loaded).
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from securefl.errors import BackendUnavailable, InvalidMessage

__all__ = [
    "Layout",
    "LayoutEntry",
    "Update",
    "flatten",
    "flatten_all",
    "iter_flattened",
    "unflatten",
    "weighted_mean",
]

Kind: TypeAlias = Literal["array", "dict", "list", "tuple", "torch", "tensor"]
Update: TypeAlias = Any
"""An update: ndarray, dict/list/tuple of ndarrays, torch tensor or dict of tensors."""

MAX_ENTRIES = 1_000_000
MAX_KEY_BYTES = 1024
MAX_NDIM = 32
MAX_SIZE = 2**40  # exclusive bound on the total number of elements

_MAGIC = b"SFLY"
_VERSION = 1
_HEADER = struct.Struct(">4sBBIQ")  # magic, version, kind, entry count, total size
_ENTRY = struct.Struct(">HBB")  # key length, dtype code, ndim
_DIM = struct.Struct(">Q")

# Wire codes are part of the format: append, never renumber.
_KIND_CODES: dict[str, int] = {
    "array": 0,
    "dict": 1,
    "list": 2,
    "tuple": 3,
    "torch": 4,
    "tensor": 5,
}
_DTYPE_CODES: dict[str, int] = {
    "bool": 0,
    "uint8": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "float16": 6,
    "bfloat16": 7,
    "float32": 8,
    "float64": 9,
    "uint16": 10,
    "uint32": 11,
    "uint64": 12,
}
_KINDS_BY_CODE = {code: kind for kind, code in _KIND_CODES.items()}
_DTYPES_BY_CODE = {code: name for name, code in _DTYPE_CODES.items()}

_TORCH_KINDS = frozenset({"torch", "tensor"})
_KEYED_KINDS = frozenset({"dict", "torch"})
_SINGLE_KINDS = frozenset({"array", "tensor"})
# float32 holds every value of these exactly; the others need float64.
_FLOAT32_EXACT = frozenset({"bool", "uint8", "int8", "int16", "uint16", "float16", "bfloat16"})
_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


@dataclass(frozen=True)
class LayoutEntry:
    """One leaf of an update: where it lives in the flat vector and how to rebuild it.

    Parameters
    ----------
    key:
        The dict key (``str``) for kinds ``"dict"`` and ``"torch"``, the index for
        ``"list"`` and ``"tuple"``, ``None`` for a single ``"array"`` or ``"tensor"``.
    shape:
        The leaf's shape.
    dtype:
        The leaf's dtype name: ``"float32"``, ``"int64"``, ``"bfloat16"`` (torch only), ...
    offset:
        Index of the leaf's first element in the flat vector.
    size:
        Number of elements, ``prod(shape)``.
    """

    key: str | int | None
    shape: tuple[int, ...]
    dtype: str
    offset: int
    size: int


@dataclass(frozen=True)
class Layout:
    """The structure of an update: container kind, ordered leaves and total size.

    Layouts are hashable and compare with ``==``; all clients of a round must have
    equal layouts. Construct them with :func:`flatten` or :meth:`from_bytes`.

    Parameters
    ----------
    kind:
        ``"array"``, ``"dict"``, ``"list"``, ``"tuple"`` (numpy leaves), ``"torch"`` (a
        dict of torch tensors such as a ``state_dict``) or ``"tensor"`` (one tensor).
    entries:
        The leaves in flat-vector order, packed back to back from offset 0.
    size:
        Total number of elements, ``sum(e.size for e in entries)``, below 2**40.

    Raises
    ------
    ValueError
        If the fields are inconsistent or exceed the limits: at most 1_000_000
        entries, keys at most 1024 UTF-8 bytes, at most 32 dimensions.
    """

    kind: Kind
    entries: tuple[LayoutEntry, ...]
    size: int

    def __post_init__(self) -> None:
        if self.kind not in _KIND_CODES:
            raise ValueError(f"unknown layout kind {self.kind!r}")
        if not isinstance(self.entries, tuple):
            raise ValueError("layout entries must be a tuple")
        n = len(self.entries)
        if not 1 <= n <= MAX_ENTRIES:
            raise ValueError(f"a layout needs 1 to {MAX_ENTRIES} entries, got {n}")
        if self.kind in _SINGLE_KINDS and n != 1:
            raise ValueError(f"a {self.kind!r} layout has exactly one entry, got {n}")
        keys: set[str] = set()
        offset = 0
        for i, e in enumerate(self.entries):
            if not isinstance(e, LayoutEntry):
                raise ValueError(f"entry {i} is a {type(e).__name__}, not a LayoutEntry")
            _check_key(self.kind, i, e.key, keys)
            if e.dtype not in _DTYPE_CODES:
                raise ValueError(f"entry {e.key!r}: unsupported dtype {e.dtype!r}")
            # bfloat16 has no numpy equivalent: only torch can restore it.
            if e.dtype == "bfloat16" and self.kind not in _TORCH_KINDS:
                raise ValueError(f"entry {e.key!r}: bfloat16 needs a torch layout")
            if not isinstance(e.shape, tuple) or len(e.shape) > MAX_NDIM:
                raise ValueError(f"entry {e.key!r}: shape must be a tuple of <= {MAX_NDIM} dims")
            size = 1
            for d in e.shape:
                if type(d) is not int or not 0 <= d < MAX_SIZE:
                    raise ValueError(f"entry {e.key!r}: bad dimension {d!r} in {e.shape}")
                size *= d
                if size >= MAX_SIZE:
                    raise ValueError(f"entry {e.key!r}: shape {e.shape} has >= 2**40 elements")
            # Offsets are implied by order; a gap or overlap would misplace coordinates.
            if e.size != size or e.offset != offset:
                raise ValueError(
                    f"entry {e.key!r}: offset/size ({e.offset}, {e.size}) should be "
                    f"({offset}, {size})"
                )
            offset += size
            if offset >= MAX_SIZE:
                raise ValueError("layout total size must be < 2**40")
        if self.size != offset:
            raise ValueError(f"layout size {self.size} != sum of entry sizes {offset}")

    @property
    def dtype(self) -> np.dtype[np.floating[Any]]:
        """The dtype :func:`flatten` gives the vector: float64 if any leaf needs it."""
        if all(e.dtype in _FLOAT32_EXACT or e.dtype == "float32" for e in self.entries):
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def difference(
        self, other: Layout, *, this: str = "this", that: str = "the other"
    ) -> str | None:
        """What differs from ``other``, in words; ``None`` if the layouts are equal.

        The first difference of each kind is named: the container (a dict of numpy
        arrays, a torch ``state_dict``, a list, ...), the keys (missing, extra, or the
        same keys in another order), the number of leaves, then every leaf whose shape
        or dtype differs (at most 5, then a count). ``this`` and ``that`` name the two
        sides in the sentence, e.g. ``"client 2"`` and ``"client 0"``.
        """
        if self == other:
            return None
        if self.kind != other.kind:
            return f"{this} sends {_KIND_WORDS[self.kind]}, {that} {_KIND_WORDS[other.kind]}"
        if self.kind in _KEYED_KINDS:
            mine = [str(e.key) for e in self.entries]
            theirs = [str(e.key) for e in other.entries]
            if mine != theirs:
                mine_set, theirs_set = set(mine), set(theirs)
                missing = [k for k in theirs if k not in mine_set]
                extra = [k for k in mine if k not in theirs_set]
                if not missing and not extra:
                    return (
                        f"the same keys in another order: {this} has {_names(mine)}, "
                        f"{that} {_names(theirs)}"
                    )
                parts = []
                if missing:
                    parts.append(f"lacks {_quoted(missing)}")
                if extra:
                    parts.append(f"has {_quoted(extra)}, which {that} does not")
                return f"{this} {' and '.join(parts)}"
        if len(self.entries) != len(other.entries):
            return f"{len(self.entries)} leaves at {this}, {len(other.entries)} at {that}"
        diffs = []
        for a, b in zip(self.entries, other.entries, strict=True):
            leaf = "" if a.key is None else f"{_leaf_name(a.key)} has "
            if a.shape != b.shape:
                diffs.append(f"{leaf}shape {a.shape} at {this}, {b.shape} at {that}")
            if a.dtype != b.dtype:
                diffs.append(f"{leaf}dtype {a.dtype} at {this}, {b.dtype} at {that}")
        if len(diffs) > 5:
            diffs[5:] = [f"and {len(diffs) - 5} more"]
        return "; ".join(diffs) or "the layouts differ"

    def locate(self, index: int) -> str:
        """Where coordinate ``index`` of the flat vector lives: ``'w'[1, 0]``, ``[3]``.

        Raises
        ------
        IndexError
            If ``index`` is not in ``[0, size)``.
        """
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} is outside a layout of size {self.size}")
        low, high = 0, len(self.entries) - 1
        # The last entry starting at or before index: never an empty one, which shares
        # its offset with the entry after it.
        while low < high:
            mid = (low + high + 1) // 2
            if self.entries[mid].offset <= index:
                low = mid
            else:
                high = mid - 1
        e = self.entries[low]
        name = "" if e.key is None else repr(e.key) if isinstance(e.key, str) else f"[{e.key}]"
        if not e.shape:
            return name or "[()]"
        position = np.unravel_index(index - e.offset, e.shape)
        return name + f"[{', '.join(str(int(p)) for p in position)}]"

    def float_leaves(self) -> Layout:
        """This layout with every integer and bool leaf as ``float64``.

        A weighted mean of integers is not an integer: :func:`securefl.aggregate`
        restores means with this layout, so they are never rounded. Float leaves keep
        their dtype.
        """
        if all(e.dtype in _FLOAT_DTYPES for e in self.entries):
            return self
        entries = tuple(
            e
            if e.dtype in _FLOAT_DTYPES
            else LayoutEntry(e.key, e.shape, "float64", e.offset, e.size)
            for e in self.entries
        )
        return Layout(self.kind, entries, self.size)

    def to_bytes(self) -> bytes:
        """Serialize deterministically; equal layouts give equal bytes.

        Format (all integers big-endian, offsets and sizes are implied by order)::

            magic    4 bytes  b"SFLY"
            version  u8       1
            kind     u8       0 array, 1 dict, 2 list, 3 tuple, 4 torch, 5 tensor
            count    u32      number of entries, 1..1_000_000
            size     u64      total elements, < 2**40, must equal the sum of the entries
            count times:
              key_len  u16    0..1024; 0 unless kind is dict or torch
              dtype    u8     0 bool, 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
                              6 float16, 7 bfloat16, 8 float32, 9 float64,
                              10 uint16, 11 uint32, 12 uint64
              ndim     u8     0..32
              key      key_len bytes of UTF-8
              dims     ndim times u64
        """
        parts = [
            _HEADER.pack(_MAGIC, _VERSION, _KIND_CODES[self.kind], len(self.entries), self.size)
        ]
        for e in self.entries:
            key = e.key.encode("utf-8") if isinstance(e.key, str) else b""
            parts.append(_ENTRY.pack(len(key), _DTYPE_CODES[e.dtype], len(e.shape)))
            parts.append(key)
            parts.append(struct.pack(f">{len(e.shape)}Q", *e.shape))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Layout:
        """Parse :meth:`to_bytes` output; only canonical encodings are accepted.

        Raises
        ------
        InvalidMessage
            If the bytes are truncated, have trailing data, a wrong magic or version,
            unknown codes, invalid UTF-8, duplicate keys, or break any layout rule or
            limit. Nothing else is raised for malformed bytes.
        TypeError
            If ``data`` is not bytes-like.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"layout bytes must be bytes-like, got {type(data).__name__}")
        buf = bytes(data)
        if len(buf) < _HEADER.size:
            raise InvalidMessage(f"layout: {len(buf)} bytes is shorter than the header")
        magic, version, kind_code, count, total = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise InvalidMessage("layout: bad magic")
        if version != _VERSION:
            raise InvalidMessage(f"layout: unsupported version {version}")
        kind = _KINDS_BY_CODE.get(kind_code)
        if kind is None:
            raise InvalidMessage(f"layout: unknown kind code {kind_code}")
        # Checked before the loop so that a huge count cannot make us allocate or spin.
        if not 1 <= count <= MAX_ENTRIES:
            raise InvalidMessage(f"layout: entry count {count} not in [1, {MAX_ENTRIES}]")
        if total >= MAX_SIZE:
            raise InvalidMessage("layout: total size must be < 2**40")
        pos = _HEADER.size
        entries: list[LayoutEntry] = []
        offset = 0
        for i in range(count):
            if len(buf) - pos < _ENTRY.size:
                raise InvalidMessage(f"layout: truncated at entry {i}")
            key_len, dtype_code, ndim = _ENTRY.unpack_from(buf, pos)
            pos += _ENTRY.size
            if key_len > MAX_KEY_BYTES:
                raise InvalidMessage(f"layout: entry {i} key of {key_len} bytes > {MAX_KEY_BYTES}")
            dtype = _DTYPES_BY_CODE.get(dtype_code)
            if dtype is None:
                raise InvalidMessage(f"layout: entry {i} has unknown dtype code {dtype_code}")
            if ndim > MAX_NDIM:
                raise InvalidMessage(f"layout: entry {i} has {ndim} dims > {MAX_NDIM}")
            if len(buf) - pos < key_len + ndim * _DIM.size:
                raise InvalidMessage(f"layout: truncated at entry {i}")
            key: str | int | None
            if kind in _KEYED_KINDS:
                try:
                    key = buf[pos : pos + key_len].decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidMessage(f"layout: entry {i} key is not valid UTF-8") from None
            elif key_len != 0:
                raise InvalidMessage(f"layout: entry {i} of a {kind!r} layout has a key")
            else:
                key = None if kind in _SINGLE_KINDS else i
            pos += key_len
            shape = struct.unpack_from(f">{ndim}Q", buf, pos)
            pos += ndim * _DIM.size
            size = math.prod(shape)
            entries.append(LayoutEntry(key, shape, dtype, offset, size))
            offset += size
        if pos != len(buf):
            raise InvalidMessage(f"layout: {len(buf) - pos} trailing bytes")
        try:
            return cls(kind, tuple(entries), total)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidMessage(f"layout: {exc}") from None


_KIND_WORDS: dict[str, str] = {
    "array": "a numpy array",
    "dict": "a dict of numpy arrays",
    "list": "a list of numpy arrays",
    "tuple": "a tuple of numpy arrays",
    "torch": "a dict of torch tensors (state_dict)",
    "tensor": "a torch tensor",
}


def _leaf_name(key: str | int) -> str:
    return repr(key) if isinstance(key, str) else f"leaf {key}"


def _names(keys: list[str], limit: int = 8) -> str:
    """A key list for a message, shortened after ``limit`` keys."""
    if len(keys) <= limit:
        return repr(keys)
    return repr(keys[:limit])[:-1] + f", ... ({len(keys)} keys)]"


def _quoted(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"


def _check_key(kind: str, index: int, key: object, seen: set[str]) -> None:
    if kind in _KEYED_KINDS:
        if not isinstance(key, str):
            raise ValueError(f"entry {index}: a {kind!r} layout needs str keys, got {key!r}")
        try:
            encoded = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"entry {index}: key {key!r} is not encodable as UTF-8") from None
        if len(encoded) > MAX_KEY_BYTES:
            raise ValueError(f"entry {index}: key longer than {MAX_KEY_BYTES} UTF-8 bytes")
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen.add(key)
    elif kind in _SINGLE_KINDS:
        if key is not None:
            raise ValueError(f"a {kind!r} layout has key None, got {key!r}")
    elif type(key) is not int or key != index:
        raise ValueError(f"entry {index} of a {kind!r} layout must have key {index}, got {key!r}")


def _torch_module() -> Any:
    """torch if it is already imported, else None; never imports it."""
    return sys.modules.get("torch")


def _is_tensor(x: object) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def _numpy_dtype_name(key: str | int | None, leaf: npt.NDArray[Any]) -> str:
    # MaskedArray subclasses ndarray; flattening would silently drop the mask.
    if isinstance(leaf, np.ma.MaskedArray):
        raise TypeError(f"entry {key!r}: masked arrays are not supported")
    name = leaf.dtype.name
    if name not in _DTYPE_CODES or name == "bfloat16":
        raise TypeError(f"entry {key!r}: unsupported dtype {leaf.dtype}")
    return name


def _torch_dtype_name(key: str | int | None, leaf: Any) -> str:
    torch = _torch_module()
    if leaf.device.type != "cpu":
        # Copying from an accelerator is the caller's choice (and cost), not ours.
        raise TypeError(
            f"entry {key!r}: tensor is on device {leaf.device}; move it to the CPU first"
        )
    if leaf.layout != torch.strided:
        raise TypeError(f"entry {key!r}: only dense (strided) tensors, got {leaf.layout}")
    if leaf.is_quantized:
        raise TypeError(f"entry {key!r}: quantized tensors are not supported")
    name = str(leaf.dtype).removeprefix("torch.")
    if name not in _DTYPE_CODES:
        raise TypeError(f"entry {key!r}: unsupported dtype {leaf.dtype}")
    return name


def _leaves(update: Update) -> tuple[Kind, list[tuple[str | int | None, Any]]]:
    if isinstance(update, np.ndarray):
        return "array", [(None, update)]
    if _is_tensor(update):
        return "tensor", [(None, update)]
    items: list[tuple[str | int | None, Any]]
    kind: Kind
    if isinstance(update, Mapping):
        for k in update:
            if not isinstance(k, str):
                raise TypeError(f"dict keys must be str, got {k!r}")
        items = list(update.items())
        kind = "dict"
    elif isinstance(update, list | tuple):
        items = list(enumerate(update))
        kind = "list" if isinstance(update, list) else "tuple"
    else:
        raise TypeError(
            "an update is a numpy array, a dict/list/tuple of arrays, a torch tensor or "
            f"a dict of torch tensors (state_dict), got {type(update).__name__}"
        )
    if not items:
        raise ValueError(f"cannot flatten an empty {type(update).__name__}")
    tensors = [_is_tensor(v) for _, v in items]
    for (key, value), is_tensor in zip(items, tensors, strict=True):
        if isinstance(value, Mapping | list | tuple):
            raise TypeError(
                f"entry {key!r} is a {type(value).__name__}: nested containers are not "
                "supported; flatten the structure into one dict with path-like keys"
            )
        if not (is_tensor or isinstance(value, np.ndarray)):
            raise TypeError(
                f"entry {key!r}: leaves must be numpy arrays or torch tensors, "
                f"got {type(value).__name__}"
            )
    if any(tensors):
        if not all(tensors):
            raise TypeError("an update mixes torch tensors and numpy arrays; use one kind")
        if kind != "dict":
            raise TypeError(
                f"a {kind} of torch tensors is not supported; pass a dict of tensors "
                "(for example a state_dict, or {str(i): t for i, t in enumerate(tensors)})"
            )
        kind = "torch"
    return kind, items


def flatten(update: Update) -> tuple[npt.NDArray[np.floating[Any]], Layout]:
    """Concatenate every leaf of an update into one 1-D float vector.

    Leaves are taken in order: dict insertion order (a ``state_dict``'s order is kept),
    list and tuple index order; each leaf is raveled in C order. The vector is float64
    if any leaf is float64, int32, int64, uint32 or uint64 (float32 cannot hold them
    exactly), else float32. int64/uint64 values beyond 2**53 lose precision. Each leaf
    is copied once, straight into the vector; non-contiguous leaves are fine.
    Non-finite values pass through (the quantizer rejects them).

    Parameters
    ----------
    update:
        A numpy array; a dict, list or tuple of numpy arrays; a CPU torch tensor; or a
        dict of CPU torch tensors such as ``model.state_dict()``. Leaf dtypes: bool,
        uint8/16/32/64, int8/16/32/64, float16/32/64, and bfloat16 for torch. Gradients
        are not required and not tracked.

    Returns
    -------
    (vector, layout):
        The C-contiguous 1-D vector and the :class:`Layout` that restores the update.

    Raises
    ------
    TypeError
        For an unsupported container or leaf type, nested containers, mixed numpy and
        torch leaves, non-str dict keys, an unsupported dtype (complex, object, str, ...),
        a tensor not on the CPU (the message names the key and device), or a sparse or
        quantized tensor.
    ValueError
        For an empty dict, list or tuple, or a layout over the limits of :class:`Layout`.
    """
    kind, items = _leaves(update)
    torch_leaves = kind in _TORCH_KINDS
    entries: list[LayoutEntry] = []
    offset = 0
    for key, leaf in items:
        name = _torch_dtype_name(key, leaf) if torch_leaves else _numpy_dtype_name(key, leaf)
        shape = tuple(int(d) for d in leaf.shape)
        size = math.prod(shape)
        entries.append(LayoutEntry(key, shape, name, offset, size))
        offset += size
    layout = Layout(kind, tuple(entries), offset)
    vector = np.empty(layout.size, dtype=layout.dtype)
    if torch_leaves:
        torch = _torch_module()
        with torch.no_grad():
            out = torch.from_numpy(vector)
            for e, (_, leaf) in zip(layout.entries, items, strict=True):
                # copy_ converts dtype and strides in one pass: no .contiguous() copy.
                out[e.offset : e.offset + e.size].view(e.shape).copy_(leaf.detach())
    else:
        for e, (_, leaf) in zip(layout.entries, items, strict=True):
            np.copyto(vector[e.offset : e.offset + e.size].reshape(e.shape), leaf)
    return vector, layout


def iter_flattened(
    updates: Iterable[Update],
) -> Iterator[tuple[npt.NDArray[np.floating[Any]], Layout]]:
    """Flatten many clients' updates, one at a time, each checked against client 0's.

    Yields ``(vector, layout)`` per client, ``layout`` being client 0's (the one all
    share), so a caller can work on each vector before the next is flattened.

    Raises
    ------
    TypeError, ValueError
        Naming the client: its update cannot be flattened, or its layout differs from
        client 0's (names, order, shapes, dtypes or framework), which would add the
        coordinates of different parameters together.
    """
    first: Layout | None = None
    for i, update in enumerate(updates):
        try:
            x, layout = flatten(update)
        except TypeError as exc:
            raise TypeError(f"client {i}'s update: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"client {i}'s update: {exc}") from None
        if first is None:
            first = layout
        diff = layout.difference(first, this=f"client {i}", that="client 0")
        if diff is not None:
            raise ValueError(
                f"client {i}'s update does not match client 0's layout: {diff}; every "
                "client must send the same names, in the same order, with the same "
                "shapes, dtypes and framework (numpy or torch)"
            )
        yield x, first


def flatten_all(
    updates: Iterable[Update],
) -> tuple[list[npt.NDArray[np.floating[Any]]], Layout]:
    """Every client's update flattened, and the layout they share
    (:func:`iter_flattened`; the same errors).

    Raises
    ------
    ValueError
        Also if there are no updates.
    """
    pairs = list(iter_flattened(updates))
    if not pairs:
        raise ValueError("no updates to flatten")
    return [x for x, _ in pairs], pairs[0][1]


def weighted_mean(
    flat: Sequence[npt.NDArray[np.floating[Any]]],
    weights: Sequence[int],
    *,
    clip: float | None = None,
) -> npt.NDArray[np.float64]:
    """The plaintext weighted mean sum_i w_i x_i / sum_i w_i of flat vectors, in float64,
    each clipped to [-clip, clip] first when ``clip`` is given: the reference every
    protocol's result is compared with (FedAvg's aggregation).

    Raises
    ------
    ValueError
        If there are no vectors, the counts differ or the weights sum to zero.
    """
    if not flat or len(flat) != len(weights):
        raise ValueError(f"{len(flat)} vectors and {len(weights)} weights")
    total_weight = sum(weights)
    if total_weight <= 0:
        raise ValueError(f"the weights must have a positive sum, got {total_weight}")
    acc = np.zeros(flat[0].size)
    for x, w in zip(flat, weights, strict=True):
        values = x.astype(np.float64)
        if clip is not None:
            np.clip(values, -clip, clip, out=values)
        acc += w * values
    acc /= total_weight
    return acc


def _restore_leaf(seg: npt.NDArray[Any], e: LayoutEntry) -> npt.NDArray[Any]:
    """The numpy leaf for entry ``e`` (bfloat16 excluded), never aliasing ``seg``."""
    if e.dtype in _FLOAT_DTYPES:
        return np.asarray(seg.astype(e.dtype))
    # Casting NaN, inf or out-of-range floats to an integer gives arbitrary values.
    if not np.all(np.isfinite(seg)):
        raise ValueError(f"entry {e.key!r}: non-finite value for dtype {e.dtype}")
    if e.dtype == "bool":
        return np.asarray(seg >= 0.5)  # 0-d input gives a scalar; keep an array
    # A mean of integer buffers (BatchNorm's num_batches_tracked) is not an integer.
    rounded: npt.NDArray[Any] = np.rint(seg)
    info = np.iinfo(e.dtype)
    # Powers of two are exact in float32 and float64, so the bounds are exact.
    low = -(2.0 ** (info.bits - 1)) if info.min < 0 else 0.0
    high = 2.0 ** (info.bits - 1) if info.min < 0 else 2.0**info.bits
    if rounded.size and not (rounded.min() >= low and rounded.max() < high):
        raise ValueError(f"entry {e.key!r}: value out of range for dtype {e.dtype}")
    return np.asarray(rounded.astype(e.dtype))


def unflatten(vector: npt.ArrayLike, layout: Layout) -> Update:
    """Rebuild an update of the layout's kind, keys, order, shapes and dtypes.

    Float leaves are cast to their dtype. Integer leaves are rounded to the nearest
    integer (``numpy.rint``: halves go to the even neighbour) and then cast; bool
    leaves are ``value >= 0.5``. So a weighted mean of integer buffers, such as
    BatchNorm's ``num_batches_tracked``, comes back rounded; restore with
    :meth:`Layout.float_leaves` instead to keep such a mean unrounded (what
    :func:`securefl.aggregate` does). The result never shares memory with ``vector``.

    Parameters
    ----------
    vector:
        A 1-D real vector of exactly ``layout.size`` elements (typically the aggregate).
    layout:
        The layout :func:`flatten` returned.

    Returns
    -------
    Update
        A numpy array, dict, list or tuple of numpy arrays for numpy layouts; a CPU
        torch tensor or a dict of CPU torch tensors for ``"tensor"`` and ``"torch"``.

    Raises
    ------
    ValueError
        If ``vector`` is not 1-D with ``layout.size`` elements, or an integer or bool
        leaf holds a non-finite value or, once rounded, a value outside its dtype.
    TypeError
        If ``vector`` is not a real numeric array or ``layout`` is not a :class:`Layout`.
    BackendUnavailable
        If the layout holds torch tensors and torch is not installed.
    """
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a Layout, got {type(layout).__name__}")
    vec = np.asarray(vector)
    if vec.dtype.kind not in "fiu":
        raise TypeError(f"vector must be real numeric, got dtype {vec.dtype}")
    if not vec.dtype.isnative:
        vec = vec.astype(vec.dtype.newbyteorder("="))  # torch.from_numpy needs native order
    # A wrong length means the vector belongs to another model: refuse to reshape it.
    if vec.ndim != 1 or vec.shape[0] != layout.size:
        raise ValueError(f"vector must be 1-D of size {layout.size}, got shape {vec.shape}")
    torch: Any = None
    if layout.kind in _TORCH_KINDS:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(
                "this layout holds torch tensors; install torch (securefl[torch])"
            ) from None
    leaves: list[Any] = []
    for e in layout.entries:
        seg = vec[e.offset : e.offset + e.size].reshape(e.shape)
        if torch is None:
            leaves.append(_restore_leaf(seg, e))
        elif e.dtype == "bfloat16":
            # numpy has no bfloat16: torch converts from the vector's own dtype.
            leaves.append(torch.from_numpy(np.array(seg)).to(torch.bfloat16))
        else:
            leaves.append(torch.from_numpy(_restore_leaf(seg, e)))
    if layout.kind in _SINGLE_KINDS:
        return leaves[0]
    if layout.kind == "list":
        return leaves
    if layout.kind == "tuple":
        return tuple(leaves)
    return {e.key: leaf for e, leaf in zip(layout.entries, leaves, strict=True)}
