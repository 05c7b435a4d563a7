"""Recall@K and NDCG@K on a held-out *set* per user (``split.mode: ratio``, the implicit top-K
protocol of LightGCN, VAT and PamaCF), at K = ``evaluation.test_k``: per real user with at least
one held-out item, Recall = |held-out items ranked < K| / |held-out items| and NDCG = DCG / IDCG
(DCG = Σ 1 / log2(rank + 2) over the held-out items in the top K, IDCG that of min(|held-out|,
K) hits in the first places); averaged over those users. The per-user values are
``utils/topk_metrics.recall_ndcg_from_ranks`` of the pessimistic ranks the evaluator found
(training and validation items masked)."""
from __future__ import annotations

import numpy as np
import torch

from ..topk_metrics import recall_ndcg_from_ranks
from .base import RATIO, TEST_SET_RANKS, UserMeanMetric


def per_user_recall_ndcg(ev) -> tuple[np.ndarray, np.ndarray]:
    """(U,) Recall@test_k and (U,) NDCG@test_k, NaN for users without a held-out item."""
    n_users = len(ev.eligible)
    recall, ndcg, _ = recall_ndcg_from_ranks(torch.as_tensor(ev.test_set_ranks),
                                             torch.as_tensor(ev.test_set_users), n_users,
                                             ev.test_k)
    return recall.numpy(), ndcg.numpy()


class Recall(UserMeanMetric):
    name = "recall"
    label = "Recall@{k}"
    k_option = "test_k"
    protocols = (RATIO,)
    needs = (TEST_SET_RANKS,)
    table = "Test {label}"
    tested = True

    def per_user(self, ev):
        return per_user_recall_ndcg(ev)[0]


class SetNDCG(UserMeanMetric):
    name = "ndcg_set"       # registry name; the column is ndcg@{test_k}
    stem = "ndcg"
    label = "NDCG@{k}"
    k_option = "test_k"
    protocols = (RATIO,)
    needs = (TEST_SET_RANKS,)
    outcome_key = "ndcg"
    table = "Test {label}"

    def per_user(self, ev):
        return per_user_recall_ndcg(ev)[1]
