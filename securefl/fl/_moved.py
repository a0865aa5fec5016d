"""The lazy, warning aliases that keep ``securefl.fl`` and ``securefl.datasets`` importable
for one release after they moved to :mod:`securefl.demo.fl` and
:mod:`securefl.demo.datasets` (only the demo uses them). Deleted with those two packages.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old: str, new: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Make the PEP 562 ``__getattr__`` and ``__dir__`` of module ``old``, now at ``new``.

    Every public name of ``new`` (its ``__all__``) resolves on ``old`` to the same object,
    with a ``DeprecationWarning`` naming the new path. ``new`` is imported on the first
    access, not when ``old`` is, so importing an old path costs nothing and warns nothing.

    Parameters
    ----------
    old
        The deprecated module's name (pass ``__name__``).
    new
        The name of the module that now holds the code.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)``, to assign at the old module's top level.
    """

    def __getattr__(name: str) -> Any:
        module = importlib.import_module(new)
        public: list[str] = list(module.__all__)
        if name == "__all__":
            # A star import reads __all__ first, then warns once per name it takes.
            return public
        if name not in public:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} is deprecated: import it from {new} ({old} is removed in the "
            "next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)

    def __dir__() -> list[str]:
        return sorted(importlib.import_module(new).__all__)

    return __getattr__, __dir__
