from __future__ import annotations

import math
import struct
import subprocess
import sys
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.errors import BackendUnavailable, InvalidMessage
from securefl.vectors import Layout, LayoutEntry, flatten, unflatten

NUMPY_DTYPES = [
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
]
FLOAT64_DTYPES = {"int32", "int64", "uint32", "uint64", "float64"}


def sample(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Values that use the dtype's range but stay exact in float64."""
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        lo, hi = max(int(info.min), -(2**53)), min(int(info.max), 2**53)
        x = rng.integers(lo, hi, shape, dtype=np.int64 if lo < 0 else np.uint64, endpoint=True)
        if x.size >= 2:
            x.flat[0], x.flat[1] = lo, hi
        return x.astype(dtype)
    return rng.normal(0, 100, shape).astype(dtype)


def assert_same_arrays(got: Any, want: Any) -> None:
    assert type(got) is np.ndarray
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


SHAPES = [(3, 4), (), (0,), (2, 1, 3)]


class TestNumpyRoundTrip:
    @pytest.mark.parametrize("dtype", NUMPY_DTYPES)
    def test_array(self, rng, dtype) -> None:
        x = sample(rng, (5, 3), dtype)
        vec, layout = flatten(x)
        assert layout.kind == "array" and layout.size == 15
        assert layout.entries == (LayoutEntry(None, (5, 3), dtype, 0, 15),)
        np.testing.assert_array_equal(vec, x.ravel().astype(vec.dtype))
        assert_same_arrays(unflatten(vec, layout), x)

    @pytest.mark.parametrize("dtype", NUMPY_DTYPES)
    @pytest.mark.parametrize("container", [dict, OrderedDict, list, tuple])
    def test_containers(self, rng, dtype, container) -> None:
        leaves = [sample(rng, s, dtype) for s in SHAPES]
        leaves.append(sample(rng, (7,), "float32"))  # mixed dtypes in one update
        if container in (dict, OrderedDict):
            # Not sorted on purpose: insertion order must survive.
            update = container(zip(["z", "a", "m.weight", "é"], leaves, strict=False))
            update["b"] = leaves[-1]
            keys: list[Any] = list(update)
            values = list(update.values())
        else:
            update = container(leaves)
            keys, values = list(range(len(leaves))), leaves
        vec, layout = flatten(update)
        assert vec.ndim == 1 and vec.flags.c_contiguous
        np.testing.assert_array_equal(
            vec, np.concatenate([v.ravel().astype(vec.dtype) for v in values])
        )
        assert [e.key for e in layout.entries] == keys
        assert [e.offset for e in layout.entries] == [0, 12, 13, 13, 19]
        back = unflatten(vec, layout)
        if container in (dict, OrderedDict):
            assert type(back) is dict and list(back) == keys
            for k in keys:
                assert_same_arrays(back[k], update[k])
        else:
            assert type(back) is container and len(back) == len(leaves)
            for got, want in zip(back, leaves, strict=True):
                assert_same_arrays(got, want)

    def test_order_is_insertion_order(self) -> None:
        update = {"b": np.array([[1, 2], [3, 4]], np.float32), "a": np.array([5], np.float32)}
        vec, layout = flatten(update)
        np.testing.assert_array_equal(vec, [1, 2, 3, 4, 5])
        assert [(e.key, e.offset, e.size) for e in layout.entries] == [("b", 0, 4), ("a", 4, 1)]

    def test_non_contiguous_views(self) -> None:
        base = np.arange(24, dtype=np.float32).reshape(4, 6)
        view = base.T[::2, 1:]  # strided in both axes
        assert not view.flags.c_contiguous
        fortran = np.asfortranarray(base)
        big_endian = base.astype(">f8")
        vec, layout = flatten([view, fortran, big_endian])
        assert vec.dtype == np.float64
        np.testing.assert_array_equal(
            vec, np.concatenate([view.ravel(), base.ravel(), base.ravel()])
        )
        back = unflatten(vec, layout)
        np.testing.assert_array_equal(back[0], view)
        assert back[2].dtype == np.dtype(">f8").newbyteorder("=")

    def test_vector_is_a_copy(self) -> None:
        x = np.ones(4, np.float32)
        vec, layout = flatten(x)
        vec[0] = 7
        assert x[0] == 1
        back = unflatten(vec, layout)
        vec[1] = 9
        assert back.tolist() == [7, 1, 1, 1]

    def test_non_finite_passes_through(self) -> None:
        vec, layout = flatten(np.array([np.nan, np.inf, -np.inf], np.float16))
        assert np.isnan(vec[0]) and vec[1] == np.inf and vec[2] == -np.inf
        assert np.isnan(unflatten(vec, layout)[0])


class TestOutputDtype:
    @pytest.mark.parametrize("dtype", NUMPY_DTYPES)
    def test_single_leaf(self, dtype) -> None:
        vec, layout = flatten(np.zeros(2, dtype))
        want = np.float64 if dtype in FLOAT64_DTYPES else np.float32
        assert vec.dtype == want and layout.dtype == want

    @pytest.mark.parametrize("dtype", sorted(FLOAT64_DTYPES))
    def test_one_wide_leaf_makes_it_float64(self, dtype) -> None:
        update = {"w": np.zeros(3, np.float32), "n": np.zeros((), dtype)}
        assert flatten(update)[0].dtype == np.float64

    def test_int32_needs_float64(self) -> None:
        # 2**24 + 1 is the first integer float32 cannot hold.
        vec, layout = flatten(np.array([2**24 + 1], np.int32))
        assert vec[0] == 2**24 + 1
        assert unflatten(vec, layout)[0] == 2**24 + 1


class TestIntegerRounding:
    def test_rint_half_to_even_and_bool_threshold(self) -> None:
        layout = flatten({"n": np.zeros(6, np.int64), "b": np.zeros(4, bool)})[1]
        vec = np.array([2.5, 3.5, -0.5, -1.5, 1.49, 0.51, 0.5, 0.49, 1.0, -1.0])
        back = unflatten(vec, layout)
        assert back["n"].dtype == np.int64 and back["n"].tolist() == [2, 4, 0, -2, 1, 1]
        assert back["b"].dtype == bool and back["b"].tolist() == [True, False, True, False]

    def test_weighted_mean_of_counters_is_rounded(self) -> None:
        layout = flatten(np.array(0, np.int64))[1]
        mean = (3 * 10 + 1 * 13) / 4  # 10.75
        assert unflatten(np.array([mean]), layout) == 11

    @pytest.mark.parametrize(
        ("dtype", "value"),
        [("uint8", 255.6), ("uint8", -0.6), ("int8", 127.6), ("int8", -128.6), ("int64", 2.0**63)],
    )
    def test_out_of_range_raises(self, dtype, value) -> None:
        layout = flatten(np.zeros(1, dtype))[1]
        with pytest.raises(ValueError, match="out of range"):
            unflatten(np.array([value]), layout)

    @pytest.mark.parametrize(("dtype", "value"), [("uint8", 255.4), ("int8", -128.4)])
    def test_range_edges_are_accepted(self, dtype, value) -> None:
        layout = flatten(np.zeros(1, dtype))[1]
        assert unflatten(np.array([value]), layout)[0] == round(value)

    @pytest.mark.parametrize("dtype", ["int32", "bool"])
    @pytest.mark.parametrize("value", [np.nan, np.inf])
    def test_non_finite_integer_raises(self, dtype, value) -> None:
        layout = flatten(np.zeros(2, dtype))[1]
        with pytest.raises(ValueError, match="non-finite"):
            unflatten(np.array([0.0, value]), layout)


class TestFlattenErrors:
    @pytest.mark.parametrize(
        "update",
        [
            {"a": {"b": np.zeros(2)}},
            [np.zeros(2), [np.zeros(2)]],
            (np.zeros(1), (np.zeros(1),)),
            {"a": [1.0, 2.0]},
        ],
    )
    def test_nested(self, update) -> None:
        with pytest.raises(TypeError, match="nested containers"):
            flatten(update)

    @pytest.mark.parametrize("update", [{}, [], (), OrderedDict()])
    def test_empty(self, update) -> None:
        with pytest.raises(ValueError, match="empty"):
            flatten(update)

    @pytest.mark.parametrize(
        "leaf",
        [
            np.zeros(2, np.complex64),
            np.array([1, "a"], dtype=object),
            np.array(["ab", "c"]),
            np.array([b"x"]),
            np.zeros(2, "datetime64[s]"),
            np.zeros(2, [("a", "f4")]),
        ],
        ids=lambda a: str(a.dtype),
    )
    def test_unsupported_dtypes(self, leaf) -> None:
        with pytest.raises(TypeError, match="unsupported dtype"):
            flatten(leaf)
        with pytest.raises(TypeError, match="'w': unsupported dtype"):
            flatten({"w": leaf})

    @pytest.mark.parametrize("update", [1.0, "abc", None, [1.0], {"a": 3}])
    def test_not_arrays(self, update) -> None:
        with pytest.raises(TypeError):
            flatten(update)

    def test_non_str_key(self) -> None:
        with pytest.raises(TypeError, match="keys must be str"):
            flatten({1: np.zeros(1)})

    def test_masked_array(self) -> None:
        with pytest.raises(TypeError, match="masked"):
            flatten(np.ma.masked_array([1.0, 2.0], mask=[0, 1]))

    def test_key_length_limit(self) -> None:
        assert flatten({"é" * 512: np.zeros(1)})[1].entries[0].key == "é" * 512
        with pytest.raises(ValueError, match="1024"):
            flatten({"a" + "é" * 512: np.zeros(1)})

    def test_ndim_limit(self) -> None:
        assert flatten(np.zeros((1,) * 32))[1].entries[0].shape == (1,) * 32
        with pytest.raises(ValueError, match="32"):
            Layout("array", (LayoutEntry(None, (1,) * 33, "float32", 0, 1),), 1)


class TestUnflattenErrors:
    @pytest.mark.parametrize(
        "vector", [np.zeros(5), np.zeros(7), np.zeros((2, 3)), np.zeros(0), np.float64(1)]
    )
    def test_wrong_size_or_rank(self, vector) -> None:
        layout = flatten({"a": np.zeros((2, 3))})[1]
        with pytest.raises(ValueError, match="1-D of size 6"):
            unflatten(vector, layout)

    def test_complex_vector(self) -> None:
        layout = flatten(np.zeros(2))[1]
        with pytest.raises(TypeError, match="real numeric"):
            unflatten(np.zeros(2, complex), layout)

    def test_not_a_layout(self) -> None:
        with pytest.raises(TypeError, match="Layout"):
            unflatten(np.zeros(2), object())  # type: ignore[arg-type]

    def test_torch_layout_without_torch(self, monkeypatch) -> None:
        layout = Layout("torch", (LayoutEntry("w", (2,), "float32", 0, 2),), 2)
        monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
        with pytest.raises(BackendUnavailable, match="torch"):
            unflatten(np.zeros(2), layout)


def test_numpy_use_never_imports_torch(tmp_path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from securefl.vectors import flatten, unflatten\n"
        "v, l = flatten({'a': np.ones(3, np.int64)})\n"
        "unflatten(v, l)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    # Outside the repository root, so that the installed package is the one imported.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


class TestTorch:
    @pytest.fixture(autouse=True)
    def torch(self):
        return pytest.importorskip("torch")

    @pytest.mark.parametrize(
        "dtype",
        [*(d for d in NUMPY_DTYPES if d not in ("uint16", "uint32", "uint64")), "bfloat16"],
    )
    def test_tensor_and_dict_round_trip(self, torch, dtype) -> None:
        tdtype = getattr(torch, dtype)
        t = (torch.arange(-6, 6).reshape(3, 4) * 3).to(tdtype)
        vec, layout = flatten(t)
        assert layout.kind == "tensor" and layout.entries[0].dtype == dtype
        assert vec.dtype == (np.float64 if dtype in FLOAT64_DTYPES else np.float32)
        np.testing.assert_array_equal(vec, t.to(torch.float64).flatten().numpy())
        back = unflatten(vec, layout)
        assert isinstance(back, torch.Tensor) and back.device.type == "cpu"
        assert back.dtype == tdtype and torch.equal(back, t)

        sd = {"w": t, "s": torch.tensor(2.5, dtype=torch.float32)}
        vec, layout = flatten(sd)
        assert layout.kind == "torch"
        back = unflatten(vec, layout)
        assert list(back) == ["w", "s"] and back["w"].dtype == tdtype
        assert torch.equal(back["w"], t) and back["s"].item() == 2.5

    def test_state_dict_of_a_model(self, torch) -> None:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        model.train()
        for _ in range(5):
            model(torch.randn(8, 4))
        sd = model.state_dict()
        assert sd["1.num_batches_tracked"].dtype == torch.int64
        vec, layout = flatten(sd)
        assert vec.dtype == np.float64  # the int64 counter forces float64
        assert [e.key for e in layout.entries] == list(sd)
        assert layout.entries[-1] == LayoutEntry(
            "1.num_batches_tracked", (), "int64", 27, 1
        )  # 12 + 3 + 4 * 3
        assert vec[-1] == 5

        back = unflatten(vec, layout)
        assert list(back) == list(sd)
        for k, t in sd.items():
            assert back[k].dtype == t.dtype and back[k].shape == t.shape
            assert torch.equal(back[k], t)
        fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        fresh.load_state_dict(back)
        assert torch.equal(fresh[0].weight, model[0].weight)
        assert fresh[1].num_batches_tracked.item() == 5

        # Two clients' mean: the counter (5 and 8) comes back rounded half to even.
        other = {k: (t + 3 if k.endswith("tracked") else t * 2) for k, t in sd.items()}
        vec2, layout2 = flatten(other)
        assert layout2 == layout
        mean = unflatten((vec + vec2) / 2, layout)
        assert mean["1.num_batches_tracked"].item() == 6  # rint(6.5)
        assert torch.allclose(mean["0.weight"], sd["0.weight"] * 1.5)

    def test_requires_grad_and_non_contiguous(self, torch) -> None:
        w = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
        t = w.T  # non-contiguous, part of the graph
        assert not t.is_contiguous() and t.requires_grad
        vec, layout = flatten({"t": t, "w": w})
        np.testing.assert_array_equal(vec, [0, 3, 1, 4, 2, 5, 0, 1, 2, 3, 4, 5])
        back = unflatten(vec, layout)
        assert not back["t"].requires_grad and torch.equal(back["t"], t.detach())
        assert w.grad is None

    def test_read_only_vector_gives_writable_tensors(self, torch) -> None:
        vec, layout = flatten({"a": torch.ones(3), "b": torch.ones(2, dtype=torch.int16)})
        ro = np.frombuffer(vec.tobytes(), dtype=vec.dtype)
        back = unflatten(ro, layout)  # filterwarnings=error: no non-writable warning
        back["a"][0] = 5
        assert back["a"].tolist() == [5, 1, 1]

    def test_meta_device_is_refused_with_key_and_device(self, torch) -> None:
        sd = {"ok": torch.zeros(2), "layer.weight": torch.empty(3, device="meta")}
        with pytest.raises(TypeError, match=r"'layer\.weight'.*device meta"):
            flatten(sd)
        with pytest.raises(TypeError, match="device meta"):
            flatten(torch.empty(3, device="meta"))

    def test_cuda_device_is_refused(self, torch) -> None:
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device; the meta-device test covers the same check")
        with pytest.raises(TypeError, match=r"'w'.*device cuda"):
            flatten({"w": torch.zeros(2, device="cuda")})

    def test_unsupported_tensors(self, torch) -> None:
        with pytest.raises(TypeError, match="unsupported dtype"):
            flatten({"c": torch.zeros(2, dtype=torch.complex64)})
        with pytest.raises(TypeError, match="strided"):
            flatten({"s": torch.eye(3).to_sparse()})
        with pytest.raises(TypeError, match="mixes"):
            flatten({"a": torch.zeros(1), "b": np.zeros(1)})
        with pytest.raises(TypeError, match="dict of tensors"):
            flatten([torch.zeros(1), torch.zeros(1)])
        with pytest.raises(TypeError, match="nested"):
            flatten({"a": {"b": torch.zeros(1)}})


def layouts() -> st.SearchStrategy[Layout]:
    dtypes = st.sampled_from([*NUMPY_DTYPES, "bfloat16"])
    shapes = st.lists(st.integers(0, 5), max_size=4).map(tuple)

    def build(kind: str, raw: list[tuple[str, tuple[int, ...], str]]) -> Layout:
        if kind in ("array", "tensor"):
            raw = raw[:1]
        if kind not in ("torch", "tensor"):
            raw = [(k, s, "float32" if d == "bfloat16" else d) for k, s, d in raw]
        entries, offset = [], 0
        for i, (k, shape, dtype) in enumerate(raw):
            key = k if kind in ("dict", "torch") else None if kind in ("array", "tensor") else i
            size = math.prod(shape)
            entries.append(LayoutEntry(key, shape, dtype, offset, size))
            offset += size
        return Layout(kind, tuple(entries), offset)  # type: ignore[arg-type]

    raw = st.lists(
        st.tuples(st.text(max_size=8), shapes, dtypes),
        min_size=1,
        max_size=6,
        unique_by=lambda e: e[0],
    )
    kinds = st.sampled_from(["array", "dict", "list", "tuple", "torch", "tensor"])
    return st.builds(build, kinds, raw)


class TestLayout:
    def test_equality_and_hash(self) -> None:
        a = flatten({"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64)})[1]
        b = flatten({"w": np.ones((2, 3), np.float32), "n": np.ones((), np.int64)})[1]
        assert a == b and hash(a) == hash(b) and len({a, b}) == 1
        others = [
            {"n": np.zeros((), np.int64), "w": np.zeros((2, 3), np.float32)},  # order
            {"w": np.zeros((3, 2), np.float32), "n": np.zeros((), np.int64)},  # shape
            {"w": np.zeros((2, 3), np.float16), "n": np.zeros((), np.int64)},  # dtype
            {"W": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64)},  # key
            [np.zeros((2, 3), np.float32), np.zeros((), np.int64)],  # kind
        ]
        for other in others:
            assert flatten(other)[1] != a

    def test_known_answer_bytes(self) -> None:
        layout = flatten({"a": np.zeros((2, 3), np.int64), "b": np.zeros(2, np.float16)})[1]
        assert layout.to_bytes().hex() == (
            "53464c59" "01" "01" "00000002" "0000000000000008"
            "0001" "05" "02" "61" "0000000000000002" "0000000000000003"
            "0001" "06" "01" "62" "0000000000000002"
        )  # fmt: skip

    @pytest.mark.parametrize(
        ("kind", "entries", "size"),
        [
            ("vector", (LayoutEntry(None, (1,), "float32", 0, 1),), 1),
            ("array", (), 0),
            ("array", (LayoutEntry(None, (1,), "float32", 0, 1),) * 2, 2),
            ("array", (LayoutEntry(None, (2,), "bfloat16", 0, 2),), 2),
            ("array", (LayoutEntry(None, (2,), "complex64", 0, 2),), 2),
            ("array", (LayoutEntry(None, (2,), "float32", 0, 3),), 3),
            ("array", (LayoutEntry(None, (2,), "float32", 1, 2),), 3),
            ("array", (LayoutEntry(None, (2,), "float32", 0, 2),), 5),
            ("array", (LayoutEntry(None, (-1,), "float32", 0, -1),), -1),
            ("array", (LayoutEntry(None, (2**20, 2**20), "float32", 0, 2**40),), 2**40),
            ("array", (LayoutEntry(0, (1,), "float32", 0, 1),), 1),
            ("list", (LayoutEntry(1, (1,), "float32", 0, 1),), 1),
            ("list", (LayoutEntry(True, (1,), "float32", 0, 1),), 1),
            ("dict", (LayoutEntry(0, (1,), "float32", 0, 1),), 1),
            ("dict", (LayoutEntry("\ud800", (1,), "float32", 0, 1),), 1),
            (
                "dict",
                (
                    LayoutEntry("a", (1,), "float32", 0, 1),
                    LayoutEntry("a", (1,), "float32", 1, 1),
                ),
                2,
            ),
        ],
    )
    def test_invalid_layouts(self, kind, entries, size) -> None:
        with pytest.raises(ValueError):
            Layout(kind, entries, size)

    @given(layouts())
    def test_bytes_round_trip(self, layout) -> None:
        data = layout.to_bytes()
        back = Layout.from_bytes(data)
        assert back == layout and back.to_bytes() == data
        assert Layout.from_bytes(bytearray(data)) == layout
        assert Layout.from_bytes(memoryview(data)) == layout

    @given(layouts())
    def test_every_truncation_and_extension_is_refused(self, layout) -> None:
        data = layout.to_bytes()
        for n in range(len(data)):
            with pytest.raises(InvalidMessage):
                Layout.from_bytes(data[:n])
        with pytest.raises(InvalidMessage, match="trailing"):
            Layout.from_bytes(data + b"\x00")

    @given(layouts(), st.data())
    def test_corruptions_raise_invalid_message_or_stay_canonical(self, layout, data) -> None:
        original = layout.to_bytes()
        raw = bytearray(original)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255).filter(lambda b, i=i: b != raw[i]))
        try:
            parsed = Layout.from_bytes(bytes(raw))
        except InvalidMessage:
            return
        # A corruption that still parses (a changed dim or key) must re-encode exactly.
        assert parsed.to_bytes() == bytes(raw)
        assert (parsed == layout) == (bytes(raw) == original)

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, raw) -> None:
        try:
            parsed = Layout.from_bytes(raw)
        except InvalidMessage:
            return
        assert parsed.to_bytes() == raw

    @given(st.binary(max_size=120))
    def test_arbitrary_bytes_after_a_valid_header(self, tail) -> None:
        header = struct.pack(">4sBBIQ", b"SFLY", 1, 1, 2, 3)
        try:
            parsed = Layout.from_bytes(header + tail)
        except InvalidMessage:
            return
        assert parsed.to_bytes() == header + tail

    def entry(self, key: bytes = b"w", dtype: int = 8, dims: tuple[int, ...] = (2,)) -> bytes:
        dims_bytes = struct.pack(f">{len(dims)}Q", *dims)
        return struct.pack(">HBB", len(key), dtype, len(dims)) + key + dims_bytes

    def header(self, kind: int = 4, count: int = 1, size: int = 2) -> bytes:
        return struct.pack(">4sBBIQ", b"SFLY", 1, kind, count, size)

    def test_hand_built_bytes_parse(self) -> None:
        layout = Layout.from_bytes(self.header() + self.entry())
        assert layout == Layout("torch", (LayoutEntry("w", (2,), "float32", 0, 2),), 2)

    @pytest.mark.parametrize(
        ("data_fn", "message"),
        [
            (lambda s: b"SFLX" + (s.header() + s.entry())[4:], "magic"),
            (lambda s: s.header()[:4] + b"\x02" + s.header()[5:] + s.entry(), "version 2"),
            (lambda s: s.header(kind=6) + s.entry(), "kind code 6"),
            (lambda s: s.header(count=0), "entry count 0"),
            (lambda s: s.header(count=1_000_001) + s.entry(), "entry count 1000001"),
            (lambda s: s.header(size=2**40) + s.entry(), "2\\*\\*40"),
            (lambda s: s.header(size=3) + s.entry(), "size 3"),
            (lambda s: s.header() + s.entry(dtype=13), "dtype code 13"),
            (lambda s: s.header(size=1) + s.entry(dims=(1,) * 33), "33 dims"),
            (lambda s: s.header() + s.entry(key=b"k" * 1025), "1025 bytes"),
            (lambda s: s.header() + s.entry(key=b"\xff"), "UTF-8"),
            (lambda s: s.header() + s.entry(key=b"\xed\xa0\x80"), "UTF-8"),  # surrogate
            (lambda s: s.header(count=2, size=4) + s.entry() * 2, "duplicate"),
            (lambda s: s.header(kind=2) + s.entry(), "has a key"),
            (lambda s: s.header(kind=0) + s.entry(key=b"", dtype=7), "bfloat16"),
            (lambda s: s.header(kind=0, count=2, size=4) + s.entry(b"") * 2, "exactly one"),
            (lambda s: s.header(size=2**40 - 1) + s.entry(dims=(2**20, 2**20)), "2\\*\\*40"),
            (lambda s: s.header() + s.entry(dims=(2**64 - 1, 2**64 - 1)), "dimension"),
        ],
    )
    def test_specific_corruptions(self, data_fn, message) -> None:
        with pytest.raises(InvalidMessage, match=message):
            Layout.from_bytes(data_fn(self))

    def test_not_bytes(self) -> None:
        with pytest.raises(TypeError, match="bytes-like"):
            Layout.from_bytes("SFLY")  # type: ignore[arg-type]


