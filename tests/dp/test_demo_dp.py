"""`securefl demo --dp-epsilon`: DP-FedSGD through SecAgg with distributed DP."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from securefl.cli import main
from securefl.demo.heart import DemoOptions, DPOptions, run_dp_study


def test_dp_demo_table_plot_and_json(tmp_path, capsys) -> None:
    png, out = tmp_path / "dp.png", tmp_path / "dp.json"
    code = main(
        [
            "demo",
            "--dp-epsilon",
            "8,inf",
            "--dp-rounds",
            "12",
            "--plot",
            str(png),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "DP-FedSGD eps=8" in text and "DP-FedSGD eps=inf" in text and "non-private" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["FedAvg plain", "DP-FedSGD eps=8", "DP-FedSGD eps=inf"]
    plain = rows[0]["metrics"]["overall"]["accuracy"]
    for row in rows[1:]:
        assert abs(row["metrics"]["overall"]["accuracy"] - plain) < 0.1
    assert (
        rows[1]["extra"]["epsilon_per_round"] < 8 and rows[1]["extra"]["noise_std_per_hospital"] > 0
    )


def test_dp_study_with_dropouts_and_skellam() -> None:
    rows = run_dp_study(
        DemoOptions(rounds=3, dropout=0.3, seed=1),
        DPOptions(epsilons=(3.0,), rounds=6, mechanism="skellam"),
    )
    assert rows[1].extra["mechanism"] == "skellam"
    assert 0.5 < rows[1].metrics["overall"]["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--dp-epsilon", "x"],
        ["demo", "--dp-epsilon", "0"],
        ["demo", "--plot", "a.png"],
        ["demo", "--dp-epsilon", "1", "--dp-bits", "8"],
    ],
)
def test_dp_demo_bad_arguments(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert "error" in capsys.readouterr().err
