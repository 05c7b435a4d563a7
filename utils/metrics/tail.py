"""Utility metrics that see the long tail (issue 29): whether a model still recommends — and
still hits — the rarely rated items, which target HR and test HR@K cannot tell from robustness.

**Head and long tail.** An item's popularity is its number of training ratings by the real users
(fake users never count). The head is the most-rated items that make up at most
``evaluation.tail.head_share`` (default 0.2) of the catalogue; every other item is long tail.
With ``q = floor(head_share · I)`` and ``c`` the popularity of the (q+1)-th most-rated item, the
head is every item rated *more than* ``c`` times: a tie group at the boundary goes to the tail
as a whole (the same rule as the pessimistic ranks: an item is in the top q only if fewer than
q other items are at least as popular), so the head never exceeds ``head_share`` and never
depends on item ids. ``head_share = 0``: no head, every item is long tail. The threshold ``c``
and the actual head share are recorded in ``meta.json`` (``tail``) per dataset and seed.

**Top-K lists** are those of the pessimistic ranks (``Evaluation.top_items``): an item is listed
only if fewer than K other unmasked items score at least as high, so a tie group straddling rank
K is left out whole and a model that scores everything equally lists nothing. Every metric
below divides by K (an unfilled slot is no tail slot), as RecBole's ``TailPercentage`` does.

* ``tail_share@K`` (APLT; Abdollahpouri et al., FLAIRS 2019; RecBole ``TailPercentage``): mean
  over real users of (long-tail items in the user's top K) / K. Per-user outcome: that share.
* ``tail_hr@K``: HR@K over the real users whose held-out test item is long tail (NaN when no
  user's test item is). Per-user outcome: hit 1 / miss 0, NaN for the other users.
* ``coverage@K`` (RecBole ``ItemCoverage``): share of the catalogue in at least one real user's
  top K. A :class:`ListMetric`: recomputed from the stored lists under bootstrap user weights.
* ``gini@K`` (RecBole ``GiniIndex``): Gini index of the items' exposure (slots in all real
  users' top-K lists; never-recommended items count with 0): with the exposures sorted
  ascending x₁ ≤ … ≤ x_I, Σᵢ (2i − I − 1) xᵢ / (I Σ x). 0: every item shown equally; → 1: all
  exposure on one item. Lower is more even. A :class:`ListMetric`.

Both list metrics' bootstrap intervals are bias-corrected (``Metric.debias``): a resample of
users repeats some and drops others, which lowers coverage and raises the Gini index; a
cell's own interval is then clipped to [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .base import LONG_TAIL, PROTOCOLS, TEST_RANKS, TOP_ITEMS, ListMetric, UserMeanMetric


@dataclass(frozen=True)
class Head:
    """The head/long-tail split of a catalogue (see the module docstring)."""
    long_tail: np.ndarray  # (I,) bool
    threshold: int         # head = items with more than this many training ratings
    n_head: int
    share: float           # n_head / I: the actual head share (≤ head_share)

    def record(self) -> dict:
        return {"threshold": self.threshold, "head_items": self.n_head,
                "head_share": round(self.share, 6), "tail_items": int(self.long_tail.sum())}


def split_head(popularity: np.ndarray, head_share: float) -> Head:
    """The head (at most ``head_share`` of the items, the most rated, boundary ties to the
    tail) and the long tail of a catalogue whose items have ``popularity`` ratings."""
    popularity = np.asarray(popularity, dtype=np.int64)
    n = len(popularity)
    quota = min(int(math.floor(head_share * n + 1e-9)), n)
    if n == 0:
        return Head(np.zeros(0, dtype=bool), 0, 0, 0.0)
    if quota == 0:
        threshold = int(popularity.max())
    elif quota >= n:
        threshold = -1
    else:
        # The (q+1)-th largest count: partition, not a full sort.
        threshold = int(np.partition(popularity, n - quota - 1)[n - quota - 1])
    head = popularity > threshold
    n_head = int(head.sum())
    return Head(~head, threshold, n_head, n_head / n)


def _listed(ev) -> tuple[np.ndarray, np.ndarray]:
    """(U, K) bool: a listed slot; and its item ids with -1 replaced by 0 (for indexing)."""
    shown = ev.top_items >= 0
    return shown, np.where(shown, ev.top_items, 0)


class TailShare(UserMeanMetric):
    name = "tail_share"
    protocols = PROTOCOLS
    label = "tail share@{k}"
    needs = (TOP_ITEMS, LONG_TAIL)

    def per_user(self, ev):
        shown, items = _listed(ev)
        tail = (shown & ev.long_tail[items]).sum(1)
        return tail / float(ev.k)


class TailHitRatio(UserMeanMetric):
    name = "tail_hr"
    label = "tail HR@{k}"
    needs = (TEST_RANKS, LONG_TAIL)
    outcome_key = "tail_hit"

    def per_user(self, ev):
        counts = ev.has_test & ev.long_tail[np.maximum(ev.test_items, 0)]
        out = np.full(len(counts), np.nan)
        out[counts] = (ev.test_ranks[counts] < ev.k).astype(np.float64)
        return out


def exposure(lists: np.ndarray, n_items: int, user_w: np.ndarray) -> np.ndarray:
    """(n, I): each item's weighted number of slots in the users' lists (U, K), under user
    weights (n, U): one sparse product, no loop over users."""
    shown = lists >= 0
    users = np.broadcast_to(np.arange(len(lists))[:, None], lists.shape)[shown]
    user_w = np.asarray(user_w, dtype=np.float64)
    if len(user_w) == 1:   # one set of weights (the cell's own value): a weighted bincount
        return np.bincount(lists[shown], weights=user_w[0][users], minlength=n_items)[None]
    slots = sparse.csr_matrix((np.ones(len(users)), (users, lists[shown])),
                              shape=(len(lists), n_items))
    return np.asarray((slots.T @ user_w.T).T)


class Coverage(ListMetric):
    name = "coverage"
    label = "coverage@{k}"
    debias = True   # a resample holds ~63 % distinct users: fewer items covered
    value_range = (0.0, 1.0)

    def statistic(self, lists, n_items, user_w):
        return (exposure(lists, n_items, user_w) > 0).sum(1) / float(n_items)


class Gini(ListMetric):
    name = "gini"
    label = "Gini@{k}"
    higher_is_better = False
    debias = True
    value_range = (0.0, 1.0)

    def statistic(self, lists, n_items, user_w):
        x = np.sort(exposure(lists, n_items, user_w), axis=1)
        total = x.sum(1)
        coef = 2.0 * np.arange(1, n_items + 1) - n_items - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (x @ coef) / (n_items * total), np.nan)
