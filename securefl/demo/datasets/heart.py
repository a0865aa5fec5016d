"""The UCI Heart Disease data as four hospitals: a natural non-IID federated split.

920 patients from Cleveland (304), Hungary (293), VA Long Beach (200) and Switzerland (123),
collected in 1988; the label is ``num > 0`` (any angiographic disease). Disease prevalence
ranges from 36% (Hungary) to 93% (Switzerland). The same split is FLamby's
Fed-Heart-Disease task (Ogier du Terrail et al., NeurIPS 2022 Datasets and Benchmarks);
FLamby keeps only the 740 complete records, whereas this loader keeps all 920 and imputes.

Data: Janosi, A., Steinbrunn, W., Pfisterer, M., Detrano, R. (1988). Heart Disease. UCI
Machine Learning Repository, doi:10.24432/C52P4X. Licence: CC BY 4.0 (see
``HEART_DISEASE_LICENSE.md`` next to the CSV).

Preprocessing, in order
-----------------------
1. **Split.** Per hospital, a stratified train/test split: the rows of each class are
   shuffled by ``numpy.random.default_rng((seed, hospital_index))`` and the first
   ``round(test_fraction * n_class)`` go to test. No row is dropped.
2. **Missing values.** Empty fields are missing. So are ``chol == 0`` (all 123 Swiss
   patients and 49 at VA Long Beach) and ``trestbps == 0`` (one VA patient): neither is
   physiologically possible and both are the known missing-value marker of these files.
3. **Continuous columns** ``age, trestbps, chol, thalch, oldpeak, ca``: a missing value is
   replaced by the column's median, then every value is standardized with the column's mean
   and standard deviation. Median, mean and standard deviation are computed over the
   *training* rows of *all* hospitals pooled, never over a test row. In a deployment the
   hospitals would pool these statistics with secure aggregation (sums and counts for mean
   and variance, a histogram for the median) instead of their rows; one shared
   transformation keeps the features comparable across hospitals, which FedAvg needs.
4. **Missing indicators.** ``trestbps, chol, thalch, oldpeak, ca`` each get a 0/1
   ``<column>_missing`` feature, so the model can tell an imputed median from a measured
   one. Missingness differs strongly between hospitals (``ca`` is missing for 608 of the
   616 patients outside Cleveland), so these features also carry part of the hospital's
   identity, as real clinical data would.
5. **Categorical columns** ``sex, cp, fbs, restecg, exang, slope, thal`` are one-hot encoded
   over a fixed category list (:data:`CATEGORIES`). A missing value is the all-zero vector:
   with a bias term this spans exactly the same models as a separate "missing" category,
   with one feature fewer per column.
6. ``id`` and ``dataset`` are dropped from the features (``id`` is kept as ``train_ids`` /
   ``test_ids`` for provenance).

Everything is deterministic for a given ``seed`` and takes a few milliseconds.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import numpy as np
from numpy.typing import NDArray

from securefl.errors import ConfigError

__all__ = [
    "CATEGORIES",
    "CONTINUOUS",
    "HOSPITALS",
    "MISSING_INDICATORS",
    "HospitalData",
    "load_hospitals",
    "load_pooled",
    "pool",
]

#: The four hospitals, in the order every result of this module uses.
HOSPITALS: tuple[str, ...] = ("Cleveland", "Hungary", "VA Long Beach", "Switzerland")

#: Continuous columns: median-imputed, then standardized.
CONTINUOUS: tuple[str, ...] = ("age", "trestbps", "chol", "thalch", "oldpeak", "ca")

#: Continuous columns that get a ``<column>_missing`` 0/1 feature.
MISSING_INDICATORS: tuple[str, ...] = ("trestbps", "chol", "thalch", "oldpeak", "ca")

#: Continuous columns where 0 is the file's marker for a missing value.
_ZERO_IS_MISSING: frozenset[str] = frozenset({"trestbps", "chol"})

#: Categorical columns and their fixed category lists (one-hot, missing = all zero).
CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "sex": ("Female", "Male"),
    "cp": ("asymptomatic", "atypical angina", "non-anginal", "typical angina"),
    "fbs": ("FALSE", "TRUE"),
    "restecg": ("lv hypertrophy", "normal", "st-t abnormality"),
    "exang": ("FALSE", "TRUE"),
    "slope": ("downsloping", "flat", "upsloping"),
    "thal": ("fixed defect", "normal", "reversable defect"),
}

_COLUMNS = ("id", "dataset", "num", *CONTINUOUS, *CATEGORIES)
_CSV_NAME = "heart_disease_uci.csv"


@dataclass(frozen=True, eq=False)
class HospitalData:
    """One hospital's (or a pool's) preprocessed train and test split.

    Attributes
    ----------
    name : str
        The hospital (``"pooled"`` for :func:`pool`).
    x_train, x_test : numpy.ndarray
        float32 features, shape ``(n, len(feature_names))``.
    y_train, y_test : numpy.ndarray
        float32 labels, 1.0 where ``num > 0`` (disease), else 0.0.
    feature_names : tuple of str
        The name of each feature column.
    train_ids, test_ids : numpy.ndarray
        int64 values of the CSV's ``id`` column for each row, for provenance.
    """

    name: str
    x_train: NDArray[np.float32]
    y_train: NDArray[np.float32]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.float32]
    feature_names: tuple[str, ...]
    train_ids: NDArray[np.int64]
    test_ids: NDArray[np.int64]

    @property
    def n_train(self) -> int:
        """Number of training rows (the FedAvg weight of this hospital)."""
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test rows."""
        return int(self.y_test.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.feature_names)


