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
        return float(self.of_mse(np.mean(err ** 2))) if len(err) else float("nan")

    @staticmethod
    def of_mse(mse):
        return mse


class TestRMSE(TestMSE):
    name = "test_rmse"
    label = "test RMSE"

    @staticmethod
    def of_mse(mse):
        return np.sqrt(mse)
