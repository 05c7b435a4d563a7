"""Target HR@K (protocol.md §4): per target, the share of its eligible real users (those who
have not rated it) with the target in their top K, averaged over the targets; and the pooled
variant over all (real user, target) pairs."""
from __future__ import annotations

import numpy as np

from .base import TargetPairMetric


class TargetHitRatio(TargetPairMetric):
    name = "target_hr"
    label = "target HR@{k}"
    higher_is_better = False   # the attack promotes the targets: lower is better for the system
    tested = True

    def compute(self, ev):
        hits = self.hits(ev)
        n_elig = ev.eligible.sum(0)
        per_target = np.where(n_elig > 0, hits.sum(0) / np.maximum(n_elig, 1), 0.0)
        return float(per_target.mean())

    def resampled(self, stored, weights):
        num, counted = self.weighted_hits(stored, weights)
        rate = np.where(counted > 0, num / np.maximum(counted, 1e-30), 0.0)
        return self.mean_over_targets(rate, weights)

    def user_contributions(self, a, b):
        """(hit_a − hit_b) / (T · n_t) summed over each user's eligible targets (n_t: the
        target's eligible users), so the contributions add up to the difference exactly."""
        a, b = (np.asarray(x[self.outcome], float) for x in (a, b))
        elig = ~np.isnan(a) & ~np.isnan(b)
        n_t = elig.sum(0)
        share = np.where(elig, np.nan_to_num(a) - np.nan_to_num(b), 0.0) / (
            a.shape[1] * np.maximum(n_t, 1))
        return share.sum(1)[elig.any(1)]


class TargetHitRatioAll(TargetPairMetric):
    name = "target_hr_all"
    label = "target HR (all pairs)@{k}"
    higher_is_better = False

    def compute(self, ev):
        return float(self.hits(ev).sum() / ev.target_ranks.size)

    def resampled(self, stored, weights):
        num, _ = self.weighted_hits(stored, weights)
        rate = num / weights.user_w.sum(1, keepdims=True)
        return self.mean_over_targets(rate, weights)