@dataclass(frozen=True)
class _Raw:
    ids: NDArray[np.int64]
    hospital: NDArray[np.int64]  # index into HOSPITALS
    label: NDArray[np.float32]
    continuous: NDArray[np.float64]  # NaN where missing
    categorical: NDArray[np.int64]  # index into CATEGORIES[column], -1 where missing


def _read_csv_text(path: str | os.PathLike[str] | None) -> str:
    if path is None:
        return resources.files("securefl.demo.datasets").joinpath(_CSV_NAME).read_text("utf-8")
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _parse(text: str) -> _Raw:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing_columns = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
    if missing_columns:
        raise ValueError(f"heart disease CSV lacks columns {missing_columns}")
    ids: list[int] = []
    hospital: list[int] = []
    label: list[float] = []
    continuous: list[list[float]] = []
    categorical: list[list[int]] = []
    for line, row in enumerate(reader, start=2):
        try:
            hospital.append(HOSPITALS.index(row["dataset"]))
            ids.append(int(row["id"]))
            label.append(1.0 if int(row["num"]) > 0 else 0.0)
            values = []
            for column in CONTINUOUS:
                text_value = row[column].strip()
                value = float(text_value) if text_value else math.nan
                if value == 0.0 and column in _ZERO_IS_MISSING:
                    value = math.nan
                values.append(value)
            continuous.append(values)
            codes = []
            for column, categories in CATEGORIES.items():
                text_value = row[column].strip()
                codes.append(categories.index(text_value) if text_value else -1)
            categorical.append(codes)
        except ValueError as exc:
            # An unknown hospital or category would otherwise shift every one-hot column.
            raise ValueError(f"heart disease CSV line {line}: {exc}") from exc
    if not ids:
        raise ValueError("heart disease CSV has no rows")
    return _Raw(
        ids=np.asarray(ids, dtype=np.int64),
        hospital=np.asarray(hospital, dtype=np.int64),
        label=np.asarray(label, dtype=np.float32),
        continuous=np.asarray(continuous, dtype=np.float64),
        categorical=np.asarray(categorical, dtype=np.int64),
    )


def _stratified_split(
    raw: _Raw, test_fraction: float, seed: int
) -> dict[str, tuple[NDArray[np.intp], NDArray[np.intp]]]:
    splits: dict[str, tuple[NDArray[np.intp], NDArray[np.intp]]] = {}
    for index, name in enumerate(HOSPITALS):
        # One generator per hospital: a hospital's split does not depend on the others'.
        rng = np.random.default_rng((seed, index))
        train_parts: list[NDArray[np.intp]] = []
        test_parts: list[NDArray[np.intp]] = []
        for cls in (0.0, 1.0):
            rows = np.flatnonzero((raw.hospital == index) & (raw.label == cls))
            shuffled = rng.permutation(rows)
            n_test = math.floor(test_fraction * rows.size + 0.5)
            test_parts.append(shuffled[:n_test])
            train_parts.append(shuffled[n_test:])
        train = np.sort(np.concatenate(train_parts))
        test = np.sort(np.concatenate(test_parts))
        if train.size == 0 or test.size == 0:
            raise ConfigError(
                f"test_fraction={test_fraction} leaves {name} with {train.size} training "
                f"and {test.size} test rows; both must be non-empty"
            )
        splits[name] = (train, test)
    return splits


