"""Accuracy, ROC-AUC and per-hospital evaluation of binary classifiers.

ROC-AUC is computed exactly from ranks (the Mann-Whitney U statistic): with ``R+`` the sum
of the positives' ranks among all scores, tied scores sharing their average rank,

    AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-),

the probability that a random positive scores above a random negative, ties counting one
half (Hanley and McNeil, Radiology 143(1), 1982). No third-party metrics library is used.

:func:`predictions` and :func:`predictions_equal` compare two models decision by decision:
the demo's check that secure aggregation reproduces plaintext FedAvg.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeAlias, TypedDict

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from securefl.demo.datasets.heart import HospitalData
from securefl.demo.fl.training import model_from_state

__all__ = [
    "Metrics",
    "ModelOrState",
    "accuracy",
    "evaluate",
    "evaluate_local",
    "logits",
    "predictions",
    "predictions_equal",
    "roc_auc",
]

ModelOrState: TypeAlias = nn.Module | Mapping[str, torch.Tensor]


class Metrics(TypedDict):
    """Test-split metrics of one hospital, or of all test rows (``"overall"``)."""

    accuracy: float
    auc: float
    n: int


def _scores_and_labels(
    scores: ArrayLike, y: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(y, dtype=np.float64).reshape(-1)
    if s.shape != t.shape or s.size == 0:
        raise ValueError(f"{s.size} scores and {t.size} labels; need equal, non-zero counts")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    if not np.all((t == 0.0) | (t == 1.0)):
        raise ValueError("labels must be 0 or 1")
    return s, t == 1.0


def accuracy(scores: ArrayLike, y: ArrayLike, *, from_logits: bool = True) -> float:
    """Fraction of rows whose predicted class equals the label.

    Parameters
    ----------
    scores : array_like
        One score per row: logits (predicts 1 where > 0) or, with ``from_logits=False``,
        probabilities (predicts 1 where > 0.5).
    y : array_like
        0/1 labels.
    from_logits : bool
        Whether ``scores`` are logits.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        If the lengths differ or are zero, a score is not finite, or a label is not 0/1.
    """
    s, t = _scores_and_labels(scores, y)
    predicted = s > (0.0 if from_logits else 0.5)
    return float(np.mean(predicted == t))


def _average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of ``values``; a run of ties gets the mean of the ranks it spans."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.concatenate((starts[1:], [values.size]))
    # Ties at sorted positions starts..ends-1 hold ranks starts+1..ends.
    mean_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(scores: ArrayLike, y: ArrayLike) -> float:
    """Area under the ROC curve, from the Mann-Whitney U statistic with average ranks.

    Parameters
    ----------
    scores : array_like
        One score per row, higher meaning more likely positive (logits or probabilities:
        any monotone transform gives the same AUC).
    y : array_like
        0/1 labels.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when ``y`` holds only one class (the AUC is undefined).

    Raises
    ------
    ValueError
        If the lengths differ or are zero, a score is not finite, or a label is not 0/1.
    """
    s, t = _scores_and_labels(scores, y)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(_average_ranks(s)[t].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _model(model_or_state: ModelOrState) -> nn.Module:
    if isinstance(model_or_state, nn.Module):
        return model_or_state
    return model_from_state(model_or_state)


def logits(model_or_state: ModelOrState, x: ArrayLike) -> NDArray[np.float32]:
    """The model's logit for each row of ``x``.

    Parameters
    ----------
    model_or_state : torch.nn.Module or mapping of str to torch.Tensor
        A model, or a state_dict of a model from :func:`securefl.demo.fl.training.make_model`.
    x : array_like
        Features, shape ``(n, n_features)``.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n,)``.

    Raises
    ------
    ValueError
        If a state_dict matches no known model, or ``x`` has the wrong width.
    """
    model = _model(model_or_state)
    features = torch.tensor(np.ascontiguousarray(x, dtype=np.float32))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(features)
    except RuntimeError as exc:  # matmul shape mismatch
        raise ValueError(f"features of shape {tuple(features.shape)} do not fit: {exc}") from exc
    finally:
        model.train(was_training)
    result: NDArray[np.float32] = out.reshape(-1).numpy().astype(np.float32)
    return result


def _metrics(scores: NDArray[np.float32], y: NDArray[np.float32]) -> Metrics:
    return {"accuracy": accuracy(scores, y), "auc": roc_auc(scores, y), "n": int(y.size)}


def evaluate(
    model_or_state: ModelOrState, hospitals: Mapping[str, HospitalData]
) -> dict[str, Metrics]:
    """Test-split accuracy and ROC-AUC of one model on every hospital and overall.

    Parameters
    ----------
    model_or_state : torch.nn.Module or mapping of str to torch.Tensor
        The model (for example FedAvg's global model), or its state_dict.
    hospitals : mapping of str to HospitalData
        Only the test splits are used.

    Returns
    -------
    dict of str to Metrics
        One entry per hospital, in mapping order, then ``"overall"`` over all test rows
        pooled (AUC of the pooled scores, not a mean of per-hospital AUCs).

    Raises
    ------
    ValueError
        If ``hospitals`` is empty or the model does not fit the features.
    """
    model = _model(model_or_state)
    return evaluate_local({name: model for name in hospitals}, hospitals)


def evaluate_local(
    models: Mapping[str, ModelOrState], hospitals: Mapping[str, HospitalData]
) -> dict[str, Metrics]:
    """Evaluate each hospital's own model on its own test split (local-only baseline).

    Parameters
    ----------
    models : mapping of str to model or state_dict
        One model per hospital, by hospital name (as :func:`local_only` returns).
    hospitals : mapping of str to HospitalData
        Only the test splits are used.

    Returns
    -------
    dict of str to Metrics
        Per hospital, then ``"overall"``: every hospital's test rows scored by that
        hospital's model, pooled.

    Raises
    ------
    ValueError
        If ``hospitals`` is empty, a hospital has no model, or a model does not fit.
    """
    if not hospitals:
        raise ValueError("need at least one hospital")
    missing = [name for name in hospitals if name not in models]
    if missing:
        raise ValueError(f"no model for {missing}")
    results: dict[str, Metrics] = {}
    all_scores: list[NDArray[np.float32]] = []
    all_labels: list[NDArray[np.float32]] = []
    for name, data in hospitals.items():
        scores = logits(models[name], data.x_test)
        results[name] = _metrics(scores, data.y_test)
        all_scores.append(scores)
        all_labels.append(data.y_test)
    results["overall"] = _metrics(np.concatenate(all_scores), np.concatenate(all_labels))
    return results


def predictions(
    model_or_state: ModelOrState, hospitals: Mapping[str, HospitalData]
) -> dict[str, NDArray[np.bool_]]:
    """The predicted class (logit > 0) of every test row, per hospital.

    Parameters
    ----------
    model_or_state : torch.nn.Module or mapping of str to torch.Tensor
        The model or its state_dict.
    hospitals : mapping of str to HospitalData
        Only the test splits are used.

    Returns
    -------
    dict of str to numpy.ndarray
        Boolean predictions, one array per hospital, in test-row order.

    Raises
    ------
    ValueError
        If the model does not fit the features.
    """
    model = _model(model_or_state)
    return {name: logits(model, data.x_test) > 0.0 for name, data in hospitals.items()}


def predictions_equal(
    a: ModelOrState, b: ModelOrState, hospitals: Mapping[str, HospitalData]
) -> bool:
    """Whether two models predict the same class for every test row of every hospital.

    Parameters
    ----------
    a, b : torch.nn.Module or mapping of str to torch.Tensor
        The models (for example secure and plaintext FedAvg's) or their state_dicts.
    hospitals : mapping of str to HospitalData
        Only the test splits are used.

    Returns
    -------
    bool
        True when no test row's prediction differs.

    Raises
    ------
    ValueError
        If a model does not fit the features.
    """
    pa, pb = predictions(a, hospitals), predictions(b, hospitals)
    return all(np.array_equal(pa[name], pb[name]) for name in hospitals)
