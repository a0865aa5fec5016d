"""securefl: secure aggregation for federated learning.

The server learns the (weighted) sum of the clients' updates and nothing about any
single one, even when clients drop out. See ``docs/`` and ``README.md``.
"""

from securefl import errors
from securefl.api import PROTOCOLS, AggregationResult, aggregate, ckks_available
from securefl.errors import (
    BackendUnavailable,
    ConfigError,
    DecryptionError,
    InvalidMessage,
    ProtocolAbort,
    SecureFLError,
)

__version__ = "0.1.0"

__all__ = [
    "PROTOCOLS",
    "AggregationResult",
    "BackendUnavailable",
    "ConfigError",
    "DecryptionError",
    "InvalidMessage",
    "ProtocolAbort",
    "SecureFLError",
    "__version__",
    "aggregate",
    "ckks_available",
    "errors",
]
