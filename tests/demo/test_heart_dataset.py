"""securefl.demo.datasets.heart: sizes, stratification, preprocessing without test leakage."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from securefl.demo.datasets import HOSPITALS, HospitalData, load_hospitals, load_pooled
from securefl.demo.datasets.heart import CATEGORIES, CONTINUOUS, MISSING_INDICATORS
from securefl.errors import ConfigError

# From the data README (shared/data/README.md): patients and positives (num > 0) per hospital.
README_COUNTS = {
    "Cleveland": (304, 139),
    "Hungary": (293, 106),
    "VA Long Beach": (200, 149),
    "Switzerland": (123, 115),
}


@pytest.fixture(scope="module")
def hospitals() -> dict[str, HospitalData]:
    return load_hospitals()


def _csv_rows() -> tuple[list[str], list[dict[str, str]]]:
    text = resources.files("securefl.demo.datasets").joinpath("heart_disease_uci.csv").read_text()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return list(reader.fieldnames or ()), list(reader)


def _write_csv(path: Path, fieldnames: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_bundled_files_ship_in_the_package() -> None:
    package = resources.files("securefl.demo.datasets")
    licence = package.joinpath("HEART_DISEASE_LICENSE.md").read_text()
    assert "doi:10.24432/C52P4X" in licence
    assert "CC BY 4.0" in licence
    _, rows = _csv_rows()
    assert len(rows) == 920


def test_sizes_and_positives_match_the_readme_and_no_row_is_dropped(
    hospitals: dict[str, HospitalData],
) -> None:
    assert tuple(hospitals) == HOSPITALS
    for name, (patients, positives) in README_COUNTS.items():
        data = hospitals[name]
        assert data.n_train + data.n_test == patients
        assert int(data.y_train.sum() + data.y_test.sum()) == positives
        ids = np.concatenate([data.train_ids, data.test_ids])
        assert np.unique(ids).size == patients  # no row in both splits


def test_split_is_stratified_within_one_example(hospitals: dict[str, HospitalData]) -> None:
    for name, (patients, positives) in README_COUNTS.items():
        data = hospitals[name]
        rate = positives / patients
        assert abs(data.n_test - 0.25 * patients) <= 1
        assert abs(data.y_test.sum() - rate * data.n_test) <= 1
        assert abs(data.y_train.sum() - rate * data.n_train) <= 1
    # Switzerland has 8 negatives: 2 are held out, not 0 (or the test AUC is undefined).
    assert int((hospitals["Switzerland"].y_test == 0).sum()) == 2


def test_features_are_finite_float32_with_documented_columns(
    hospitals: dict[str, HospitalData],
) -> None:
    n_features = (
        len(CONTINUOUS) + len(MISSING_INDICATORS) + sum(len(c) for c in CATEGORIES.values())
    )
    assert n_features == 30
    for data in hospitals.values():
        assert data.feature_names[:6] == CONTINUOUS
        assert "id" not in data.feature_names and "dataset" not in data.feature_names
        for array in (data.x_train, data.x_test, data.y_train, data.y_test):
            assert array.dtype == np.float32
            assert np.all(np.isfinite(array))
        assert data.x_train.shape == (data.n_train, n_features)
        assert data.x_test.shape == (data.n_test, n_features)
        assert set(np.unique(np.concatenate([data.y_train, data.y_test]))) == {0.0, 1.0}


def test_standardization_uses_pooled_training_rows(hospitals: dict[str, HospitalData]) -> None:
    x_train = np.concatenate([h.x_train for h in hospitals.values()]).astype(np.float64)
    x_test = np.concatenate([h.x_test for h in hospitals.values()]).astype(np.float64)
    np.testing.assert_allclose(x_train[:, :6].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train[:, :6].std(axis=0), 1.0, atol=1e-5)
    # The test rows are transformed with the training statistics, not their own.
    assert np.max(np.abs(x_test[:, :6].mean(axis=0))) > 1e-3


def test_zero_cholesterol_is_missing_and_imputed(hospitals: dict[str, HospitalData]) -> None:
    swiss = hospitals["Switzerland"]
    names = swiss.feature_names
    chol, chol_missing = names.index("chol"), names.index("chol_missing")
    x = np.concatenate([swiss.x_train, swiss.x_test])
    # Every Swiss patient has chol == 0 in the file: all missing, all the same imputed value.
    assert np.all(x[:, chol_missing] == 1.0)
    assert np.unique(x[:, chol]).size == 1
    cleveland = hospitals["Cleveland"]
    assert np.all(cleveland.x_train[:, chol_missing] == 0.0)
    assert np.unique(cleveland.x_train[:, chol]).size > 50


def test_one_hot_blocks_are_one_or_all_zero_when_missing(
    hospitals: dict[str, HospitalData],
) -> None:
    names = hospitals["Cleveland"].feature_names
    x = np.concatenate([h.x_train for h in hospitals.values()])
    for column, categories in CATEGORIES.items():
        cols = [names.index(f"{column}={c}") for c in categories]
        row_sums = x[:, cols].sum(axis=1)
        assert set(np.unique(row_sums)) <= {0.0, 1.0}
        if column in ("sex", "cp"):  # never missing in the file
            assert np.all(row_sums == 1.0)
    thal = [names.index(f"thal={c}") for c in CATEGORIES["thal"]]
    hungary = hospitals["Hungary"]
    # thal is missing for 265 of Hungary's 293 patients.
    assert int((hungary.x_train[:, thal].sum(axis=1) == 0).sum()) > 150


def test_changing_a_test_row_changes_no_training_feature(tmp_path: Path) -> None:
    fieldnames, rows = _csv_rows()
    base = load_hospitals()
    test_id = int(base["Hungary"].test_ids[0])
    train_id = int(base["Hungary"].train_ids[0])

    def perturbed(row_id: int) -> dict[str, HospitalData]:
        changed = [dict(r) for r in rows]
        row = next(r for r in changed if int(r["id"]) == row_id)
        row.update(age="99", trestbps="250", chol="600", thalch="60", oldpeak="6.2", ca="3")
        name = f"perturbed_{row_id}.csv"
        return load_hospitals(path=_write_csv(tmp_path / name, fieldnames, changed))

    after_test_change = perturbed(test_id)
    for name in HOSPITALS:
        np.testing.assert_array_equal(after_test_change[name].x_train, base[name].x_train)
        np.testing.assert_array_equal(after_test_change[name].train_ids, base[name].train_ids)
    changed_rows = np.flatnonzero(
        np.any(after_test_change["Hungary"].x_test != base["Hungary"].x_test, axis=1)
    )
    assert changed_rows.tolist() == [0]

    # Control: the same change to a training row does move the statistics, so the check
    # above could fail.
    after_train_change = perturbed(train_id)
    assert not np.array_equal(after_train_change["Cleveland"].x_train, base["Cleveland"].x_train)


def test_split_is_deterministic_for_a_seed() -> None:
    a, b, c = load_hospitals(seed=3), load_hospitals(seed=3), load_hospitals(seed=4)
    for name in HOSPITALS:
        np.testing.assert_array_equal(a[name].x_train, b[name].x_train)
        np.testing.assert_array_equal(a[name].test_ids, b[name].test_ids)
    assert any(not np.array_equal(a[n].test_ids, c[n].test_ids) for n in HOSPITALS)


def test_pooled_is_the_concatenation_in_hospital_order(
    hospitals: dict[str, HospitalData],
) -> None:
    pooled = load_pooled()
    assert pooled.name == "pooled"
    assert pooled.n_train == sum(h.n_train for h in hospitals.values()) == 689
    assert pooled.n_test == 231
    np.testing.assert_array_equal(
        pooled.x_test, np.concatenate([h.x_test for h in hospitals.values()])
    )
    np.testing.assert_array_equal(
        pooled.train_ids, np.concatenate([h.train_ids for h in hospitals.values()])
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_outside_the_open_interval_is_rejected(fraction: float) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        load_hospitals(test_fraction=fraction)


def test_a_split_that_empties_a_hospital_is_rejected() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        load_hospitals(test_fraction=0.001)


def test_negative_seed_is_rejected() -> None:
    with pytest.raises(ConfigError, match="seed"):
        load_hospitals(seed=-1)


def test_unknown_category_is_rejected_with_its_line(tmp_path: Path) -> None:
    fieldnames, rows = _csv_rows()
    rows = [dict(r) for r in rows]
    rows[4]["cp"] = "severe"
    with pytest.raises(ValueError, match="line 6"):
        load_hospitals(path=_write_csv(tmp_path / "bad.csv", fieldnames, rows))


def test_missing_column_is_rejected(tmp_path: Path) -> None:
    fieldnames, rows = _csv_rows()
    kept = [f for f in fieldnames if f != "thal"]
    rows = [{k: r[k] for k in kept} for r in rows]
    with pytest.raises(ValueError, match="thal"):
        load_hospitals(path=_write_csv(tmp_path / "no_thal.csv", kept, rows))
