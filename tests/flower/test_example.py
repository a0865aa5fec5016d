"""The example app (examples/flower_app) runs in Flower's Ray simulation and its
secure global model equals plaintext Flower FedAvg's on the same app, up to the
fixed-point rounding of the secure aggregate."""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path

import pytest

from securefl.secagg.messages import Stage

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_app"


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # Ray's helper processes, at gc
def test_example_app_matches_plaintext_fedavg(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # else Ray's FutureWarning
    monkeypatch.syspath_prepend(str(EXAMPLE))
    run = importlib.import_module("run")
    try:
        secure = run.simulate(secure=True, rounds=2)
        plain = run.simulate(secure=False, rounds=2)
        gc.collect()
    finally:
        for name in [m for m in sys.modules if m == "run" or m.startswith("securefl_app")]:
            del sys.modules[name]
    assert [r.stage for r in secure["strategy"].reports] == [Stage.COMPLETED] * 2
    assert all(len(r.contributors) == 4 for r in secure["strategy"].reports)
    assert run.max_difference(secure["arrays"], plain["arrays"]) < 1e-5
    # Training worked: the model moved away from its initialization and is useful.
    assert secure["metrics"][2]["auc"] > secure["metrics"][0]["auc"]
    assert secure["metrics"][2]["auc"] > 0.8
