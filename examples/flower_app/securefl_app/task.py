"""The learning task, independent of Flower and of securefl: the data of one hospital,
the model, local training and evaluation (securefl's own helpers for the demo)."""

from __future__ import annotations

import torch

from securefl.demo.datasets.heart import HospitalData, load_hospitals
from securefl.demo.fl.metrics import evaluate
from securefl.demo.fl.training import make_model, train_local

HOSPITALS = load_hospitals(seed=0)
NAMES = tuple(HOSPITALS)


def hospital(partition_id: int) -> HospitalData:
    """Supernode ``partition_id`` (0..3) plays one hospital."""
    return HOSPITALS[NAMES[partition_id]]


def initial_state() -> dict[str, torch.Tensor]:
    return make_model(hospital(0).n_features, "logreg", seed=0).state_dict()


def train(
    state: dict[str, torch.Tensor], data: HospitalData, *, epochs: int, lr: float, seed: int
) -> dict[str, torch.Tensor]:
    """Local SGD from the global ``state``; returns the trained state."""
    model = make_model(data.n_features, "logreg")
    model.load_state_dict(state)
    generator = torch.Generator().manual_seed(seed)
    train_local(
        model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=32, generator=generator
    )
    return model.state_dict()


def test_metrics(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy and ROC-AUC on every hospital's held-out split, pooled."""
    overall = evaluate(state, HOSPITALS)["overall"]
    return {"accuracy": float(overall["accuracy"]), "auc": float(overall["auc"])}
