"""NDCG@K with one held-out item: 1 / log2(rank + 2) when it is in the top K, else 0."""
from __future__ import annotations

import numpy as np

from .base import NONE, TEST_RANKS, UserMeanMetric, per_user_of_test_ranks


class NDCG(UserMeanMetric):
    name = "ndcg"
    label = "NDCG@{k}"
    needs = (TEST_RANKS,)
    interval = NONE

    def per_user(self, ev):
        return per_user_of_test_ranks(
            ev, lambda ranks: np.where(ranks < ev.k, 1.0 / np.log2(ranks + 2.0), 0.0))
