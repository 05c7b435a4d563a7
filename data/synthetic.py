"""A seeded low-rank rating generator for tests, demos and scale benchmarks.

Users and items get latent factors; item popularity follows a power law, so the data has the
long tail (unpopular items with < 5 ratings) that the attacks target. Ratings are the rounded,
clipped latent affinity plus noise on the integer scale 1..max_rating.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .loaders import reindex
from .ratings import RatingData


def generate(n_users: int, n_items: int, density: float, rank: int, noise: float,
             max_rating: int, rng: np.random.Generator) -> RatingData:
    user_f = rng.normal(size=(n_users, rank))
    item_f = rng.normal(size=(n_items, rank))
    item_bias = rng.normal(scale=0.5, size=n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.2
    popularity = popularity[rng.permutation(n_items)]
    activity = rng.lognormal(sigma=0.6, size=n_users)
    n_pairs = max(int(density * n_users * n_items), 5 * n_users)
    # Draw pairs until enough distinct ones exist (the power law makes repeats common), then
    # keep the first n_pairs distinct pairs in draw order.
    p_user, p_item = activity / activity.sum(), popularity / popularity.sum()
    users = np.zeros(0, dtype=np.int64)
    items = np.zeros(0, dtype=np.int64)
    first = np.zeros(0, dtype=np.int64)
    draw = int(n_pairs * 1.6) + 10
    while len(first) < n_pairs and draw < 50 * n_pairs + 100:
        users = np.concatenate([users, rng.choice(n_users, size=draw, p=p_user)])
        items = np.concatenate([items, rng.choice(n_items, size=draw, p=p_item)])
        _, first = np.unique(users * n_items + items, return_index=True)
        draw *= 2
    first = np.sort(first)[:n_pairs]
    # Every user gets at least 5 ratings so that the split leaves train, validation and test.
    extra_u = np.repeat(np.arange(n_users), 5)
    extra_i = rng.choice(n_items, size=len(extra_u), p=popularity / popularity.sum())
    users = np.concatenate([users[first], extra_u])
    items = np.concatenate([items[first], extra_i])
    keys = users * n_items + items
    _, keep = np.unique(keys, return_index=True)
    users, items = users[keep], items[keep]
    affinity = (user_f[users] * item_f[items]).sum(1) / np.sqrt(rank) + item_bias[items]
    affinity = affinity + rng.normal(scale=noise, size=len(affinity))
    affinity = (affinity - affinity.mean()) / (affinity.std() + 1e-12)
    ratings = np.clip(np.round(0.7 * max_rating + 0.25 * max_rating * affinity), 1, max_rating)
    frame = pd.DataFrame({"user": users, "item": items, "rating": ratings})
    return reindex("synthetic", frame, float(max_rating), int(max_rating))
