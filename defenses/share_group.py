"""SHARE part (a), group signal: lockstep co-rating of items (threat-model.md §2–3).

A promotion attack cannot hide that a group of accounts pushes the same items together: each
fake user gives *all* its targets the top rating, so every pair of targets is top-rated by the
same crowd — far more users than the two items' popularity predicts. Camouflage (fillers, cloned
real profiles) changes what else the fake users rate, never that co-rating. The signal follows
the lockstep idea of dense-block fraud detection (Hooi et al., "FRAUDAR: Bounding Graph Fraud in
the Face of Camouflage", KDD 2016 — camouflage-resistant weights 1/log(degree + c); Jiang et al.,
"CatchSync" KDD 2014 / "Inferring lockstep behavior from connectivity pattern in large graphs",
PAKDD 2015) applied to item pairs rather than to a greedily peeled block, which on rating data
finds the dense core of heavy users and popular items instead of the attack (a block of ~30
users × 5 items is far less dense than that core):

1. X = the users × items pattern of *top* ratings (rating = the top of the scale) over every
   rating the platform observed for training and validation (train ∪ val: where a fake row is
   placed does not change the signal);
2. each user counts with weight w_u = 1 / log(e + d_u) (d_u: the user's top ratings; weights
   scaled to mean 1): a heavy user, whose many top ratings co-occur with everything, counts
   less — the FRAUDAR column weighting, here on users;
3. per item pair, the weighted co-top count C_ij = Σ_u w_u X_ui X_uj, its expectation under
   independence E_ij = n_i n_j / Σ_u w_u (n_i = C_ii), and the shrunk lift
   (C_ij + a) / (E_ij + a) with a prior of ``a`` co-raters: a pair of niche items that two fans
   share is not lockstep, a crowd is;
4. pairs with lift ≥ ``lift`` are *lockstep partners*; a training row (u, i) with a top rating
   is *group-flagged* when u top-rated at least ``min_partners`` of i's partners — the row
   belongs to a set of ≥ min_partners + 1 items that a crowd top-rates in lockstep.

The signal needs no model (it is computed once, from the data) and no validation property; it
is blind to a promotion of one or two targets, or to targets each pushed by a disjoint group
(README, limitations). Everything is sparse: the item × item counts are a sparse product over
the top-rating pattern, only co-rated pairs are valued.
"""
from __future__ import annotations

import math

import torch


def _coo(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape,
                                   check_invariants=False).coalesce()


@torch.no_grad()
def lockstep_partners(users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                      n_users: int, n_items: int, prior: float = 2.0,
                      lift: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-rating pattern X (sparse users × items, 0/1) and the lockstep-partner pattern A
    (sparse items × items, 0/1, symmetric, empty diagonal) of the observed ratings."""
    top = ratings >= 1.0 - 1e-6
    u, i = users[top].long(), items[top].long()
    key = torch.unique(u * n_items + i)       # one entry per (user, item)
    u, i = key // n_items, key % n_items
    ones = torch.ones(len(u), dtype=torch.float64, device=users.device)
    X = _coo(u, i, ones, (n_users, n_items))
    degree = torch.bincount(u, minlength=n_users).double()
    has = degree > 0
    w = torch.where(has, 1.0 / torch.log(math.e + degree), torch.zeros_like(degree))
    if bool(has.any()):
        w = w / w[has].mean()
    Xw_t = _coo(i, u, w[u], (n_items, n_users))
    C = torch.sparse.mm(Xw_t, X).coalesce()   # items × items, co-rated pairs only
    (a, b), c = C.indices(), C.values()
    n = torch.zeros(n_items, dtype=torch.float64, device=users.device)
    diag = a == b
    n[a[diag]] = c[diag]
    expected = n[a] * n[b] / w.sum().clamp_min(1e-12)
    partner = ~diag & ((c + prior) >= lift * (expected + prior))
    A = _coo(a[partner], b[partner], torch.ones(int(partner.sum()), dtype=torch.float64,
                                                 device=users.device), (n_items, n_items))
    return X, A


@torch.no_grad()
def lockstep_counts(train_users: torch.Tensor, train_items: torch.Tensor,
                    train_ratings: torch.Tensor, observed: tuple, n_users: int, n_items: int,
                    prior: float = 2.0, lift: float = 5.0) -> torch.Tensor:
    """Per training row: the number of the row item's lockstep partners that the row's user
    top-rated (0 for rows below the top rating). ``observed`` = (users, items, ratings) of
    every rating the pairs are counted on (train ∪ val)."""
    X, A = lockstep_partners(*observed, n_users, n_items, prior, lift)
    out = torch.zeros(len(train_users), dtype=torch.float32, device=train_users.device)
    if A._nnz() == 0:
        return out
    G = torch.sparse.mm(X, A).coalesce()      # users × items: partners the user top-rated
    keys = G.indices()[0] * n_items + G.indices()[1]
    row_keys = train_users.long() * n_items + train_items.long()
    pos = torch.searchsorted(keys, row_keys).clamp_max(len(keys) - 1)
    hit = keys[pos] == row_keys
    top = train_ratings >= 1.0 - 1e-6
    out[hit & top] = G.values()[pos[hit & top]].float()
    return out
