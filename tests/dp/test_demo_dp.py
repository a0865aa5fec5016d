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


def test_dp_noise_is_fresh_unless_asked_to_repeat() -> None:
    """`--seed` fixes data and model; the DP noise repeats only with --dp-reproducible."""
    opts = DemoOptions(rounds=2, seed=3)

    def accuracy(reproducible: bool) -> float:
        dp = DPOptions(epsilons=(1.0,), rounds=4, reproducible_noise=reproducible)
        rows = run_dp_study(opts, dp)
        return rows[1].metrics["overall"]["auc"]

    assert accuracy(True) == accuracy(True)
    fresh = {accuracy(False) for _ in range(3)}
    assert len(fresh) > 1  # three runs with OS randomness do not all land on one value
