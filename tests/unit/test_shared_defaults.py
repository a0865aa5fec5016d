"""One federation, one set of default parameters, whichever entry point runs it (issue 12,
observation 7: the degree defaults differed between ``aggregate``, ``bench``, ``serve``
and Flower).

Each entry point is asked as a user would ask it, with its defaults: ``aggregate`` by
capturing the configuration it hands the simulator, the bench by its scenario, ``serve``
by its parsed flags, Flower by the strategy's factory.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from securefl import api
from securefl.bench.secagg import Scenario
from securefl.cli.service import add_commands, secagg_config
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.defaults import default_config, planned_dropouts
from securefl.transports import inmemory
from securefl.transports.service.sessions import tolerated_dropouts


class _Captured(Exception):
    def __init__(self, config: SecAggConfig) -> None:
        self.config = config


def _aggregate_config(n: int, protocol: str, monkeypatch: pytest.MonkeyPatch) -> SecAggConfig:
    def capture(config: SecAggConfig, *args: object, **kwargs: object) -> None:
        raise _Captured(config)

    monkeypatch.setattr(inmemory, "run_session", capture)
    with pytest.raises(_Captured) as caught:
        api.aggregate([np.zeros(4)] * n, protocol=protocol)  # type: ignore[arg-type]
    return caught.value.config


def _serve_config(n: int, protocol: str) -> SecAggConfig:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--clients", str(n), "--dim", "4", "--protocol", protocol])
    return secagg_config(args)


def _shape(config: SecAggConfig) -> tuple[GraphKind, int, int]:
    return config.graph, config.neighbourhood_size, config.threshold


@pytest.mark.parametrize("n", [4, 5, 6, 10, 20, 50, 100, 300, 1000])
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_every_entry_point_derives_the_same_parameters(n, protocol, monkeypatch) -> None:
    expected = _shape(default_config(n, 4, complete=protocol == "secagg"))
    assert _shape(_aggregate_config(n, protocol, monkeypatch)) == expected
    assert _shape(Scenario(clients=n, dimension=4, protocol=protocol).config()) == expected
    assert _shape(_serve_config(n, protocol)) == expected
    if protocol == "secagg+":
        pytest.importorskip("flwr")
        from securefl.transports.flower import SecAggFedAvg

        assert _shape(SecAggFedAvg().config_factory(n, 4)) == expected


@pytest.mark.parametrize("n", [4, 5, 6, 10, 20, 50, 100, 300, 1000])
def test_the_shared_secagg_plus_default_survives_any_one_dropout(n) -> None:
    # Whichever client drops, in whichever round (k - t >= 1); the chooser plans the
    # 10 % of larger n for random dropouts with failure probability 2^-20.
    config = default_config(n, 4)
    assert tolerated_dropouts(config) >= 1
    assert config.corruption_rate == 0.1


def test_the_defaults_come_from_the_chooser_not_a_constant() -> None:
    # k grows with n (and with the rates), unlike the fixed degree 10 and
    # max(4, 2 log2 n) the entry points used before.
    degrees = [default_config(n, 4).neighbourhood_size for n in (10, 100, 1000)]
    assert degrees == [4, 32, 96]
    assert default_config(1000, 4, corruption_rate=0.05).neighbourhood_size == 78


def test_aggregate_plans_for_the_dropouts_it_is_given(monkeypatch) -> None:
    from securefl.secagg.messages import Stage

    def capture(config: SecAggConfig, *args: object, **kwargs: object) -> None:
        raise _Captured(config)

    monkeypatch.setattr(inmemory, "run_session", capture)
    dropouts = {i: Stage.MASKED_INPUT_COLLECTION for i in range(5)}
    with pytest.raises(_Captured) as caught:
        api.aggregate([np.zeros(4)] * 20, dropouts=dropouts)  # type: ignore[arg-type]
    assert tolerated_dropouts(caught.value.config) >= 5
    assert planned_dropouts(20) == 2
