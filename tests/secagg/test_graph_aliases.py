"""The parameter search moved from ``securefl.secagg.graph`` to ``securefl.secagg.parameters``.

The old names still resolve (a module ``__getattr__``, PEP 562) to the very same objects,
with a ``DeprecationWarning`` that names the new module; the graph's own names do not warn.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from securefl.secagg import graph, parameters

# Every public name of the parameter search once lived in graph.py.
MOVED = sorted(parameters.__all__)


def test_every_public_name_of_parameters_has_an_alias() -> None:
    assert len(MOVED) == 7
    assert sorted(graph._MOVED_TO_PARAMETERS) == MOVED


@pytest.mark.parametrize("name", MOVED)
def test_old_attribute_warns_and_is_the_same_object(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=r"securefl\.secagg\.parameters") as record:
        old = getattr(graph, name)
    assert old is getattr(parameters, name)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"securefl.secagg.graph.{name}" in message
    # stacklevel=2: the warning points at the caller, not at graph.py.
    assert record[0].filename == __file__


@pytest.mark.parametrize("name", MOVED)
def test_old_from_import_warns_and_is_the_same_object(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=name):
        namespace: dict[str, object] = {}
        exec(f"from securefl.secagg.graph import {name}", namespace)
    assert namespace[name] is getattr(parameters, name)


def test_the_old_path_still_computes_the_same_parameters() -> None:
    with pytest.warns(DeprecationWarning):
        old_choose = graph.choose_parameters
    with pytest.warns(DeprecationWarning):
        old_model = graph.ThreatModel
    params = old_choose(1000, dropout_rate=0.1, corruption_rate=0.1)
    assert params == parameters.choose_parameters(1000, dropout_rate=0.1, corruption_rate=0.1)
    assert (params.degree, params.threshold) == (96, 67)
    assert params.threat_model is old_model.SEMI_MALICIOUS


def test_graph_names_do_not_warn_and_unknown_names_raise() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in graph.__all__:
            assert getattr(graph, name) is not None
    assert set(graph.__all__) == {
        "SEED_BYTES",
        "Graph",
        "complete_graph",
        "harary_graph",
        "shuffled_ids",
    }
    assert not set(MOVED) & set(graph.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = graph.no_such_name  # type: ignore[attr-defined]
    # A private helper of the search was never public: it does not resolve either.
    with pytest.raises(AttributeError, match="_harary_search"):
        _ = graph._harary_search  # type: ignore[attr-defined]


def test_importing_graph_does_not_import_parameters() -> None:
    code = (
        "import sys, securefl.secagg.graph as g; "
        "print('securefl.secagg.parameters' in sys.modules); "
        "g.harary_graph(range(10), 4, bytes(16)); "
        "print('securefl.secagg.parameters' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["False", "False"]