def layout_of(update: Any) -> Layout:
    return flatten(update)[1]


class TestLayoutDifference:
    """What securefl.aggregate's layout errors say (issue 12, item 5)."""

    def names(self, a: Any, b: Any) -> str | None:
        return layout_of(a).difference(layout_of(b), this="client 2", that="client 0")

    def test_equal_layouts_have_none(self) -> None:
        assert self.names({"a": np.zeros(2)}, {"a": np.ones(2)}) is None

    def test_missing_and_extra_keys(self) -> None:
        x = np.zeros(1)
        got = self.names({"a": x, "c": x, "d": x}, {"a": x, "b": x})
        assert got == "client 2 lacks 'b' and has 'c', 'd', which client 0 does not"
        assert self.names({"a": x}, {"a": x, "b": x}) == "client 2 lacks 'b'"

    def test_same_keys_in_another_order(self) -> None:
        x = np.zeros(1)
        assert self.names({"b": x, "a": x}, {"a": x, "b": x}) == (
            "the same keys in another order: client 2 has ['b', 'a'], client 0 ['a', 'b']"
        )

    def test_many_keys_are_shortened(self) -> None:
        x = np.zeros(1)
        keys = [f"k{i}" for i in range(20)]
        got = self.names(dict.fromkeys(reversed(keys), x), dict.fromkeys(keys, x))
        assert got is not None and "... (20 keys)]" in got and len(got) < 300

    def test_shapes_and_dtypes_per_leaf(self) -> None:
        got = self.names(
            {"w": np.zeros((5, 2)), "b": np.zeros(2, np.float32)},
            {"w": np.zeros((2, 5)), "b": np.zeros(2)},
        )
        assert got == (
            "'w' has shape (5, 2) at client 2, (2, 5) at client 0; "
            "'b' has dtype float32 at client 2, float64 at client 0"
        )
        assert self.names(np.zeros(3), np.zeros((3, 1))) == (
            "shape (3,) at client 2, (3, 1) at client 0"
        )
        assert self.names([np.zeros(1), np.zeros(2)], [np.zeros(1), np.zeros(3)]) == (
            "leaf 1 has shape (2,) at client 2, (3,) at client 0"
        )

    def test_at_most_five_leaf_differences(self) -> None:
        got = self.names(
            {str(i): np.zeros(2) for i in range(8)}, {str(i): np.zeros(3) for i in range(8)}
        )
        assert got is not None and got.count("shape") == 5 and got.endswith("and 3 more")

    def test_containers_and_counts(self) -> None:
        x = np.zeros(1)
        assert self.names([x], {"0": x}) == (
            "client 2 sends a list of numpy arrays, client 0 a dict of numpy arrays"
        )
        assert self.names((x,), [x]) == (
            "client 2 sends a tuple of numpy arrays, client 0 a list of numpy arrays"
        )
        assert self.names([x, x, x], [x, x]) == "3 leaves at client 2, 2 at client 0"

    def test_torch_against_numpy(self) -> None:
        torch = pytest.importorskip("torch")
        assert self.names({"w": torch.zeros(2)}, {"w": np.zeros(2, np.float32)}) == (
            "client 2 sends a dict of torch tensors (state_dict), client 0 a dict of numpy arrays"
        )
        assert self.names(torch.zeros(2), np.zeros(2, np.float32)) == (
            "client 2 sends a torch tensor, client 0 a numpy array"
        )


