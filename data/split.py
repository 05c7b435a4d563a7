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


def split_fake_rows(fake: Interactions, rng: np.random.Generator, val_fraction: float
                    ) -> tuple[Interactions, Interactions]:
    """The ``platform`` protocol (threat-model.md §1): a platform cannot tell fake accounts from
    real ones, so each fake user's rows go to validation in the proportion real users' do.

    Real users' validation rows are a ``val_fraction`` of their non-test rows; each fake user
    (who has no test item: fake users never count in metrics) gets ``val_fraction`` of its rows,
    rounded at random so the expected share is exact and every user is within one row of it,
    and keeps at least one training row. Returns ``(train rows, validation rows)``.
    """
    n = len(fake)
    if n == 0:
        return fake, fake
    n_users = int(fake.users.max()) + 1
    counts = np.bincount(fake.users, minlength=n_users)
    wanted = val_fraction * counts
    n_val = np.floor(wanted + rng.random(n_users)).astype(np.int64)
    n_val = np.minimum(n_val, np.maximum(counts - 1, 0))
    # A random order within each user; its first n_val[u] rows are validation.
    order = np.lexsort((rng.random(n), fake.users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[fake.users[order]]
    is_val = rank < n_val[fake.users]
    return fake.subset(~is_val), fake.subset(is_val)
