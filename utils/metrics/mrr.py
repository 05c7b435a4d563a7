"""MRR@K with one held-out item: 1 / (rank + 1) when it is in the top K, else 0, averaged
over the real users who have one (the worked example of README "Extending": this file plus one
line in the registry)."""
from __future__ import annotations

import numpy as np

from .base import TEST_RANKS, UserMeanMetric, per_user_of_test_ranks


class MRR(UserMeanMetric):
    name = "mrr"
    label = "MRR@{k}"
    needs = (TEST_RANKS,)
    table = "Test {label}"

    def per_user(self, ev):
        return per_user_of_test_ranks(
            ev, lambda ranks: np.where(ranks < ev.k, 1.0 / (ranks + 1.0), 0.0))
