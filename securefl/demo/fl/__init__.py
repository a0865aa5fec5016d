"""Federated training (FedAvg, FedProx) and its evaluation, on PyTorch.

Needs the ``torch`` extra (``pip install 'securefl[torch]'``). Aggregation is a callable the
caller passes in, so the same training loop runs with plaintext averaging or with any of
securefl's secure aggregation protocols.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from securefl.errors import BackendUnavailable

    raise BackendUnavailable(
        "securefl.demo.fl needs PyTorch: pip install 'securefl[torch]'"
    ) from exc

from securefl.demo.fl.metrics import (
    Metrics,
    accuracy,
    evaluate,
    evaluate_local,
    logits,
    predictions,
    predictions_equal,
    roc_auc,
)
from securefl.demo.fl.training import (
    DEFAULTS,
    Aggregate,
    StateDict,
    TrainingResult,
    centralized,
    federated_training,
    local_only,
    make_model,
    model_from_state,
    plain_weighted_mean,
    train_local,
)

__all__ = [
    "DEFAULTS",
    "Aggregate",
    "Metrics",
    "StateDict",
    "TrainingResult",
    "accuracy",
    "centralized",
    "evaluate",
    "evaluate_local",
    "federated_training",
    "local_only",
    "logits",
    "make_model",
    "model_from_state",
    "plain_weighted_mean",
    "predictions",
    "predictions_equal",
    "roc_auc",
    "train_local",
]
