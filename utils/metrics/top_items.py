"""The compiled scan behind ``pessimistic_top_k``: each row's items scoring strictly above
its cut, in item order.

One pass per row without a branch on the data: every item id is written to a row buffer and
the write position advances only when the item scores above the cut, so the loop does not
pay a misprediction on each listed item. It replaced a comparison mask, ``np.flatnonzero``
and a scatter (three passes; 1.2 ms against 0.8 ms on 943 × 1,682 scores, idle machine).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def items_above(scores, cut, k):
    """(U, k) int64: per row u of ``scores`` the first k items (in item order) scoring
    strictly above ``cut[u]``, -1 after them. NaN scores never pass."""
    n_users, n_items = scores.shape
    out = np.full((n_users, k), -1, dtype=np.int64)
    buffer = np.empty(n_items + 1, dtype=np.int64)
    for u in range(n_users):
        bar = cut[u]
        row = scores[u]
        n = 0
        for i in range(n_items):
            buffer[n] = i
            n += row[i] > bar
        for t in range(min(n, k)):
            out[u, t] = buffer[t]
    return out
