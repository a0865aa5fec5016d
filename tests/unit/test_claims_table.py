"""docs/SECURITY.md's claims table: every row names a test, and every named test exists.

A row is a promise the docs make; a test reference is ``tests/path.py::name`` or
``tests/path.py::Class::name`` (parametrizations omitted), always down to the test
function. This keeps the table from citing tests that were renamed or never written.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "SECURITY.md"
REFERENCE = re.compile(r"tests/[\w/]+\.py(?:::\w+)+")


def _rows() -> list[str]:
    text = TABLE.read_text()
    section = text.split("## Claims and the tests that check them", 1)[1]
    return [
        line
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| claim") and "---" not in line
    ]


def _defined(path: pathlib.Path) -> set[str]:
    """Every test function and Class::method in a test module, as ``::``-paths (a bare
    class is not a test: a row names the functions that check its claim)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test_"):
                    names.add(f"{node.name}::{item.name}")
    return names


def test_the_table_has_rows_and_each_names_a_test() -> None:
    rows = _rows()
    assert len(rows) > 40
    for row in rows:
        assert REFERENCE.search(row), f"no test named in: {row[:80]}"


@pytest.mark.parametrize(
    "reference", sorted({ref for row in _rows() for ref in REFERENCE.findall(row)})
)
def test_each_named_test_exists(reference: str) -> None:
    path, _, name = reference.partition("::")
    module = ROOT / path
    assert module.is_file(), f"{path} does not exist"
    assert name in _defined(module), f"{name} is not a test in {path}"
