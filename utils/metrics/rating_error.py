"""Rating error of the held-out items on the original rating scale: MSE and RMSE."""
from __future__ import annotations

import numpy as np

from .base import TEST_PREDICTIONS, Metric


def _errors(ev) -> np.ndarray:
    has = ev.has_test
    return (ev.test_predictions[has] - ev.test_ratings[has]) * ev.max_rating


class TestMSE(Metric):
    name = "test_mse"
    at_k = False
    label = "test MSE"
    needs = (TEST_PREDICTIONS,)
    higher_is_better = False

    def compute(self, ev):
        err = _errors(ev)
        return float(np.mean(err ** 2)) if len(err) else float("nan")


class TestRMSE(Metric):
    name = "test_rmse"
    at_k = False
    label = "test RMSE"
    needs = (TEST_PREDICTIONS,)
    higher_is_better = False

    def compute(self, ev):
        err = _errors(ev)
        return float(np.sqrt(np.mean(err ** 2))) if len(err) else float("nan")
