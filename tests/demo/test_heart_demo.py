"""`securefl demo`: secure FedAvg reproduces plaintext FedAvg on the heart-disease data."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from securefl.cli import main
from securefl.demo.heart import DemoOptions, run_demo


def test_secure_runs_make_the_same_predictions_as_plaintext() -> None:
    protocols = ("secagg", "secagg+")
    try:
        import tenseal  # noqa: F401

        protocols = (*protocols, "ckks")
    except ImportError:
        pass
    rows = run_demo(DemoOptions(protocols=protocols, rounds=4, dropout=0.3, seed=1))
    by_method = {r.method: r for r in rows}
    assert list(by_method)[:3] == ["local-only", "pooled", "FedAvg plain"]
    plain = by_method["FedAvg plain"]
    for protocol in protocols:
        row = by_method[f"FedAvg {protocol}"]
        assert row.same_predictions is True
        # Rounding noise of the fixed-point code (2^-25 here), compounded over rounds.
        assert row.max_weight_difference < 1e-5
        for hospital, metrics in row.metrics.items():
            assert metrics == plain.metrics[hospital]
        assert row.bytes_per_client_round > 0
    assert set(plain.metrics) == {"Cleveland", "Hungary", "VA Long Beach", "Switzerland", "overall"}


def test_fedprox_json_schema(tmp_path, capsys) -> None:
    out = tmp_path / "demo.json"
    code = main(
        ["demo", "--protocols", "secagg+", "--rounds", "2", "--mu", "0.1", "--json", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "FedProx mu=0.1" in text and "FedProx secagg+" in text
    data = json.loads(out.read_text())
    assert data["schema"] == 1
    assert data["options"]["mu"] == 0.1 and data["options"]["protocols"] == ["secagg+"]
    assert [r["method"] for r in data["rows"]] == [
        "local-only",
        "pooled",
        "FedProx plain",
        "FedProx secagg+",
    ]
    row = data["rows"][-1]
    assert set(row) >= {
        "metrics",
        "seconds",
        "aggregate_seconds",
        "bytes_per_client_round",
        "max_weight_difference",
        "same_predictions",
        "extra",
    }
    assert row["same_predictions"] is True


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--protocols", "rot13"])


def test_demo_options_refuse_an_unknown_model() -> None:
    import pytest

    from securefl.demo.heart import DemoOptions

    assert DemoOptions(model="mlp").model == "mlp"
    with pytest.raises(ValueError, match="model must be 'logreg' or 'mlp'"):
        DemoOptions(model="resnet")  # type: ignore[arg-type]


def test_the_demos_ckks_aggregator_refuses_models_of_another_layout() -> None:
    """Issue 12, left open before: the demo's own CKKS round checks the hospitals'
    layouts as securefl.aggregate does, instead of summing different parameters."""
    pytest.importorskip("tenseal")
    import torch

    from securefl.demo.heart import _aggregator

    aggregate = _aggregator("ckks", DemoOptions(), [set()], {"bytes": []})
    same = [{"w": torch.ones(3), "b": torch.zeros(1)} for _ in range(2)]
    mean = aggregate(same, [1, 3], 0)
    assert torch.allclose(mean["w"], torch.ones(3), atol=1e-4)
    swapped = [{"w": torch.ones(3), "b": torch.zeros(1)}, {"b": torch.zeros(1), "w": torch.ones(3)}]
    with pytest.raises(ValueError, match="hospital 1's model does not match"):
        aggregate(swapped, [1, 3], 0)
