"""The parameters `securefl serve` / `join` derive survive one failure (issue 12, item 1).

For 2 to 10 clients (the common federation) the derived k and t tolerate at least one
dropout in every round, or both commands refuse to start with the reason and the
smallest setting that would. docs/SERVICE.md's table (n -> k, t, dropouts tolerated) is
checked against the code, cell by cell.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from securefl.cli.service import add_commands, check_dropouts, secagg_config
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind
from securefl.transports.service.sessions import tolerated_dropouts

DOC = Path(__file__).resolve().parents[2] / "docs" / "SERVICE.md"
MODES = {
    "secagg+": (),
    "secagg": ("--protocol", "secagg"),
    "secagg --authenticated": ("--protocol", "secagg", "--authenticated"),
}
"""The table's columns after n, in order: the options each stands for."""


def parse(n: int, *options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", "--clients", str(n), "--dim", "10", *options])


def derived(n: int, *options: str) -> tuple[int, int, int, str] | str:
    """(k, t, dropouts tolerated, graph) of the defaults, or the refusal's text."""
    args = parse(n, *options)
    try:
        config = secagg_config(args)
        check_dropouts(args, config)
    except ConfigError as exc:
        return str(exc)
    graph = "complete" if config.graph is GraphKind.COMPLETE else "Harary"
    return config.neighbourhood_size, config.threshold, tolerated_dropouts(config), graph


def table() -> dict[int, list[str]]:
    """docs/SERVICE.md's defaults table: n -> its cells."""
    text = DOC.read_text()
    start = text.index("| n | SecAgg+ (default)")
    rows: dict[int, list[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        n, *cells = (c.strip() for c in line.strip("|").split("|"))
        rows[int(n)] = cells
    return rows


@pytest.mark.parametrize("n", range(2, 11))
def test_the_defaults_for_2_to_10_clients_tolerate_a_dropout_or_are_refused(n: int) -> None:
    for options in MODES.values():
        got = derived(n, *options)
        if isinstance(got, str):
            # Refused: the reason and the smallest setting that would work.
            assert n <= 3, got
            assert "tolerate no dropout" in got and "--clients 4" in got, got
        else:
            k, t, tolerated, _ = got
            assert tolerated >= 1 and k - t >= 1 and n - 1 - t >= 1


@pytest.mark.parametrize("n", range(2, 11))
def test_the_documented_table_is_what_the_code_derives(n: int) -> None:
    cells = table()[n]
    assert len(cells) == len(MODES)
    for cell, options in zip(cells, MODES.values(), strict=True):
        got = derived(n, *options)
        if isinstance(got, str):
            assert cell.startswith("refused"), (n, options, cell, got)
            continue
        k, t, tolerated, graph = got
        match = re.fullmatch(r"(\d+) / (\d+) / (\d+) \((complete|Harary)\)", cell)
        assert match, (n, options, cell)
        assert match.groups() == (str(k), str(t), str(tolerated), graph), (n, options, cell)


def test_explicit_parameters_that_tolerate_no_dropout_are_run_as_asked() -> None:
    """An explicit --threshold is the operator's choice: not refused."""
    args = parse(3, "--threshold", "2")
    config = secagg_config(args)
    check_dropouts(args, config)
    assert tolerated_dropouts(config) == 0


def test_an_explicit_degree_with_a_derived_threshold_is_refused_naming_a_degree() -> None:
    args = parse(8, "--degree", "2")
    with pytest.raises(ConfigError, match=r"tolerate no dropout.*--degree 4"):
        check_dropouts(args, secagg_config(args))


@pytest.mark.parametrize("n", range(4, 11))
def test_authenticated_secagg_plus_derives_what_secagg_plus_does(n: int) -> None:
    """docs/SERVICE.md: the table's SecAgg+ column holds with --authenticated too."""
    assert derived(n, "--authenticated") == derived(n)
