"""``securefl bench --compare``: Flower's SecAgg+ and TenSEAL's CKKS sum on the same scenario."""

from __future__ import annotations

import json

import pytest

from securefl.cli import main

pytest.importorskip("flwr")
pytest.importorskip("tenseal")


def test_compare_flower_and_tenseal_on_a_tiny_scenario(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--clients",
            "8",
            "--dim",
            "5000",
            "--degree",
            "6",
            "--dropout",
            "0.25",
            "--compare",
            "flower,tenseal",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "SecAgg+ full round, n=8, k=6, t=4" in text
    assert "CKKS server sum of 6 clients" in text
    data = json.loads(out.read_text())
    assert data["scenario"]["threads"] == 1  # the same single thread as Flower's round
    flower, tenseal = data["comparisons"]
    assert flower["baseline"] == "flower" and tenseal["baseline"] == "tenseal"
    assert flower["versions"]["flwr"] == "1.42.0"
    # Both protocols recover their weighted mean; securefl at 2^-(b - log2 n c) steps,
    # Flower at its 2c / 2^22 step divided by the realized weights (~n / 1000 each).
    assert flower["securefl_max_error"] < 1e-6
    assert flower["baseline_max_error"] < 5e-3
    # Flower ships its int64 vector (8 bytes per coordinate); securefl packs 32 bits.
    assert flower["upload_ratio"] > 1.9
    assert flower["securefl_upload_bytes"] == data["upload_bytes_per_client"]
    for c in (flower, tenseal):
        assert c["speedup"] == pytest.approx(c["baseline_seconds"] / c["securefl_seconds"])
        assert c["securefl_seconds"] > 0 and c["baseline_seconds"] > 0
    # The same ciphertexts: one 8192-slot chunk, packed smaller than TenSEAL's zstd blob.
    assert "bit-identical" in tenseal["notes"]
    assert tenseal["upload_ratio"] > 1.0


def test_compare_rejects_unknown_baselines(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--clients", "4", "--dim", "100", "--compare", "flower,pysyft"])
    assert "--compare takes a list of flower, tenseal" in capsys.readouterr().err


def test_comparisons_default_to_empty() -> None:
    from securefl.bench.secagg import Scenario, run

    outcome = run(Scenario(clients=4, dimension=50, degree=2, dropout=0.0))
    assert outcome.completed and outcome.comparisons == []


def test_compare_is_skipped_when_securefl_aborts(capsys) -> None:
    # k = 4, t = 3 and two neighbours dropped: client 5 keeps only 2 share holders.
    args = ["bench", "--clients", "8", "--dim", "100", "--degree", "4", "--dropout", "0.25"]
    assert main([*args, "--compare", "flower"]) == 1
    text = capsys.readouterr().out
    assert "ABORTED" in text and "comparison skipped" in text


def test_compare_flower_needs_a_secagg_scenario(capsys) -> None:
    from securefl.bench.compare import compare
    from securefl.bench.secagg import Outcome, Scenario

    with pytest.raises(SystemExit):
        main(
            ["bench", "--protocol", "ckks", "--clients", "4", "--dim", "10", "--compare", "flower"]
        )
    assert "compares SecAgg rounds" in capsys.readouterr().err
    outcome = Outcome(scenario={}, completed=True, abort_reason=None, survivors=4, wall_seconds=1)
    with pytest.raises(ValueError, match="compares SecAgg rounds"):
        compare(Scenario(protocol="ckks"), outcome, ["flower"])
