"""Names that moved in the issue-13 refactor still resolve at their old paths for one
release, with a DeprecationWarning that names the new one."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from securefl import vectors
from securefl.cli import service


def test_the_service_commands_moved_to_the_cli() -> None:
    old = importlib.import_module("securefl.transports.service.commands")
    with pytest.warns(DeprecationWarning, match=r"securefl\.cli\.service\.secagg_config"):
        assert old.secagg_config is service.secagg_config
    with pytest.warns(DeprecationWarning):
        assert old.add_commands is service.add_commands


def test_flatten_updates_moved_to_vectors() -> None:
    from securefl.transports import inmemory

    updates = [{"a": np.ones(2), "b": np.zeros(3)}, {"a": np.zeros(2), "b": np.ones(3)}]
    with pytest.warns(DeprecationWarning, match="flatten_all"):
        flat, layout = inmemory.flatten_updates(updates)
    new_flat, new_layout = vectors.flatten_all(updates)
    assert layout == new_layout
    assert [x.tolist() for x in flat] == [x.tolist() for x in new_flat]
    assert new_flat[0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_flatten_all_names_the_client_whose_layout_differs() -> None:
    with pytest.raises(ValueError, match="client 2's update does not match client 0's layout"):
        vectors.flatten_all([np.zeros(3), np.ones(3), np.ones(4)])
    with pytest.raises(ValueError, match="no updates"):
        vectors.flatten_all([])
