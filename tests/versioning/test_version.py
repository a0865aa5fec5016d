"""The version is defined once (securefl/__init__.py); the package metadata reads it."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import securefl

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_metadata_has_the_packages_version() -> None:
    assert importlib.metadata.version("securefl") == securefl.__version__


def test_pyproject_takes_the_version_from_the_package_not_a_literal() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert not re.search(r"^version\s*=", project, re.M)
    assert 'metadata.version.input = "securefl/__init__.py"' in text
