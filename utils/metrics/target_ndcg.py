"""Target NDCG@K (T-NDCG in VAT and PamaCF; ``split.mode: ratio``): per target, the mean over
its eligible real users (who have not interacted with it, held-out test rows included) of
1 / log2(rank + 2) when the target is in their top K, else 0 — one relevant item, IDCG 1 —
averaged over the targets (the gain of ``utils/topk_metrics.target_hits_from_scores``). Its
intervals resample users and targets as target HR's do, from the stored gains."""
from __future__ import annotations

import numpy as np

from .base import RATIO
from .target_hit_ratio import TargetHitRatio


class TargetNDCG(TargetHitRatio):
    name = "target_ndcg"
    label = "target NDCG@{k}"
    protocols = (RATIO,)
    outcome_key = "target_gain"
    table = "Target NDCG@{k}"
    tested = False

    @staticmethod
    def gains(ev) -> np.ndarray:
        """(U, T) float64: 1 / log2(rank + 2) inside the top K, else 0; NaN if not eligible."""
        inside = (ev.target_ranks < ev.k) & (ev.target_ranks >= 0)
        ranks = np.maximum(ev.target_ranks, 0).astype(np.float64)
        return np.where(ev.eligible, np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0), np.nan)

    def outcome_values(self, ev):
        return self.gains(ev).astype(np.float32)

    def compute(self, ev):
        n_elig = ev.eligible.sum(0)
        total = np.nansum(self.gains(ev), axis=0)
        per_target = np.where(n_elig > 0, total / np.maximum(n_elig, 1), 0.0)
        return float(per_target.mean())
