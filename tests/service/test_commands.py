"""The session options of `securefl serve` / `securefl join` and what they build."""

from __future__ import annotations

import argparse

import pytest

from securefl.cli.service import add_commands, secagg_config
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_secagg_options_build_the_complete_graph() -> None:
    config = secagg_config(parse("--protocol", "secagg", "--clients", "7", "--dim", "10"))
    assert (config.graph, config.num_clients, config.threshold) == (GraphKind.COMPLETE, 7, 4)
    assert (config.dimension, config.bits, config.max_weight) == (10, 32, 1000)


def test_secagg_plus_options_build_a_harary_graph() -> None:
    args = parse("--protocol", "secagg+", "--clients", "30", "--degree", "8", "--dim", "5")
    config = secagg_config(args)
    assert (config.graph, config.degree, config.threshold) == (GraphKind.HARARY, 8, 5)
    args = parse("--clients", "30", "--dim", "5", "--authenticated", "--bits", "40")
    config = secagg_config(args)  # SecAgg+ from the dropout and corruption rates
    assert config.authenticated and config.bits == 40


def test_missing_dimension_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--dim"):
        secagg_config(parse("--clients", "5"))


def test_handlers_are_set() -> None:
    assert parse("--clients", "5").handler.__name__ == "_serve"


def test_serve_seats_only_the_enrolled_ids_below_the_client_count() -> None:
    from securefl.cli.service import seats

    enrolled = {i: bytes([i]) * 32 for i in (0, 1, 2, 7, 9)}
    assert seats(enrolled, 3) == {i: enrolled[i] for i in (0, 1, 2)}
    assert seats({}, 3) == {}
    with pytest.raises(ConfigError, match="no client id below"):
        seats({7: b"k" * 32}, 3)


def test_config_differences_name_every_differing_option_with_both_values() -> None:
    """What the server tells a client whose options differ: each option as serve/join
    spell it, the client's value and the server's; frac_bits only when it does not
    follow from another difference."""
    from securefl.secagg.config import SecAggConfig
    from securefl.transports.service.sessions import config_differences

    server = SecAggConfig(5, 3, 50, max_weight=1000, corruption_rate=0.1)
    client = SecAggConfig(
        6, 4, 40, bits=24, clip=2.0, max_weight=10, authenticated=True, corruption_rate=0.2
    )
    assert config_differences(server, client.to_bytes()) == [
        ("--clients", "6", "5"),
        ("--threshold", "4", "3"),
        ("--dim", "40", "50"),
        ("--bits", "24", "32"),
        ("--clip", "2", "1"),
        ("--max-weight", "10", "1000"),
        ("--authenticated", "True", "False"),
        ("--corruption-rate", "0.2", "0.1"),
    ]
    finer = SecAggConfig(5, 3, 50, max_weight=1000, corruption_rate=0.1, frac_bits=20)
    assert config_differences(server, finer.to_bytes()) == [
        ("frac_bits (from --bits, --clip and --clients)", "20", "28")
    ]
    assert config_differences(server, server.to_bytes()) == []
    with pytest.raises(ConfigError):
        config_differences(server, b"not a configuration")
