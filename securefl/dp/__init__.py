"""Distributed differential privacy on top of secure aggregation.

Clients add integer noise inside the ring, so the server only ever unmasks a noisy
sum and no single party adds or sees all of the noise: the distributed discrete
Gaussian (Kairouz, Liu, Steinke, ICML 2021) and the distributed Skellam mechanism
(Agarwal, Kairouz, Liu, NeurIPS 2021), with accounting through ``dp_accounting``.
See ``docs/PRIVACY.md``.

* :class:`DPConfig` / :func:`calibrate` -> :class:`DPPlan`: noise and scale from a
  target (epsilon, delta), clients, dropout tolerance, rounds, clip and ring bits.
* :class:`DPEncoder`: one round's encoder (:func:`encode_update` on each client,
  :func:`decode_aggregate` on the ring sum), the object every transport uses around a
  SecAgg session with ``ring_input=True``.
"""

from securefl.dp.calibration import DPConfig, DPPlan, Mechanism, calibrate
from securefl.dp.encoder import DPEncoder
from securefl.dp.pipeline import (
    DPAggregate,
    EncodedUpdate,
    decode_aggregate,
    encode_update,
    rotation_key,
    secagg_config,
)

__all__ = [
    "DPAggregate",
    "DPConfig",
    "DPEncoder",
    "DPPlan",
    "EncodedUpdate",
    "Mechanism",
    "calibrate",
    "decode_aggregate",
    "encode_update",
    "rotation_key",
    "secagg_config",
]
