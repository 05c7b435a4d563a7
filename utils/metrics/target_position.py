"""Where the targets stand for the real users who have not rated them: their mean 1-based rank
and their mean predicted rating (original scale)."""
from __future__ import annotations

from .base import PROTOCOLS, TARGET_RANKS, TARGET_SCORES, Metric


class AvgTargetRank(Metric):
    name = "avg_target_rank"
    protocols = PROTOCOLS
    at_k = False
    label = "mean target rank"
    needs = (TARGET_RANKS,)

    def compute(self, ev):
        elig = ev.eligible
        return float((ev.target_ranks[elig] + 1).mean()) if elig.any() else float("nan")


class TargetScore(Metric):
    name = "target_score"
    protocols = PROTOCOLS
    at_k = False
    label = "target predicted rating"
    needs = (TARGET_SCORES,)
    higher_is_better = False

    def compute(self, ev):
        elig = ev.eligible
        return (float(ev.target_scores[elig].mean()) * ev.max_rating if elig.any()
                else float("nan"))
