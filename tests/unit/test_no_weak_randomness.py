"""No mask, coin, share coefficient or noise can come from a weak generator.

docs/SECURITY.md ("Randomness"): securefl draws every mask, rounding coin, Shamir
coefficient and DP noise sample from AES-128-CTR keystreams of keys from os.urandom /
secrets (or an injected source), never from ``random``, ``numpy.random`` or a clock.
This scans the source: the protocol and primitive packages import neither, and no
module of the library outside the demo, training and test helpers touches
``random`` or ``numpy.random`` at all.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import securefl

PACKAGE = pathlib.Path(securefl.__file__).resolve().parent
# Demo-only code (synthetic data, model initialisation) and test helpers may seed
# numpy's generator for data; none of it is imported by the protocols.
EXEMPT = {"demo", "bench", "testing"}
# Packages whose randomness is key material: they must not even read a clock.
KEY_MATERIAL = {"secagg", "primitives", "dp", "ckks"}


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in EXEMPT)


def _weak_uses(tree: ast.AST, *, clock: bool) -> list[str]:
    found = []
    banned = {"random", "numpy.random"} | ({"time", "datetime"} if clock else set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in banned]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in banned or (
                node.module == "numpy" and any(a.name == "random" for a in node.names)
            ):
                found.append(node.module)
        elif isinstance(node, ast.Attribute) and node.attr == "random":
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("np", "numpy"):
                found.append(f"{base.id}.random")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_uses_no_weak_generator(path: pathlib.Path) -> None:
    clock = path.relative_to(PACKAGE).parts[0] in KEY_MATERIAL
    tree = ast.parse(path.read_text(), filename=str(path))
    assert _weak_uses(tree, clock=clock) == []


def test_the_scan_finds_what_it_looks_for() -> None:
    source = "import random\nimport numpy as np\nx = np.random.default_rng()\nimport time\n"
    assert sorted(_weak_uses(ast.parse(source), clock=True)) == ["np.random", "random", "time"]
    assert _weak_uses(ast.parse("from numpy import random"), clock=False) == ["numpy"]
    assert len(_modules()) > 30
