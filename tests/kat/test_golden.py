"""The golden vectors pin every byte of a seeded session in each mode.

A refactor of the protocol code must leave them unchanged; a protocol change rewrites
them (tests/kat/make_golden.py) together with a version bump and a line in
docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from kat.golden import DROPPED, MODES, record
from securefl.secagg import codec

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("mode", MODES)
def test_session_bytes_match_the_golden_vectors(mode) -> None:
    want = json.loads((GOLDEN / f"{mode}.json").read_text())
    got = record(mode)
    assert sorted(got) == sorted(want)
    for key in sorted(want):
        if key == "messages":
            assert len(got[key]) == len(want[key])
            for i, (g, w) in enumerate(zip(got[key], want[key], strict=True)):
                assert g == w, f"message {i} ({w.get('round')}) differs"
        else:
            assert got[key] == want[key], f"{key} differs"


@pytest.mark.parametrize("mode", MODES)
def test_golden_vectors_cover_every_round_and_the_current_version(mode) -> None:
    want = json.loads((GOLDEN / f"{mode}.json").read_text())
    assert want["wire_version"] == codec.VERSION
    rounds = {m["round"] for m in want["messages"]}
    expected = {"AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "Unmasking"}
    if mode == "authenticated":
        expected.add("ConsistencyCheck")
    assert rounds == expected
    assert want["shares"] and want["pairwise_mask_keys"] and want["ring_sum"]
    if mode in DROPPED:
        assert DROPPED[mode] not in want["contributors"]
