"""The typed stub of the compiled core must list exactly what the core exports."""

from __future__ import annotations

import ast
from pathlib import Path

import securefl
from securefl import _core


def test_stub_matches_core() -> None:
    stub = Path(securefl.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    declared |= {
        n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and n.target.id != "__all__"
    }
    exported = {name for name in dir(_core) if not name.startswith("_")}
    assert declared == exported, "run `make stubs` after changing the bindings"
