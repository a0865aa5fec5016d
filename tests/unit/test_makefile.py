"""`make demo` / `make test` skip the install when no source changed (issue 12, item 7)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(target: str, venv: pathlib.Path) -> str:
    run = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout


@pytest.mark.parametrize("target", ["demo", "test"])
def test_an_up_to_date_stamp_skips_the_install(target: str, tmp_path: pathlib.Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    stamp = venv / f".installed-{target}"
    stamp.touch()
    assert "pip install" not in _dry_run(target, venv)
    os.utime(stamp, (0, 0))  # older than every source: a change since the last install
    plan = _dry_run(target, venv)
    assert "pip install" in plan and "installing securefl" in plan
