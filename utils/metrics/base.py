"""What a metric is: a small class with a name, what it needs from the evaluation, its direction,
how its uncertainty is resampled and how the tables label it (``utils/metrics/__init__.py``
holds the registry and the evaluator that feeds it).

The evaluator ranks every item for every real user in batches and hands each metric one
:class:`Evaluation`: per real user the rank and prediction of the held-out item, the targets'
ranks and scores, and — only when a registered metric names them in ``needs`` — the top-K item
lists and the items' popularity among the real users' training ratings. A metric turns it into
one number; a metric with an interval also into the per-user outcome stored with each cell
(``cells/<key>.npz``), from which ``utils/uncertainty.py`` recomputes it on resampled users
(and targets).

Interval kinds:

* ``USER_MEAN`` — a mean over the users who count of one value per user (NaN: the user does not
  count): HR, MRR. The outcome is that (U,) vector; the bootstrap resamples users.
* ``TARGET_PAIRS`` — an outcome per (user, target) pair (U, T), NaN where the pair is not
  eligible: target HR. The bootstrap resamples users and targets.
* ``LIST`` — a statistic of the real users' top-K lists taken together (e.g. a catalogue
  share): the outcome is each user's lists (one per retraining) and the metric recomputes the
  statistic under user weights (:class:`ListMetric`).
* ``NONE`` — no interval (no outcome is stored).

Protocols (``split.mode``, ``Metric.protocols``): ``loo`` — leave-one-out, one held-out item
per user (HR@K, NDCG@K, MRR, test MSE need it); ``ratio`` — the implicit top-K protocol, a
held-out *set* per user (Recall@K, NDCG@K at ``evaluation.test_k``). A metric is computed, and
expected in a finished cell's row, only under the protocols it names; the target and list
metrics name both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What a metric may need (``Metric.needs``); the evaluator computes the optional ones only when
# some metric asks for them.
TEST_RANKS = "test_ranks"              # (U,) 0-based pessimistic rank of the held-out item
TEST_PREDICTIONS = "test_predictions"  # (U,) predicted normalized rating of the held-out item
TARGET_RANKS = "target_ranks"          # (U, T) ranks of the targets, eligibility mask
TARGET_SCORES = "target_scores"        # (U, T) raw predicted scores of the targets
TOP_ITEMS = "top_items"                # (U, K) each real user's top-K items (optional)
ITEM_POPULARITY = "item_popularity"    # (I,) real users' training ratings per item (optional)
LONG_TAIL = "long_tail"                # (I,) bool: the item is outside the head (optional;
                                       # utils/metrics/tail.py, evaluation.tail.head_share)
TEST_SET_RANKS = "test_set_ranks"      # ratio split: each held-out item's rank, capped at
                                       # test_k, and its user (optional)
INPUTS = (TEST_RANKS, TEST_PREDICTIONS, TARGET_RANKS, TARGET_SCORES, TOP_ITEMS, ITEM_POPULARITY,
          LONG_TAIL, TEST_SET_RANKS)

LOO, RATIO = "loo", "ratio"            # split.mode: the evaluation protocols
PROTOCOLS = (LOO, RATIO)

USER_MEAN, TARGET_PAIRS, LIST, NONE = "user_mean", "target_pairs", "list", "none"


@dataclass
class Evaluation:
    """What one evaluation of a model computed for every real user (U users, T targets, I
    items), the input of every metric. Ranks are 0-based and pessimistic; -1 marks a user
    without a held-out item or a (user, target) pair whose target the user rated."""

    k: int
    n_items: int
    max_rating: float             # ratings are normalized: × max_rating is the original scale
    test_items: np.ndarray        # (U,) the held-out item, -1: none
    test_ratings: np.ndarray      # (U,) its normalized rating
    test_ranks: np.ndarray        # (U,)
    test_predictions: np.ndarray  # (U,)
    target_ranks: np.ndarray      # (U, T)
    target_scores: np.ndarray     # (U, T)
    eligible: np.ndarray          # (U, T) bool: the user has not rated the target
    # (U, K) int64: the items whose pessimistic rank is below K, in item order; -1 after them
    # (a tie group that straddles rank K is left out whole, so a list may be shorter than K).
    top_items: np.ndarray | None = None
    item_popularity: np.ndarray | None = None  # (I,) int64
    long_tail: np.ndarray | None = None        # (I,) bool
    # Ratio split (TEST_SET_RANKS): K of Recall/NDCG on the held-out set, and per held-out
    # (user, item) row its user and 0-based pessimistic rank, capped at test_k (ranks ≥ test_k
    # read test_k: outside the top test_k).
    test_k: int = 20
    test_set_users: np.ndarray | None = None   # (N,) int64
    test_set_ranks: np.ndarray | None = None   # (N,) int64

    @property
    def has_test(self) -> np.ndarray:
        return self.test_items >= 0


class Resample:
    """Bootstrap weights of one seed: how often each of U users and T targets was drawn, one
    row per replicate. ``counted`` caches the weighted number of counting units per outcome
    (every cell of a seed shares the users who count, so the bootstrap computes it once)."""

    def __init__(self, user_w: np.ndarray, target_w: np.ndarray) -> None:
        self.user_w, self.target_w = user_w, target_w
        self._cache: dict = {}

    @classmethod
    def identity(cls, n_users: int, n_targets: int = 1) -> "Resample":
        """Every unit once: the full-sample value as a 1-replicate resample."""
        return cls(np.ones((1, n_users)), np.ones((1, max(n_targets, 1))))

    def counted(self, values: np.ndarray) -> np.ndarray:
        """Weighted count of the non-NaN entries of ``values`` (U,) or (U, T): (n,) or (n, T)."""
        counted = ~np.isnan(np.asarray(values, dtype=np.float32))
        key = (counted.shape, counted.tobytes())
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = self.user_w @ counted.astype(self.user_w.dtype)
        return self._cache[key]


class Metric:
    """A metric of one evaluation. Subclasses set the class attributes and :meth:`compute`;
    metrics with an interval also :meth:`outcome_values` (or :meth:`outcomes`) and
    :meth:`resampled` — the kinds below provide them."""

    name: str = ""                 # the registry name and runs.csv column stem ("hr" → "hr@{k}")
    stem: str = ""                 # the column stem when it differs from the name
    at_k: bool = True
    k_option: str = "k"            # whose K: "k" (evaluation.k) or "test_k" (evaluation.test_k)
    protocols: tuple[str, ...] = (LOO,)   # the split.mode values it is computed under
    label: str = ""                # how tables name it, "{k}" filled in: "HR@{k}"
    needs: tuple[str, ...] = ()    # inputs of :class:`Evaluation` it reads (see INPUTS)
    higher_is_better: bool = True  # from the system's side: a lower target HR is better
    interval: str = NONE           # USER_MEAN | TARGET_PAIRS | LIST | NONE
    outcome_key: str = ""          # key of its per-user outcome in cells/<key>.npz ("" = name)
    # The title of its own table in tables.md, one row per attack setting and a column per
    # defense ("{label}" and "{k}" filled in); None: no table of its own.
    table: str | None = None
    # Compared with the best baseline defense and with the undefended model (summary's stars,
    # p-values and Holm-corrected marks in the tables).
    tested: bool = False
    # The bootstrap interval is bias-corrected (shifted by mean(replicates) − estimate): for
    # statistics a resample of users biases, such as the catalogue coverage of the lists.
    debias: bool = False
    value_range: tuple[float, float] | None = None   # where a bias-corrected interval is clipped

    def column(self, k: int, test_k: int | None = None) -> str:
        """The runs.csv column: ``stem@K`` with K = ``k`` or, for a metric at
        ``evaluation.test_k``, ``test_k`` (which it then needs)."""
        stem = self.stem or self.name
        return f"{stem}@{self.k_of(k, test_k)}" if self.at_k else stem

    def k_of(self, k: int, test_k: int | None = None) -> int:
        if self.k_option == "test_k":
            if test_k is None:
                raise ValueError(f"metric {self.name} is at evaluation.test_k: pass test_k")
            return test_k
        return k

    def title(self, k: int, test_k: int | None = None) -> str:
        return self.label.format(k=self.k_of(k, test_k))

    def applies_to(self, protocol: str) -> bool:
        return protocol in self.protocols

    @property
    def outcome(self) -> str:
        return self.outcome_key or self.name

    def compute(self, ev: Evaluation) -> float:
        raise NotImplementedError

    def stored_keys(self) -> tuple[str, ...]:
        """The keys of the arrays :meth:`outcomes` stores with each cell."""
        return (self.outcome,)

    def outcomes(self, ev: Evaluation) -> dict[str, np.ndarray]:
        """The arrays stored with the cell (``cells/<key>.npz``) that :meth:`resampled`
        recomputes the metric from: by default its one per-user outcome."""
        return {self.outcome: self.outcome_values(ev)}

    def outcome_values(self, ev: Evaluation) -> np.ndarray:
        """The per-user outcome stored with the cell (float32)."""
        raise NotImplementedError(f"metric {self.name} has no interval")

    def resampled(self, stored: dict, weights: Resample) -> np.ndarray:
        """The metric recomputed from a cell's stored arrays under each replicate's weights:
        (n,)."""
        raise NotImplementedError(f"metric {self.name} has no interval")

    def combine_retrains(self, key: str, values: list[np.ndarray]) -> np.ndarray:
        """One stored array ``key`` from those of a cell's retrainings (``evaluation.retrains``):
        the mean by default."""
        return np.mean(values, axis=0).astype(np.float32)

    def user_contributions(self, a: dict, b: dict) -> np.ndarray:
        """Per user, their share of metric(a) − metric(b) between two cells of one seed (their
        stored arrays; the per-user paired test of ``utils/statistics.py``)."""
        raise NotImplementedError(f"metric {self.name} has no per-user test")


class UserMeanMetric(Metric):
    """A mean over the users who count of one value per user; ``per_user`` gives the values
    (float64, NaN for users who do not count)."""

    interval = USER_MEAN

    def per_user(self, ev: Evaluation) -> np.ndarray:
        raise NotImplementedError

    def compute(self, ev: Evaluation) -> float:
        values = self.per_user(ev)
        counted = values[~np.isnan(values)]
        return float(counted.mean()) if len(counted) else float("nan")

    def outcome_values(self, ev: Evaluation) -> np.ndarray:
        return self.per_user(ev).astype(np.float32)

    def resampled(self, stored: dict, weights: Resample) -> np.ndarray:
        values = np.asarray(stored[self.outcome], dtype=np.float64)
        counted_w = weights.counted(values)
        num = weights.user_w @ np.nan_to_num(values)
        return np.where(counted_w > 0, num / np.maximum(counted_w, 1e-30), np.nan)

    def user_contributions(self, a: dict, b: dict) -> np.ndarray:
        a, b = (np.asarray(x[self.outcome], float) for x in (a, b))
        has = ~np.isnan(a) & ~np.isnan(b)
        return (a[has] - b[has]) / max(int(has.sum()), 1)


def per_user_of_test_ranks(ev: Evaluation, value) -> np.ndarray:
    """(U,) float64: ``value(ranks)`` for the users with a held-out item (their 0-based ranks,
    in user order), NaN for the others."""
    has = ev.has_test
    out = np.full(len(has), np.nan)
    out[has] = value(ev.test_ranks[has])
    return out


class TargetPairMetric(Metric):
    """A metric of the (user, target) pairs: its outcome is 1 hit / 0 miss per pair in the
    user's top K, NaN where the user rated the target (not eligible)."""

    interval = TARGET_PAIRS
    needs = (TARGET_RANKS,)
    outcome_key = "target_hit"
    protocols = PROTOCOLS   # eligible: the users who have not interacted with the target

    @staticmethod
    def hits(ev: Evaluation) -> np.ndarray:
        """(U, T) bool: the eligible pairs whose target is in the user's top K."""
        return (ev.target_ranks < ev.k) & (ev.target_ranks >= 0) & ev.eligible

    def outcome_values(self, ev: Evaluation) -> np.ndarray:
        hit = ((ev.target_ranks < ev.k) & (ev.target_ranks >= 0)).astype(np.float32)
        return np.where(ev.eligible, hit, np.nan).astype(np.float32)

    def weighted_hits(self, stored: dict, weights: Resample) -> tuple[np.ndarray, np.ndarray]:
        """Per replicate and target: the weighted hits and the weighted eligible users."""
        values = np.asarray(stored[self.outcome], dtype=np.float64)
        return weights.user_w @ np.nan_to_num(values), weights.counted(values)

    @staticmethod
    def mean_over_targets(rate: np.ndarray, weights: Resample) -> np.ndarray:
        return (rate * weights.target_w).sum(1) / weights.target_w.sum(1)


