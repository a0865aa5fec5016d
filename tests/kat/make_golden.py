"""Rewrite tests/kat/golden/*.json from the seeded sessions of tests/kat/golden.py.

Run only with a protocol version bump (docs/PROTOCOL.md, "Golden vectors"):
    .venv/bin/python tests/kat/make_golden.py
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from kat.golden import MODES, record

OUT = pathlib.Path(__file__).resolve().parent / "golden"

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for mode in MODES:
        path = OUT / f"{mode}.json"
        path.write_text(json.dumps(record(mode), indent=1, sort_keys=True) + "\n")
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
