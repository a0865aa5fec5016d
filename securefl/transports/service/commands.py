"""Deprecated: ``securefl serve`` / ``join`` moved to :mod:`securefl.cli.service` (CLI code
lives in the CLI). Every name still resolves here, with a ``DeprecationWarning``, for one
release."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    # Resolved lazily so that the transport layer never imports the CLI layer.
    module = importlib.import_module("securefl.cli.service")
    value = getattr(module, name)
    warnings.warn(
        f"securefl.transports.service.commands.{name} is deprecated; use "
        f"securefl.cli.service.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