def _features(
    raw: _Raw, train_rows: NDArray[np.intp]
) -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """Transform every row with statistics fitted on ``train_rows`` only."""
    cont = raw.continuous
    fit = cont[train_rows]
    n_observed = np.count_nonzero(~np.isnan(fit), axis=0)
    empty = [c for j, c in enumerate(CONTINUOUS) if n_observed[j] == 0]
    if empty:
        raise ValueError(f"columns {empty} have no observed training value to impute from")
    medians = np.nanmedian(fit, axis=0)
    imputed = np.where(np.isnan(cont), medians, cont)
    mean = imputed[train_rows].mean(axis=0)
    std = imputed[train_rows].std(axis=0)
    # A constant column would divide by zero; it carries no information either way.
    std = np.where(std > 0.0, std, 1.0)
    blocks = [(imputed - mean) / std]
    names = list(CONTINUOUS)

    for column in MISSING_INDICATORS:
        blocks.append(np.isnan(cont[:, [CONTINUOUS.index(column)]]).astype(np.float64))
        names.append(f"{column}_missing")

    for j, (column, categories) in enumerate(CATEGORIES.items()):
        codes = raw.categorical[:, j]
        blocks.append((codes[:, None] == np.arange(len(categories))[None, :]).astype(np.float64))
        names.extend(f"{column}={category}" for category in categories)

    return np.concatenate(blocks, axis=1).astype(np.float32), tuple(names)


def load_hospitals(
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, HospitalData]:
    """Load each hospital's preprocessed, stratified train/test split.

    See the module docstring for every preprocessing step.

    Parameters
    ----------
    test_fraction : float
        Fraction of each hospital's rows, per class, held out for testing; in (0, 1).
    seed : int
        Non-negative seed of the split's shuffle (data splitting, not cryptography).
    path : str or os.PathLike, optional
        A CSV with the same columns, instead of the copy bundled with securefl (tests use
        this to check that test rows do not influence training features).

    Returns
    -------
    dict of str to HospitalData
        Keyed by hospital name, in :data:`HOSPITALS` order. All hospitals share the same
        feature columns and the same transformation.

    Raises
    ------
    ConfigError
        If ``test_fraction`` is not in (0, 1), ``seed`` is negative, or the split leaves a
        hospital without training or test rows.
    ValueError
        If the CSV lacks a column, has an unknown hospital or category, an unparsable
        number, or a continuous column with no observed training value.
    OSError
        If ``path`` cannot be read.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    raw = _parse(_read_csv_text(path))
    splits = _stratified_split(raw, test_fraction, seed)
    # Fitting on the union of training rows only: no statistic ever sees a test row.
    all_train = np.sort(np.concatenate([train for train, _ in splits.values()]))
    x, names = _features(raw, all_train)
    return {
        name: HospitalData(
            name=name,
            x_train=x[train],
            y_train=raw.label[train],
            x_test=x[test],
            y_test=raw.label[test],
            feature_names=names,
            train_ids=raw.ids[train],
            test_ids=raw.ids[test],
        )
        for name, (train, test) in splits.items()
    }


def pool(hospitals: Mapping[str, HospitalData]) -> HospitalData:
    """Concatenate hospitals' splits (train with train, test with test), in mapping order.

    Parameters
    ----------
    hospitals : mapping of str to HospitalData
        Splits that share their feature columns, as returned by :func:`load_hospitals`.

    Returns
    -------
    HospitalData
        Named ``"pooled"``: the data a centralized baseline trains and tests on.

    Raises
    ------
    ValueError
        If ``hospitals`` is empty or the hospitals' feature columns differ.
    """
    parts = list(hospitals.values())
    if not parts:
        raise ValueError("pool needs at least one hospital")
    names = parts[0].feature_names
    if any(part.feature_names != names for part in parts):
        raise ValueError("hospitals have different feature columns; load them together")
    return HospitalData(
        name="pooled",
        x_train=np.concatenate([p.x_train for p in parts]),
        y_train=np.concatenate([p.y_train for p in parts]),
        x_test=np.concatenate([p.x_test for p in parts]),
        y_test=np.concatenate([p.y_test for p in parts]),
        feature_names=names,
        train_ids=np.concatenate([p.train_ids for p in parts]),
        test_ids=np.concatenate([p.test_ids for p in parts]),
    )


def load_pooled(
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
) -> HospitalData:
    """All four hospitals' splits concatenated: the centralized baseline's data.

    The rows and features are exactly those of :func:`load_hospitals` with the same
    arguments, so a centralized model is tested on the same test rows as a federated one.

    Parameters
    ----------
    test_fraction, seed, path
        As for :func:`load_hospitals`.

    Returns
    -------
    HospitalData
        Named ``"pooled"``, rows in :data:`HOSPITALS` order.

    Raises
    ------
    ConfigError, ValueError, OSError
        As for :func:`load_hospitals`.
    """
    return pool(load_hospitals(test_fraction=test_fraction, seed=seed, path=path))
