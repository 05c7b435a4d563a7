"""HR@K (protocol.md §4): the share of real users with a held-out item who find it in their
top K."""
from __future__ import annotations

from .base import TEST_RANKS, UserMeanMetric, per_user_of_test_ranks


class HitRatio(UserMeanMetric):
    name = "hr"
    label = "HR@{k}"
    needs = (TEST_RANKS,)
    outcome_key = "test_hit"
    table = "Table 4 · Test {label}"
    tested = True

    def per_user(self, ev):
        return per_user_of_test_ranks(ev, lambda ranks: ranks < ev.k)
