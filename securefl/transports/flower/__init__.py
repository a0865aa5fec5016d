"""securefl's secure aggregation inside Flower (flwr >= 1.42, Message API).

A client Mod (:data:`secagg_mod`, :func:`make_secagg_mod`) wraps an unchanged
``@app.train()`` function and checks every session against the client's own
:class:`ClientPolicy`; a server Strategy (:class:`SecAggFedAvg`, FedAvg semantics)
aggregates the updates with SecAgg / SecAgg+ so that the ServerApp learns only their
weighted mean (with ``dp=``, a differentially private noisy mean). :class:`CKKSFedAvg`
with :func:`make_ckks_mod` does FedAvg over CKKS ciphertexts instead. See ``docs/FLOWER.md``.
"""

import warnings

with warnings.catch_warnings():
    # flwr 1.42 imports typer, which reads deprecated click attributes once, at import.
    warnings.filterwarnings("ignore", message=r"'click\.utils\.", category=DeprecationWarning)
    import flwr.app  # noqa: F401  (the first import of flwr happens here)

from securefl.transports.flower.ckks import (
    CKKSFedAvg,
    CKKSRoundReport,
    context_from_file,
    decrypt_arrays,
    make_ckks_mod,
)
from securefl.transports.flower.mod import ERROR_CODE, ClientPolicy, make_secagg_mod, secagg_mod
from securefl.transports.flower.records import RECORD_KEY
from securefl.transports.flower.strategy import RoundReport, SecAggFedAvg

__all__ = [
    "ERROR_CODE",
    "RECORD_KEY",
    "CKKSFedAvg",
    "CKKSRoundReport",
    "ClientPolicy",
    "RoundReport",
    "SecAggFedAvg",
    "context_from_file",
    "decrypt_arrays",
    "make_ckks_mod",
    "make_secagg_mod",
    "secagg_mod",
]
