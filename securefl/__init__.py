"""securefl: secure aggregation for federated learning.

The server learns the (weighted) sum of the clients' updates and nothing about any
single one, even when clients drop out. See ``docs/`` and ``README.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from securefl import errors
from securefl.errors import (
    BackendUnavailable,
    ConfigError,
    DecryptionError,
    InvalidMessage,
    ProtocolAbort,
    SecureFLError,
)

if TYPE_CHECKING:
    from securefl.api import (
        PROTOCOLS,
        AggregationResult,
        ClippingWarning,
        PrecisionWarning,
        aggregate,
        ckks_available,
    )

__version__ = "0.1.0"

_API = frozenset(
    {
        "PROTOCOLS",
        "AggregationResult",
        "ClippingWarning",
        "PrecisionWarning",
        "aggregate",
        "ckks_available",
    }
)


def __getattr__(name: str) -> Any:
    # The high-level API needs the compiled core; importing it lazily keeps
    # `import securefl` (errors, vectors) light and free of native code.
    if name in _API:
        from securefl import api

        return getattr(api, name)
    raise AttributeError(f"module 'securefl' has no attribute {name!r}")


__all__ = [
    "PROTOCOLS",
    "AggregationResult",
    "BackendUnavailable",
    "ClippingWarning",
    "ConfigError",
    "DecryptionError",
    "InvalidMessage",
    "PrecisionWarning",
    "ProtocolAbort",
    "SecureFLError",
    "__version__",
    "aggregate",
    "ckks_available",
    "errors",
]
