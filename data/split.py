"""Train / validation / test split (protocol.md §2), fully vectorized and fixed by the seed."""
from __future__ import annotations

import numpy as np

from .ratings import Interactions, RatingData, Split


def split_ratings(data: RatingData, rng: np.random.Generator, positive_threshold: float = 0.8,
                  val_fraction: float = 0.1, feedback: str = "explicit") -> Split:
    """One random positive per user for test; the rest 9:1 into train and validation."""
    inter = data.interactions
    n = len(inter)
    keys = rng.random(n)
    positive = np.flatnonzero(inter.ratings >= positive_threshold - 1e-6)
    # Among each user's positives, the one with the largest random key is the test rating.
    order = positive[np.lexsort((-keys[positive], inter.users[positive]))]
    first_users, first_pos = np.unique(inter.users[order], return_index=True)
    test_rows = order[first_pos]
    test_items = np.full(data.n_users, -1, dtype=np.int64)
    test_ratings = np.zeros(data.n_users, dtype=np.float32)
    test_items[first_users] = inter.items[test_rows]
    test_ratings[first_users] = inter.ratings[test_rows]
    rest = np.ones(n, dtype=bool)
    rest[test_rows] = False
    rest_rows = np.flatnonzero(rest)
    perm = rng.permutation(len(rest_rows))
    n_val = int(round(val_fraction * len(rest_rows)))
    val_rows = np.sort(rest_rows[perm[:n_val]])
    train_rows = np.sort(rest_rows[perm[n_val:]])
    train, val = inter.subset(train_rows), inter.subset(val_rows)
    if feedback == "implicit":
        train = Interactions(train.users, train.items, np.ones(len(train)))
        val = Interactions(val.users, val.items, np.ones(len(val)))
    return Split(train, val, test_items, test_ratings, data.n_users, data.n_items,
                 data.scale, feedback)
