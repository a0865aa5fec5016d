from __future__ import annotations

import re
import subprocess
import sys

import pytest

from securefl.cli import main


def test_demo_recovers_the_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["round", "--clients", "5", "--dim", "20000"]) == 0
    out = capsys.readouterr().out
    assert "OK: the server recovered the weighted mean" in out
    assert "hospital 4 vanished" in out and "4 updates in the mean" in out
    err = float(re.search(r"max \|secure - plain clipped mean\|\s+(\S+)", out).group(1))
    bound = float(re.search(r"\(bound (\S+)\)", out).group(1))
    assert err <= bound


def test_demo_refuses_a_ring_too_small(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["round", "--clients", "4", "--dim", "10", "--bits", "2", "--clip", "1000"])
    assert exit_.value.code == 2  # a one-line error, not a traceback
    assert re.search(r"wrap|does not fit", capsys.readouterr().err)


def test_module_entry_point(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "securefl", "round", "--clients", "4", "--dim", "1000"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "OK:" in result.stdout
