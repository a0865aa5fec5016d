"""The network service: secure aggregation between machines over gRPC and TLS.

``securefl serve`` runs an :class:`AggregationServer`; each hospital runs ``securefl
join`` or an :class:`AggregationClient`. The service carries the protocols' own wire
messages (docs/PROTOCOL.md, docs/CKKS.md) in chunked frames (:mod:`.framing`) and drives
the same sans-IO state machines as the in-process simulator; per-round deadlines decide
who dropped out. ``docs/SERVICE.md`` describes the deployment, the frames and the
failure behaviour.

grpcio is an optional dependency (``pip install 'securefl[service]'``), imported when a
server or client is created.
"""

from securefl.transports.service.client import AggregationClient, ServiceResult
from securefl.transports.service.policy import ClientPolicy, PolicyError
from securefl.transports.service.server import AggregationServer, ServiceOptions, SessionOutcome
from securefl.transports.service.sessions import CKKSSession, SecAggSession
from securefl.transports.service.tls import ClientTLS, ServerTLS, write_pki

__all__ = [
    "AggregationClient",
    "AggregationServer",
    "CKKSSession",
    "ClientPolicy",
    "ClientTLS",
    "PolicyError",
    "SecAggSession",
    "ServerTLS",
    "ServiceOptions",
    "ServiceResult",
    "SessionOutcome",
    "write_pki",
]
