"""Every default configuration satisfies the threshold rules (issue 11, Deliver 1).

The rules (t >= 2, t > c, and 2t > k + c in authenticated mode) are checked by
SecAggConfig itself, so a default that broke them would raise here; each test also
re-checks the rule explicitly so that it cannot pass by a default that skips the
constructor.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from securefl import api
from securefl.bench.secagg import Scenario
from securefl.cli.service import add_commands, secagg_config
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind, SecAggConfig


def _rules_hold(config: SecAggConfig) -> None:
    k, c, t = config.neighbourhood_size, config.tolerated_corrupt_neighbours, config.threshold
    assert t >= 2 and t > c
    if config.authenticated:
        assert 2 * t > k + c


def _serve_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *flags])


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10, 30, 100])
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("authenticated", [False, True])
def test_serve_and_join_defaults_satisfy_the_rules(n, protocol, authenticated) -> None:
    flags = ["--clients", str(n), "--dim", "10", "--protocol", protocol]
    if authenticated:
        flags.append("--authenticated")
    _rules_hold(secagg_config(_serve_args(*flags)))


@pytest.mark.parametrize("corruption", ["0.2", "0.3"])
def test_serve_raises_its_default_threshold_with_the_corruption_rate(corruption) -> None:
    args = _serve_args(
        "--clients", "10", "--dim", "4", "--protocol", "secagg", "--authenticated",
        "--corruption-rate", corruption,
    )  # fmt: skip
    config = secagg_config(args)
    c = int(float(corruption) * 10)
    assert config.tolerated_corrupt_neighbours == c
    assert config.threshold == (9 + c) // 2 + 1


def test_an_explicit_insecure_threshold_is_refused_with_the_smallest_secure_one() -> None:
    args = _serve_args(
        "--clients", "10", "--dim", "4", "--protocol", "secagg", "--authenticated",
        "--corruption-rate", "0.3", "--threshold", "6",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"smallest threshold that satisfies it is t = 7"):
        secagg_config(args)


@pytest.mark.parametrize("n", [3, 4, 5, 10, 50, 200])
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_aggregate_defaults_satisfy_the_rules(n, protocol) -> None:
    options = api._graph_options(protocol, n, None, None, dropouts=0, authenticated=False)
    config = SecAggConfig(num_clients=n, dimension=4, **options)
    _rules_hold(config)


@pytest.mark.parametrize("n", [12, 50, 1000])
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_bench_defaults_satisfy_the_rules(n, protocol) -> None:
    _rules_hold(Scenario(clients=n, dimension=4, protocol=protocol).config())


@pytest.mark.parametrize("n", [5, 10, 100, 1000])
@pytest.mark.parametrize("authenticated", [False, True])
def test_the_choosers_parameters_satisfy_the_rules(n, authenticated) -> None:
    config = SecAggConfig.from_rates(
        n, 4, dropout_rate=0.1, corruption_rate=0.1, authenticated=authenticated
    )
    _rules_hold(config)


def test_t_of_1_is_refused_everywhere_it_can_be_asked_for() -> None:
    with pytest.raises(ConfigError, match="t >= 2"):
        SecAggConfig(num_clients=5, threshold=1, dimension=4)
    with pytest.raises(ConfigError, match="t >= 2"):
        SecAggConfig(num_clients=9, threshold=1, dimension=4, graph=GraphKind.HARARY, degree=4)
    with pytest.raises(ConfigError, match="t >= 2"):
        api.aggregate([np.zeros(2), np.ones(2), np.ones(2)], protocol="secagg", threshold=1)
    with pytest.raises(ConfigError, match="t >= 2"):
        secagg_config(_serve_args("--clients", "5", "--dim", "4", "--threshold", "1"))