class TestLocate:
    def test_dict_leaves_with_empty_and_scalar_leaves(self) -> None:
        layout = layout_of(
            {"a": np.zeros((2, 2)), "e": np.zeros(0), "s": np.zeros(()), "c": np.zeros(2)}
        )
        got = [layout.locate(i) for i in range(layout.size)]
        assert got == [
            "'a'[0, 0]",
            "'a'[0, 1]",
            "'a'[1, 0]",
            "'a'[1, 1]",
            "'s'",
            "'c'[0]",
            "'c'[1]",
        ]

    def test_lists_arrays_and_scalars(self) -> None:
        layout = layout_of([np.zeros(2), np.zeros((1, 2))])
        assert [layout.locate(i) for i in range(4)] == [
            "[0][0]",
            "[0][1]",
            "[1][0, 0]",
            "[1][0, 1]",
        ]
        assert layout_of(np.zeros((2, 3))).locate(5) == "[1, 2]"
        assert layout_of(np.zeros(())).locate(0) == "[()]"

    @pytest.mark.parametrize("index", [-1, 4])
    def test_outside_raises(self, index) -> None:
        with pytest.raises(IndexError, match="outside a layout of size 4"):
            layout_of(np.zeros(4)).locate(index)


class TestFloatLeaves:
    def test_integer_and_bool_leaves_become_float64(self) -> None:
        layout = layout_of(
            {"w": np.zeros(2, np.float16), "n": np.zeros((), np.int64), "m": np.zeros(3, bool)}
        )
        floats = layout.float_leaves()
        assert [e.dtype for e in floats.entries] == ["float16", "float64", "float64"]
        assert [e.shape for e in floats.entries] == [e.shape for e in layout.entries]
        mean = unflatten(np.array([0.5, 0.25, 2.5, 0.5, 1.0, 0.0]), floats)
        assert mean["n"].dtype == np.float64 and float(mean["n"]) == 2.5
        np.testing.assert_array_equal(mean["m"], [0.5, 1.0, 0.0])

    def test_float_layouts_are_returned_as_they_are(self) -> None:
        layout = layout_of({"w": np.zeros(2, np.float32)})
        assert layout.float_leaves() is layout

    def test_torch_integer_buffers(self) -> None:
        torch = pytest.importorskip("torch")
        layout = layout_of({"w": torch.zeros(2), "num_batches_tracked": torch.tensor(3)})
        mean = unflatten(np.array([1.0, 2.0, 2.5]), layout.float_leaves())
        assert mean["num_batches_tracked"].dtype == torch.float64
        assert float(mean["num_batches_tracked"]) == 2.5


def test_weighted_mean_is_the_plain_fedavg_reference() -> None:
    from securefl.vectors import weighted_mean

    xs = [np.array([1.0, -4.0], dtype=np.float32), np.array([3.0, 0.5])]
    assert weighted_mean(xs, [1, 3]).tolist() == [2.5, (-4.0 + 1.5) / 4]
    assert weighted_mean(xs, [1, 3], clip=1.0).tolist() == [1.0, (-1.0 + 1.5) / 4]
    with pytest.raises(ValueError, match="2 vectors and 1 weights"):
        weighted_mean(xs, [1])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_mean(xs, [0, 0])
