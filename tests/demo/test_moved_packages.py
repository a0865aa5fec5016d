"""securefl.fl and securefl.datasets moved under securefl.demo (issue 13, Deliver 3).

The old paths stay for one release as lazy aliases: importing them is silent, every public
name of the new module resolves to the same object with a ``DeprecationWarning`` that names
the new path, and any other name is an ``AttributeError``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import ModuleType

import pytest

# (old path, new path); the training modules need torch, as they did before the move.
MOVED = [
    ("securefl.datasets", "securefl.demo.datasets", False),
    ("securefl.datasets.heart", "securefl.demo.datasets.heart", False),
    ("securefl.fl", "securefl.demo.fl", True),
    ("securefl.fl.training", "securefl.demo.fl.training", True),
    ("securefl.fl.metrics", "securefl.demo.fl.metrics", True),
]
IDS = [old for old, _, _ in MOVED]


def _modules(old: str, new: str, needs_torch: bool) -> tuple[ModuleType, ModuleType]:
    if needs_torch:
        pytest.importorskip("torch")
    return importlib.import_module(old), importlib.import_module(new)


@pytest.mark.parametrize(("old", "new", "needs_torch"), MOVED, ids=IDS)
def test_every_public_name_warns_and_is_the_new_object(
    old: str, new: str, needs_torch: bool
) -> None:
    old_module, new_module = _modules(old, new, needs_torch)
    assert new_module.__all__, new
    for name in new_module.__all__:
        with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} .*import it from {new}"):
            value = getattr(old_module, name)
        assert value is getattr(new_module, name), name


@pytest.mark.parametrize(("old", "new", "needs_torch"), MOVED, ids=IDS)
def test_other_names_are_missing_and_dir_lists_the_public_ones(
    old: str, new: str, needs_torch: bool
) -> None:
    old_module, new_module = _modules(old, new, needs_torch)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = old_module.no_such_name
    assert dir(old_module) == sorted(new_module.__all__)


def test_from_import_warns_at_the_importing_line() -> None:
    with pytest.warns(DeprecationWarning, match="securefl.demo.datasets.heart") as record:
        from securefl.datasets.heart import load_hospitals
    from securefl.demo.datasets.heart import load_hospitals as new_load_hospitals

    assert load_hospitals is new_load_hospitals
    # stacklevel: the warning points at the user's import, not at the alias.
    assert [w.filename for w in record] == [__file__]


def test_star_import_warns_and_takes_every_public_name() -> None:
    import securefl.demo.datasets as new_module

    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match="securefl.demo.datasets") as record:
        exec("from securefl.datasets import *", namespace)
    # exec adds __builtins__ (and the warnings machinery __warningregistry__).
    taken = {name: value for name, value in namespace.items() if not name.startswith("__")}
    assert sorted(taken) == sorted(new_module.__all__)
    assert all(value is getattr(new_module, name) for name, value in taken.items())
    # Each name warns (twice for a package: the import system probes it with hasattr first).
    warned = {str(w.message).split(" ")[0] for w in record}
    assert warned == {f"securefl.datasets.{name}" for name in new_module.__all__}


def test_new_and_old_paths_import_without_warnings() -> None:
    pytest.importorskip("torch")
    # A fresh interpreter, so that nothing is already imported; -W error turns any warning
    # (a module-level use of an old path, say) into a failed import.
    modules = [name for pair in MOVED for name in pair[:2]]
    code = "import " + ", ".join(modules)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
