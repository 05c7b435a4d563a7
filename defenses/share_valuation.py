"""SHARE part (a): data valuation of the training samples (defenses.md §3a).

The spec's first-order terms, per training sample z = (u, i, r) of an MF model, in closed form
(the per-sample gradient of ℓ(z) = e², e = p_u·q_i − r, touches only p_u and q_i):

- ``validation``: v_val(z) = −⟨∇ℓ(z), ∇L_val⟩ = −2e (⟨q_i, G_P[u]⟩ + ⟨p_u, G_Q[i]⟩), with G the
  gradient of the validation MSE w.r.t. the user and item tables (TracIn, one checkpoint);
- ``fairness``: the same with L_fair = |mean validation loss of active users (top 20 % by number
  of training ratings) − that of the rest|, per-user means;
- ``exposure``: how far one step on z pushes item i up the lists of an audience of users with
  validation data: with Δq_i = −2e p_u, mean over the audience of max(0, ⟨p_u', Δq_i⟩) divided by
  1 + (gap between u''s K-th score and i's score) / (τ · spread of u''s scores).

Ours (the measured improvement, README): fake rows have almost no first-order influence on the
validation loss (their users have no validation rows and their items few), so the terms above
leave poison in the middle of the ranking and eliminate real rows instead. What singles out the
payload is who gives which rating to what:

- ``reach`` of the sample's user: the mean, over the user's items, of the item's nearness to the
  audience's top-K lists (mean of K / (K + rank)). Uniform random fillers sit far from every
  list, so the heuristic attacks' fake users have the lowest reach of all users;
- ``push``: the rating itself — how far the row pulls its item up once fit;
- ``unanimity`` of the sample's item: its share of top ratings, shrunk to the global share with
  a prior of 20 ratings. A promotion attack must give its targets a crowd of top ratings,
  whatever its profiles look like (AUSH and TNA disguise the fillers, not the payload).

Each term becomes a rank in [0, 1] (0 = most suspicious), so no term needs a scale; the
weighted ranks are summed (or, with ``combine="min"``, a row is distrusted when either the
user side — low reach + high push — or the item side — high unanimity + high push — ranks it
low: it catches AUSH's payload on unpopular targets but costs clean-data HR; README). All products are sampled dense-dense products over the training
pattern (no users × items matrix), so a valuation costs a few passes of the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import pad


@dataclass
class Pattern:
    """The training rows as a CSR users × items pattern (rows sorted by user, then item)."""

    order: torch.Tensor   # position of each CSR entry in the original row order
    crow: torch.Tensor
    users: torch.Tensor   # per CSR entry
    items: torch.Tensor
    n_users: int
    n_items: int

    by_item: torch.Tensor   # CSR entries in item-major order
    crow_item: torch.Tensor

    @staticmethod
    def of(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> "Pattern":
        order = torch.argsort(users * n_items + items, stable=True)
        crow = pad(torch.bincount(users, minlength=n_users).cumsum(0), (1, 0))
        u, i = users[order], items[order]
        by_item = torch.argsort(i * n_users + u, stable=True)
        crow_item = pad(torch.bincount(i, minlength=n_items).cumsum(0), (1, 0))
        return Pattern(order, crow, u, i, n_users, n_items, by_item, crow_item)

    def products(self, values: torch.Tensor, P: torch.Tensor, Q: torch.Tensor):
        """(V Q, Vᵀ P) for the sparse users × items matrix V with ``values`` (CSR order)."""
        v_rows = torch.sparse_csr_tensor(self.crow, self.items, values,
                                         size=(self.n_users, self.n_items),
                                         check_invariants=False)
        v_cols = torch.sparse_csr_tensor(self.crow_item, self.users[self.by_item],
                                         values[self.by_item], size=(self.n_items, self.n_users),
                                         check_invariants=False)
        return v_rows @ Q, v_cols @ P

    def dots(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """⟨left[u], right[i]⟩ for every entry (CSR order), by one sampled product."""
        values = torch.zeros(len(self.users), dtype=left.dtype, device=left.device)
        sparse = torch.sparse_csr_tensor(self.crow, self.items, values,
                                         size=(self.n_users, self.n_items),
                                         check_invariants=False)
        return torch.sparse.sampled_addmm(sparse, left, right.T).values()


def weighted_table_grads(P, Q, pattern: "Pattern", err, weights):
    """Gradients of Σ w_v e_v² (e = p_u·q_i − r, CSR order) w.r.t. the user and item tables."""
    return pattern.products(2.0 * weights * err, P, Q)


def fairness_weights(val_users, val_err_sq, active: torch.Tensor, n_users: int):
    """Row weights w such that Σ w e² = L_fair's signed gap, and the gap |A − R|.

    A and R are the mean, over active and remaining users with validation rows, of each user's
    mean validation loss."""
    n_val = torch.bincount(val_users, minlength=n_users).to(val_err_sq.dtype)
    per_user = torch.zeros(n_users, dtype=val_err_sq.dtype,
                           device=val_err_sq.device).index_add_(0, val_users, val_err_sq)
    has = n_val > 0
    per_user = per_user / n_val.clamp_min(1)
    in_a, in_r = has & active, has & ~active
    if not in_a.any() or not in_r.any():
        return torch.zeros_like(val_err_sq), 0.0
    gap = per_user[in_a].mean() - per_user[in_r].mean()
    group = torch.where(active, 1.0 / in_a.sum(), -1.0 / in_r.sum()).to(val_err_sq.dtype)
    weights = torch.sign(gap) * group[val_users] / n_val[val_users]
    return weights, float(gap.abs())


def active_users(train_users: torch.Tensor, n_users: int, fraction: float) -> torch.Tensor:
    """The top ``fraction`` of users by number of training ratings (ties by id)."""
    counts = torch.bincount(train_users, minlength=n_users)
    n_active = max(1, int(round(fraction * int((counts > 0).sum()))))
    order = torch.argsort(counts, descending=True, stable=True)
    mask = torch.zeros(n_users, dtype=torch.bool, device=train_users.device)
    mask[order[:n_active]] = True
    return mask


def ranks01(x: torch.Tensor, reference_size: int = 4096) -> torch.Tensor:
    """Ranks scaled to [0, 1] (0 = lowest). Above ``reference_size`` values, the rank is the
    position among a strided sample of that size (the empirical quantile to 1/reference_size):
    one small sort and a binary search instead of a full sort — the values only combine ranks."""
    n = len(x)
    if n < 2:
        return torch.zeros_like(x, dtype=torch.float32)
    if n <= reference_size:
        r = torch.empty(n, dtype=torch.float32, device=x.device)
        r[torch.argsort(x, stable=True)] = torch.arange(n, dtype=torch.float32, device=x.device)
        return r / (n - 1)
    reference = torch.sort(x[::n // reference_size]).values
    return torch.searchsorted(reference, x).float() / len(reference)


def user_mean(values: torch.Tensor, users: torch.Tensor, n_users: int) -> torch.Tensor:
    total = torch.zeros(n_users, dtype=values.dtype, device=values.device)
    total.index_add_(0, users, values)
    return total / torch.bincount(users, minlength=n_users).clamp_min(1).to(values.dtype)


@torch.no_grad()
def exposure_values(P, Q, pattern: Pattern, err_csr, audience: torch.Tensor, k: int,
                    tau: float) -> torch.Tensor:
    """exposure(z) per CSR entry (see the module docstring)."""
    scores = P[audience] @ Q.T                                # |S| × items
    k = min(k, scores.shape[1])
    kth = scores.topk(k, dim=1).values[:, -1:]
    spread = scores.std(dim=1, keepdim=True).clamp_min(1e-12)
    inv_gap = 1.0 / (1.0 + (kth - scores).clamp_min(0) / (tau * spread))
    align = P @ P[audience].T                                 # users × |S|
    up = pattern.dots(align.clamp_min(0), inv_gap.T)          # Σ_u' relu(⟨p_u', p_u⟩) / gap
    down = pattern.dots((-align).clamp_min(0), inv_gap.T)
    # Δq_i = −2e p_u: an under-predicted rating (e < 0) pushes i towards p_u.
    push = torch.where(err_csr < 0, up, down)
    return 2.0 * err_csr.abs() * push / len(audience)


@torch.no_grad()
def item_proximity(P, Q, audience: torch.Tensor, k: int) -> torch.Tensor:
    """Per item, mean over the audience of K / (K + rank): 1 at the top of a list, 1/2 at rank
    K, → 0 far below; the scale-free "how near is this item to the audience's top-K lists"."""
    scores = P[audience].float() @ Q.float().T
    ranks = torch.empty_like(scores)
    order = scores.argsort(dim=1, descending=True)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], dtype=scores.dtype,
                                          device=scores.device).expand_as(scores).contiguous())
    return (k / (k + ranks)).mean(0)


def item_unanimity(items: torch.Tensor, ratings: torch.Tensor, n_items: int,
                   prior: float) -> torch.Tensor:
    """Per item, the share of its training ratings at the top of the scale, shrunk towards the
    global share with ``prior`` pseudo-ratings: high for an item that many raters unanimously
    rate at the top — how an item is pushed into everyone's lists, and what a promotion
    attack must create on its targets whatever its fake profiles look like."""
    top = (ratings >= 1.0 - 1e-6).to(torch.float32)
    count = torch.bincount(items, minlength=n_items).to(torch.float32)
    tops = torch.bincount(items, weights=top, minlength=n_items).to(torch.float32)
    return (tops + prior * top.mean()) / (count + prior)


def item_support(train_items: torch.Tensor, val_items: torch.Tensor, n_items: int,
                 prior: float) -> torch.Tensor:
    """Per item, its validation ratings per training rating, shrunk towards the global ratio
    with ``prior`` pseudo-ratings. The split draws validation rows from the same real ratings
    as training rows, so an item's ratio sits near the global one; ratings injected into the
    training data alone (fake users have no validation rows) drive it down. Low = suspicious."""
    n_train = torch.bincount(train_items, minlength=n_items).to(torch.float32)
    n_val = torch.bincount(val_items, minlength=n_items).to(torch.float32)
    ratio = n_val.sum() / n_train.sum().clamp_min(1.0)
    return (n_val + prior * ratio) / (n_train + prior)


@dataclass
class SampleValues:
    """Per training row (original order): each term, and the combined value."""

    validation: torch.Tensor
    fairness: torch.Tensor
    exposure: torch.Tensor
    reach: torch.Tensor       # the row's user's reach
    value: torch.Tensor
    fairness_gap: float


@torch.no_grad()
def value_samples(P, Q, train, val, n_users: int, n_items: int, audience: torch.Tensor,
                  proximity: torch.Tensor, alpha: float = 1.0, validation_weight: float = 0.0,
                  exposure_weight: float = 0.0, reach_weight: float = 1.0,
                  push_weight: float = 1.0, unanimity_weight: float = 1.0,
                  unanimity_prior: float = 20.0, support_weight: float = 0.0,
                  support_prior: float = 10.0, combine: str = "sum",
                  active_fraction: float = 0.2, k: int = 50,
                  tau: float = 0.1, pattern: Pattern | None = None,
                  val_ratings: torch.Tensor | None = None, group: torch.Tensor | None = None,
                  group_weight: float = 0.0) -> SampleValues:
    """Value every training row of an MF model; low value = candidate for elimination.

    ``train``/``val`` are (users, items, ratings) tensors (``val`` may be a prebuilt
    :class:`Pattern` with ``val_ratings`` in its CSR order); ``proximity`` the per-item nearness
    to the audience's lists (:func:`item_proximity`) that the users' reach is measured against.
    Each term becomes a rank in [0, 1] (low = suspicious): the validation value, −exposure, −push
    (the row's rating: how far the row pulls its item up once fit), the user's reach,
    −unanimity (of the row's item, :func:`item_unanimity`) and −group (``group``: per row in
    the original order, its lockstep partners, ``share_group.lockstep_counts``).
    ``combine="sum"``: the robustness
    value is the rank of their weighted sum; ``"min"``: the lower of two detectors' ranks, the
    first three terms plus reach (user side) and plus unanimity (item side). value = α ·
    rank(robustness) + (1 − α) · rank(fairness value). Terms with weight 0 are not computed
    (their fields are zeros).
    """
    P, Q = P.detach().float(), Q.detach().float()
    tu, ti, tr = train
    pattern = pattern or Pattern.of(tu, ti, n_users, n_items)
    val_pattern = val if isinstance(val, Pattern) else Pattern.of(val[0], val[1], n_users,
                                                                  n_items)
    val_ratings = val_ratings if val_ratings is not None else val[2][val_pattern.order]
    vu = val_pattern.users
    val_err = val_pattern.dots(P, Q) - val_ratings.float()
    fair_w, gap = fairness_weights(vu, val_err.pow(2), active_users(tu, n_users, active_fraction),
                                   n_users)
    ratings = tr[pattern.order].float()
    err = pattern.dots(P, Q) - ratings
    zeros = torch.zeros_like(err)
    v_val = v_fair = expo = zeros
    if validation_weight > 0:
        val_w = torch.full((len(vu),), 1.0 / max(len(vu), 1), dtype=P.dtype, device=P.device)
        gp_val, gq_val = weighted_table_grads(P, Q, val_pattern, val_err, val_w)
        # ⟨q_i, G_P[u]⟩ + ⟨p_u, G_Q[i]⟩ as one sampled product of concatenated rows.
        v_val = -2.0 * err * pattern.dots(torch.cat([gp_val, P], 1), torch.cat([Q, gq_val], 1))
    if alpha < 1:
        gp_fair, gq_fair = weighted_table_grads(P, Q, val_pattern, val_err, fair_w)
        v_fair = -2.0 * err * pattern.dots(torch.cat([gp_fair, P], 1),
                                           torch.cat([Q, gq_fair], 1))
    if exposure_weight > 0:
        expo = exposure_values(P, Q, pattern, err, audience, k, tau)
    reach = user_mean(proximity.float()[pattern.items], pattern.users, n_users)[pattern.users]

    unanimity = (item_unanimity(pattern.items, ratings, n_items, unanimity_prior)[pattern.items]
                 if unanimity_weight > 0 else zeros)
    support = (item_support(pattern.items, val_pattern.items, n_items, support_prior)
               [pattern.items] if support_weight > 0 else zeros)
    group_csr = (group.to(err.device).float()[pattern.order]
                 if group is not None and group_weight > 0 else zeros)
    if (validation_weight + exposure_weight + reach_weight + push_weight + unanimity_weight
            + support_weight + (group_weight if group is not None else 0.0) <= 0):
        raise ValueError("share: the validation, exposure, reach, push, unanimity, support "
                         "and group weights are all 0")
    base = zeros + sum(w * ranks01(t) for w, t in ((validation_weight, v_val),
                                            (exposure_weight, -expo), (push_weight, -ratings))
               if w > 0)
    # Two detectors share the budget: a top rating from a user whose data touches no list
    # (user side), a top rating on an item a crowd rates unanimously at the top (item side).
    sides = [w * ranks01(t) for w, t in ((reach_weight, reach), (unanimity_weight, -unanimity),
                                         (support_weight, support),
                                         (group_weight if group is not None else 0.0,
                                          -group_csr)) if w > 0]
    if combine == "sum" or not sides:
        robust = ranks01(base + sum(sides) + zeros)
    else:
        robust = torch.stack([ranks01(base + side) for side in sides]).min(0).values
    value = robust if alpha >= 1 else alpha * ranks01(robust) + (1.0 - alpha) * ranks01(v_fair)

    def original(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        out[pattern.order] = x
        return out

    return SampleValues(original(v_val), original(v_fair), original(expo), original(reach),
                        original(value), gap)


def lowest_rows(value: torch.Tensor, fraction: float, users: torch.Tensor | None = None,
                max_user_share: float = 1.0) -> torch.Tensor:
    """Indices of the ``fraction`` lowest-valued rows; with ``users``, a user gives at most
    ``max_user_share`` of their rows (rounded up) — a fairness guard: no real user whose taste
    looks unusual loses most of their data."""
    n = int(fraction * len(value))
    if users is None or max_user_share >= 1:
        return torch.topk(value, n, largest=False, sorted=False).indices
    order = torch.argsort(value, stable=True)
    by_user = order[torch.argsort(users[order], stable=True)]   # grouped by user, value order
    counts = torch.bincount(users)
    start = torch.nn.functional.pad(counts.cumsum(0), (1, 0))[:-1]
    position = torch.empty_like(order)
    position[by_user] = torch.arange(len(order), device=order.device) - start[users[by_user]]
    allowed = position < torch.ceil(max_user_share * counts[users].float()).long()
    return order[allowed[order]][:n]


def concentrated_rows(rows: torch.Tensor, items: torch.Tensor, n_items: int,
                      min_item_share: float) -> torch.Tensor:
    """The chosen ``rows`` that sit on items where chosen rows are at least ``min_item_share``
    of the item's training rows. Injected rows pile up on the few items an attack promotes; a
    row flagged on an item where few others are flagged protects little and costs the item
    some of its real signal. (Measured on clean FilmTrust: three quarters of the flagged rows
    already sit on items with ≥ 30 % flagged, so the gate changes less than one might hope.)"""
    if min_item_share <= 0 or len(rows) == 0:
        return rows
    total = torch.bincount(items, minlength=n_items)
    chosen = torch.bincount(items[rows], minlength=n_items)
    dense = chosen.double() >= min_item_share * total.double()
    return rows[dense[items[rows]]]


def lowest_users_rows(value: torch.Tensor, users: torch.Tensor, n_users: int,
                      fraction: float) -> torch.Tensor:
    """Per-user aggregation: whole users by ascending mean value, until their rows would exceed
    ``fraction`` of all rows; returns the eliminated row indices."""
    budget = int(fraction * len(value))
    per_user = user_mean(value.double(), users, n_users)
    counts = torch.bincount(users, minlength=n_users)
    present = counts > 0
    order = torch.argsort(torch.where(present, per_user, torch.full_like(per_user, float("inf"))),
                          stable=True)
    taken = counts[order].cumsum(0) <= budget
    chosen = torch.zeros(n_users, dtype=torch.bool, device=users.device)
    chosen[order[taken & present[order]]] = True
    return torch.nonzero(chosen[users]).squeeze(1)
