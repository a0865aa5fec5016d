"""The command line answers configuration errors with one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

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


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["demo"], "torch", "torch"),
        (["serve", "--clients", "3", "--dim", "4"], "grpc", "service"),
        (
            ["join", "--id", "0", "--clients", "3", "--dim", "4", "--update", "u.npy"],
            "grpc",
            "service",
        ),
        (["demo", "--dp-epsilon", "1"], "dp_accounting", "dp"),
    ],
)
def test_a_missing_extra_names_the_install_line(argv, module, extra, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"pip install 'securefl[{extra}]'" in err and "Traceback" not in err


def test_importing_securefl_dp_without_dp_accounting_says_what_to_install() -> None:
    code = "import sys; sys.modules['dp_accounting'] = None; import securefl.dp"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert "pip install 'securefl[dp]'" in run.stderr


@pytest.mark.parametrize("command", ["demo", "round", "bench", "serve", "join"])
def test_help_shows_the_defaults(command, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "(default:" in capsys.readouterr().out


@pytest.mark.parametrize("clients", [3, 4, 5, 10, 50, 200])
def test_bench_and_round_work_at_their_defaults(clients, capsys) -> None:
    """The default degree comes from the parameter chooser, so no client count from 3
    up crashes or is bound to fail (d small, and n at most 200 to keep the test quick:
    n = 1000 takes ~85 s in one process here, all of it per-client Python work)."""
    assert main(["bench", "--clients", str(clients), "--dim", "20"]) == 0
    if clients <= 50:
        assert main(["round", "--clients", str(clients), "--dim", "20"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_two_clients_are_refused_with_one_line(capsys) -> None:
    for argv in (["bench", "--clients", "2", "--dim", "10"], ["round", "--clients", "2"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code != 0
    assert "Traceback" not in capsys.readouterr().err


def test_round_with_a_narrow_ring_works(capsys) -> None:
    assert main(["round", "--clients", "4", "--dim", "50", "--bits", "8"]) == 0
    assert "OK" in capsys.readouterr().out
