"""Real data sets that ship with securefl, for the training demo and its tests.

:mod:`securefl.demo.datasets.heart` holds the UCI Heart Disease data of four hospitals
(CC BY 4.0, see ``HEART_DISEASE_LICENSE.md`` next to the CSV).
"""

from securefl.demo.datasets.heart import HOSPITALS, HospitalData, load_hospitals, load_pooled, pool

__all__ = ["HOSPITALS", "HospitalData", "load_hospitals", "load_pooled", "pool"]
