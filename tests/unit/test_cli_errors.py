"""The command line answers configuration errors with one line and exit 2."""

from __future__ import annotations

import pytest

import securefl
from securefl.cli import main


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"securefl {securefl.__version__}"


def test_an_insecure_threshold_is_a_one_line_error_not_a_traceback(capsys) -> None:
    args = ["bench", "--clients", "5", "--dim", "10", "--protocol", "secagg", "--threshold", "1"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "t >= 2" in err and "smallest threshold that satisfies it is t = 2" in err
    assert "Traceback" not in err
