"""The layering of docs/ARCHITECTURE.md, checked on the source: every import in
``securefl/`` (top-level or inside a function, and ``importlib.import_module`` of a
constant) goes from a layer to one it may use.

Layers, lowest first: the native core; ``errors``; ``primitives`` and ``vectors``;
``encoding``; the protocols (``secagg``, ``ckks``, ``dp``); the transports
(``inmemory``, ``service``, ``flower``); ``api`` and the package; ``bench``, ``demo``,
``cli``. ``testing`` is for tests only: no library module imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "securefl"

# Layer of a module: the longest of these prefixes it starts with.
LAYERS = {
    "securefl._core": "core",
    "securefl.errors": "errors",
    "securefl.primitives": "primitives",
    "securefl.vectors": "vectors",
    "securefl.encoding": "encoding",
    "securefl.secagg": "secagg",
    "securefl.ckks": "ckks",
    "securefl.dp": "dp",
    "securefl.transports.inmemory": "inmemory",
    "securefl.transports.service": "service",
    "securefl.transports.flower": "flower",
    "securefl.transports": "transports",
    "securefl.api": "api",
    "securefl": "package",
    "securefl.__main__": "cli",
    "securefl.cli": "cli",
    "securefl.bench": "bench",
    "securefl.demo": "demo",
    # Deprecated aliases of demo/fl and demo/datasets (one release): the demo's layer.
    "securefl.fl": "demo",
    "securefl.datasets": "demo",
    "securefl.testing": "testing",
}

_BASE = {"errors"}
_PRIMITIVES = _BASE | {"core", "primitives"}
_DATA = _PRIMITIVES | {"vectors"}
_ENCODING = _DATA | {"encoding"}
_PROTOCOLS = _ENCODING | {"secagg", "ckks", "dp"}
_TRANSPORTS = _PROTOCOLS | {"transports"}
_LIBRARY = _TRANSPORTS | {"inmemory", "service", "flower", "api", "package"}

# What each layer may import (besides itself). The package ("securefl") re-exports
# the API, so the layers above the API may use it.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "errors": set(),
    "primitives": _PRIMITIVES,
    "vectors": _BASE,
    # Encoders turn updates into ring vectors and ring sums into means; SecAgg's core
    # adds integers and knows only the encoders' interface.
    "encoding": _DATA,
    "secagg": _ENCODING,
    "ckks": _ENCODING,
    # DP is an encoding for SecAgg's ring: it builds SecAgg configurations.
    "dp": _ENCODING | {"secagg"},
    "transports": _TRANSPORTS,
    "inmemory": _TRANSPORTS,
    "service": _TRANSPORTS,
    "flower": _TRANSPORTS,
    "api": _TRANSPORTS | {"inmemory"},
    "package": _TRANSPORTS | {"api"},
    "bench": _LIBRARY,
    "demo": _LIBRARY,
    "cli": _LIBRARY | {"bench", "demo"},
    "testing": _DATA,
}

# Third-party packages that only some layers may import.
EXTERNAL: dict[str, set[str]] = {
    "tenseal": {"ckks"},
    "grpc": {"service"},
    "flwr": {"flower", "bench"},
    "torch": {"vectors", "demo"},
    "dp_accounting": {"dp"},
}

# Deprecated aliases that point upward on purpose, resolved lazily, for one release.
SHIMS = {"securefl.transports.service.commands": {"securefl.cli.service"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports(module: str, source: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``source`` (the text of ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from securefl import vectors` imports securefl.vectors.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}" if target == "securefl" else target
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Every import of ``module`` that breaks the rules, as readable lines."""
    own = layer_of(module)
    wrong = []
    for line, target in imports(module, source, is_package=is_package):
        top = target.split(".")[0]
        if top == "securefl":
            if target in SHIMS.get(module, set()):
                continue
            theirs = layer_of(target)
            if theirs != own and theirs not in ALLOWED[own]:
                wrong.append(f"{module} line {line}: {own} may not import {target} ({theirs})")
        elif top in EXTERNAL and own not in EXTERNAL[top]:
            wrong.append(f"{module} line {line}: only {sorted(EXTERNAL[top])} may import {top}")
    return wrong


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_scan_sees_the_whole_package() -> None:
    names = {_module_name(p) for p in SOURCES}
    assert {"securefl.api", "securefl.secagg.client", "securefl.cli.service"} <= names
    assert len(SOURCES) > 60
    # Every module maps to a layer that has a rule.
    assert {layer_of(n) for n in names} <= set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_import_goes_to_an_allowed_layer(path: Path) -> None:
    module = _module_name(path)
    wrong = violations(module, path.read_text(), is_package=path.name == "__init__.py")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "securefl.secagg.fake",
            "from securefl.transports.service import server",
            "secagg may not",
        ),
        ("securefl.secagg.fake", "def f():\n    import securefl.api", "secagg may not import"),
        ("securefl.transports.inmemory", "from securefl.testing.drbg import Drbg", "testing"),
        ("securefl.primitives.fake", "from ..secagg import config", "primitives may not"),
        ("securefl.ckks.fake", "import importlib\nimportlib.import_module('securefl.cli')", "cli"),
        ("securefl.transports.service.fake", "import tenseal", "may import tenseal"),
        ("securefl.secagg.fake", "from securefl import api", "securefl.api"),
    ],
)
def test_the_checker_reports_a_forbidden_import(module: str, source: str, expected: str) -> None:
    (wrong,) = violations(module, source)
    assert expected in wrong


def test_the_checker_accepts_allowed_imports() -> None:
    source = "from securefl import vectors\nfrom securefl.primitives import kdf\nimport numpy"
    assert violations("securefl.secagg.fake", source) == []
    assert violations("securefl.dp.fake", "from securefl.secagg.config import SecAggConfig") == []
