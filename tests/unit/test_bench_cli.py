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