class ListMetric(Metric):
    """A statistic of the real users' top-K lists taken together. :meth:`statistic` computes
    it from the lists (U, K) — -1 past a user's unmasked items — and the catalogue size under
    user weights (n, U), one value per replicate. The cell stores every retraining's lists
    (U, R, K) and the catalogue size, so the bootstrap recomputes the statistic on resampled
    users: the mean over the retrainings, as the runs.csv value is."""

    interval = LIST
    needs = (TOP_ITEMS,)
    outcome_key = "top_items"
    protocols = PROTOCOLS

    def statistic(self, lists: np.ndarray, n_items: int, user_w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def compute(self, ev: Evaluation) -> float:
        return float(self.statistic(ev.top_items, ev.n_items, np.ones((1, len(ev.top_items))))[0])

    def stored_keys(self) -> tuple[str, ...]:
        return (self.outcome, "n_items")

    def outcomes(self, ev: Evaluation) -> dict[str, np.ndarray]:
        return {self.outcome: ev.top_items[:, None, :].astype(np.int32),
                "n_items": np.array(ev.n_items)}

    def combine_retrains(self, key: str, values: list[np.ndarray]) -> np.ndarray:
        # Every retraining's lists side by side; the catalogue size is the same for all.
        return np.concatenate(values, axis=1) if key == self.outcome else values[0]

    def resampled(self, stored: dict, weights: Resample) -> np.ndarray:
        lists, n_items = np.asarray(stored[self.outcome]), int(stored["n_items"])
        return np.mean([self.statistic(lists[:, r], n_items, weights.user_w)
                        for r in range(lists.shape[1])], axis=0)
