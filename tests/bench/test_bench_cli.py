from __future__ import annotations

import json

from securefl.cli import main


def test_bench_runs_a_tiny_scenario_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--clients",
            "8",
            "--dim",
            "3000",
            "--degree",
            "6",
            "--dropout",
            "0.25",
            "--json",
            str(out),
            "--memory",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "SecAgg+: n=8" in text and "MaskedInputCollection" in text
    data = json.loads(out.read_text())
    assert data["completed"] is True
    assert data["survivors"] == 6
    assert data["upload_bytes_per_client"] >= 4 * 3001
    assert data["upload_over_float32"] < 1.1  # key-exchange bytes weigh more at tiny d
    assert data["max_abs_error"] < 1e-4
    assert data["server_peak_bytes"] > 0
    assert set(data["round_seconds"]) == {
        "AdvertiseKeys",
        "ShareKeys",
        "MaskedInputCollection",
        "Unmasking",
    }


def test_bench_sweep_from_toml_with_plot(tmp_path, capsys) -> None:
    config = tmp_path / "scenarios.toml"
    config.write_text(
        '[defaults]\ngraph = "harary"\ndegree = 4\ndropout = 0.0\n\n'
        "[[scenario]]\nclients = [6, 8]\ndim = [500, 1000]\n\n"
        '[[scenario]]\ngraph = "complete"\nclients = 5\ndim = 200\n'
    )
    out = tmp_path / "sweep.json"
    png = tmp_path / "bench.png"
    code = main(["bench", "--config", str(config), "--json", str(out), "--plot", str(png)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["schema"] == 1
    shapes = [
        (r["scenario"]["clients"], r["scenario"]["dimension"], r["scenario"]["graph"])
        for r in data["results"]
    ]
    assert shapes == [
        (6, 500, "harary"),
        (6, 1000, "harary"),
        (8, 500, "harary"),
        (8, 1000, "harary"),
        (5, 200, "complete"),
    ]
    assert all(r["completed"] and r["environment"]["cpu"] for r in data["results"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot written" in capsys.readouterr().out


def test_bench_sweep_from_flags() -> None:
    from securefl.bench.secagg import Scenario, sweep

    scenarios = sweep(Scenario(degree=4), [5, 7], [100])
    assert [(s.clients, s.dimension) for s in scenarios] == [(5, 100), (7, 100)]


def test_bench_rejects_unknown_toml_keys(tmp_path) -> None:
    import pytest

    config = tmp_path / "bad.toml"
    config.write_text("[[scenario]]\nclients = 5\nwarp_speed = 9\n")
    with pytest.raises(SystemExit):
        main(["bench", "--config", str(config)])


def test_bench_runs_a_ckks_scenario(tmp_path, capsys) -> None:
    import pytest

    pytest.importorskip("tenseal")
    out = tmp_path / "ckks.json"
    args = ["bench", "--protocol", "ckks", "--clients", "4", "--dim", "3000"]
    assert main([*args, "--dropout", "0.25", "--json", str(out)]) == 0
    assert "CKKS: n=4 d=3,000" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["completed"] and data["survivors"] == 3
    assert set(data["round_seconds"]) == {"Keys", "Encrypt", "Sum", "Decrypt"}
    assert data["max_abs_error"] < 1e-5  # CKKS noise, ~2^-20 per client, over the weights
    # One ciphertext: 2 polynomials x 8192 coefficients over the data level's 60- and 40-bit
    # limbs, bit-packed (>= 204,800 bytes), plus headers.
    assert 204_800 <= data["upload_bytes_per_client"] < 230_000


def test_bench_protocol_sets_the_graph() -> None:
    import pytest

    from securefl.bench.secagg import Scenario

    assert Scenario(protocol="secagg").graph == "complete"
    assert Scenario(protocol="secagg", graph="harary").name == "SecAgg"
    assert Scenario(protocol="secagg+", graph="complete").name == "SecAgg+"
    assert Scenario(graph="harary").name == "SecAgg+"
    with pytest.raises(ValueError, match="protocol must be one of"):
        Scenario(protocol="paillier")
    with pytest.raises(ValueError, match="graph must be"):
        Scenario(graph="ring")


def test_plot_without_matplotlib_fails_before_running(monkeypatch, capsys) -> None:
    import importlib.util

    import pytest

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    for command in (["bench", "--clients", "4", "--dim", "10"], ["demo", "--dp-epsilon", "8"]):
        with pytest.raises(SystemExit):
            main([*command, "--plot", "out.png"])
        err = capsys.readouterr()
        assert "--plot needs matplotlib" in err.err
        assert "SecAgg" not in err.out and "epsilon" not in err.out  # nothing ran
