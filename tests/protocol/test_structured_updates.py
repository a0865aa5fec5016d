"""Updates with structure: dicts of arrays and torch state_dicts round-trip through SecAgg."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.harness import make_config
from securefl.secagg.messages import Stage
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session


def test_dict_of_arrays() -> None:
    data = np.random.default_rng(4)
    updates = [
        {
            "w": data.uniform(-1, 1, (3, 4)).astype(np.float32),
            "b": data.uniform(-1, 1, 4).astype(np.float32),
        }
        for _ in range(5)
    ]
    weights = [3, 1, 4, 1, 5]
    config = make_config(5, t=3, d=16)
    report = run_session(config, updates, weights, rng=Drbg("dict"))
    assert report.stage is Stage.COMPLETED
    agg = report.aggregate
    assert list(agg) == ["w", "b"] and agg["w"].shape == (3, 4) and agg["w"].dtype == np.float32
    for key in ("w", "b"):
        want = sum(
            w * u[key].astype(np.float64) for w, u in zip(weights, updates, strict=True)
        ) / sum(weights)
        assert np.max(np.abs(agg[key] - want)) <= config.fixed_point.precision + 1e-7


def test_mismatched_layouts_are_refused() -> None:
    config = make_config(3, t=2, d=4)
    with pytest.raises(ValueError, match="does not match client 0's layout"):
        run_session(config, [np.zeros(4, np.float32), np.zeros((2, 2), np.float32)])


def test_torch_state_dicts_equal_the_plain_weighted_mean() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # model initialisation only: test data, not masks
    models = [torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.BatchNorm1d(3)) for _ in range(6)]
    for i, m in enumerate(models):
        m[1].num_batches_tracked.fill_(10 + i)
    states = [m.state_dict() for m in models]
    weights = [120, 80, 200, 33, 7, 64]
    d = sum(v.numel() for v in states[0].values())
    # The clip range must cover every coordinate, the BatchNorm counters included.
    config = make_config(6, t=3, d=d, max_weight=256, clip=16.0)
    report = run_session(
        config, states, weights, rng=Drbg("torch"), dropouts={5: Stage.MASKED_INPUT_COLLECTION}
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    agg = report.aggregate
    assert list(agg) == list(states[0])
    survivors = report.result.contributors
    assert survivors == (0, 1, 2, 3, 4)
    total = sum(weights[i] for i in survivors)
    for key, value in agg.items():
        assert isinstance(value, torch.Tensor) and value.dtype == states[0][key].dtype
        assert value.shape == states[0][key].shape
        plain = sum(weights[i] * states[i][key].double() for i in survivors) / total
        if value.is_floating_point():
            assert (
                torch.max(torch.abs(value.double() - plain)) <= config.fixed_point.precision + 1e-6
            )
        else:  # integer buffers come back rounded
            assert torch.equal(value, torch.round(plain).to(value.dtype))
    # The aggregate loads back into the model.
    models[0].load_state_dict(agg)
