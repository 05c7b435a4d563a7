"""PORE's certificate as pure arithmetic (Jia, Liu, Hu & Gong, "PORE: Provably Robust Recommender
Systems against Data Poisoning Attacks", USENIX Security 2023, Theorem 1).

A floor module: numpy and scipy only, nothing from data/models/attacks/defenses, so a frequency
file, a unit test or the defense (``defenses/pore.py``) can all call it.

The setting. PORE trains T base recommenders, each on ``s`` users drawn without replacement from
the ``n`` users of the data, and counts, per user u and item i, how many base recommenders put i
among the ``N'`` (``n_prime``) items they recommend to u. ``counts[u, i] / T`` estimates
p_ui = Pr(i is recommended to u by a base recommender); PORE recommends to u the N items of
largest frequency. Two variants of "recommended to u":

* ``mode="sampled"`` (the authors' code): a base recommender recommends only to the users it was
  trained on, so p_ui includes Pr(u ∈ sample) = s/n (their files sum to T·s/n per user).
* ``mode="all"``: every base recommender recommends to every user (an item-based recommender
  can: u's affinity row is u's own data).

Adding e fake users (n' = n + e) changes the sample only when it holds a fake user; with
probability disc = C(n, s)/C(n + e, s) it holds none and the base recommender is the clean one.
So for every item, disc · p_ui ≤ p'_ui ≤ disc · p_ui + δ, and the frequencies the fake users can
add sum to at most N' · δ over the items, where δ is the probability that the sample holds a fake
user and the base recommender recommends to u at all:
``sampled``: δ = Pr(u ∈ S, S ∩ fake ≠ ∅) = s/n' − (s/n) · disc;  ``all``: δ = 1 − disc.

The p_ui are unknown: simultaneous one-sided Clopper–Pearson bounds, Bonferroni-corrected over
users × items (each bound at level α/(n_users · n_items); each (u, i) needs only one side: the
lower bound for items of the reference set, the upper bound for the others).

Per user, with a reference set I_u (the test items: certified precision/recall; the clean top-N:
a bound on promotion), the j-th reference item μ by lower bound (j = 1, 2, …) stays in the
top-N whatever the e fake users do if its rank r among all items ordered by (lower bound for
reference items, upper bound for the others; ties by item id) is ≤ N and
    disc · p̲_μ > min( (disc · Σ_{v∈C} p̄_v + N'·δ) / |C| ,  min_{v∈C} (disc · p̄_v + δ) ),
where C is the N − r + 1 non-reference items of largest upper bound ranked below μ (the items
ranked above μ are free for the attacker; to push μ out it must lift all of C above μ: lifting
them costs at least their gaps, and no item can gain more than δ). r_u, the number of reference
items guaranteed to stay, is the number of leading j that pass (the authors stop at the first
failure; so do we, to match their numbers — a later j passing would also be a valid claim).

Certified precision@N = mean_u r_u / N, recall@N = mean_u r_u / |I_u|. With the clean top-N as
the reference set, r_u = N means u's top-N cannot change at all, so a target can reach u's top-N
only if r_u < N (or it is already there): the share of such users among a target's eligible users,
averaged over the targets, is a certified upper bound on the target HR@N.

What the bound is about: the *expected* recommender (frequencies p_ui, T → ∞), with probability
≥ 1 − α over the T draws that measured ``counts``. A finite-T PORE trained on poisoned data is a
noisy estimate of its own p'_ui; it agrees with the certificate except where two of its
frequencies are within Monte-Carlo noise — rare, since the certified margins are at least the
Bonferroni-corrected interval widths.

Everything is vectorized over users (user chunks bound the memory of dense rows); there is no
Python loop over users or items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

MODES = ("sampled", "all")
_PHANTOM = -1.0e9   # upper bound of a missing competitor: it can never displace anything


# ----------------------------------------------------------------------------- bounds

def cp_lower(counts, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson lower bound at level ``alpha``: the p with
    Pr(Binomial(trials, p) ≥ count) = alpha, i.e. Beta(count, trials − count + 1)'s alpha
    quantile; 0 for count 0."""
    c = np.asarray(counts, dtype=np.float64)
    out = np.zeros_like(c)
    pos = c > 0
    out[pos] = stats.beta.ppf(alpha, c[pos], trials - c[pos] + 1)
    return out


def cp_upper(counts, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound at level ``alpha``: Beta(count + 1, trials − count)'s
    1 − alpha quantile; 1 for count = trials."""
    c = np.asarray(counts, dtype=np.float64)
    out = np.ones_like(c)
    below = c < trials
    out[below] = stats.beta.isf(alpha, c[below] + 1, trials - c[below])
    return out


def bonferroni_alpha(alpha: float, n_users: int, n_items: int) -> float:
    """The level of each one-sided bound so that all users × items hold together w.p. 1 − α."""
    return alpha / (float(n_users) * float(n_items))


def bound_tables(counts, trials: int, alpha_each: float) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Lower and upper bounds for the distinct values of ``counts`` only (a handful of beta
    quantiles instead of one per cell). Returns ``(values, lower, upper)``; look a count up with
    ``np.searchsorted(values, count)``."""
    values = np.unique(np.asarray(counts, dtype=np.int64))
    return values, cp_lower(values, trials, alpha_each), cp_upper(values, trials, alpha_each)


# ----------------------------------------------------------------------------- fake users

def discount(n: int, e, s: int) -> np.ndarray:
    """C(n, s) / C(n + e, s): the probability that s users drawn without replacement from n + e
    hold none of the e added ones; vectorized over ``e``. Computed as
    Π_{i=1..e} (n + i − s)/(n + i) in logs (exact to rounding for any e)."""
    e = np.asarray(e, dtype=np.int64)
    if s > n:
        raise ValueError(f"sample size s={s} exceeds the n={n} users")
    # log C(n,s) − log C(n+e,s) = Σ_{i=1..e} log1p(−s/(n+i)), through a cumulative table
    emax = int(e.max()) if e.size else 0
    steps = np.log1p(-s / (n + np.arange(1, emax + 1, dtype=np.float64)))
    table = np.concatenate([[0.0], np.cumsum(steps)])
    return np.exp(table[e])


def fake_mass(n: int, e, s: int, mode: str = "sampled") -> np.ndarray:
    """δ: the largest frequency the e fake users can give one item of one user (see the module
    docstring); vectorized over ``e``."""
    e = np.asarray(e, dtype=np.int64)
    d = discount(n, e, s)
    if mode == "sampled":
        return np.maximum(s / (n + e) - (s / n) * d, 0.0)
    if mode == "all":
        return 1.0 - d
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


# ----------------------------------------------------------------------------- per-user r_u

@dataclass
class Prepared:
    """What the certificate needs per user, computed once and reused for every e.

    ``ref_lower`` (U, N): lower bounds of the user's N first reference items (by lower bound,
    ties by item id), NaN past the user's reference count; ``above`` (U, N): for each of them
    the number of competing (non-reference) items ranked above it, capped at N; ``top_upper``
    (U, N): the N largest competitor upper bounds, descending (phantoms ``-1e9`` when there are
    fewer); ``n_ref`` (U,): size of the reference set."""

    ref_lower: np.ndarray
    above: np.ndarray
    top_upper: np.ndarray
    n_ref: np.ndarray
    N: int


def _dense_rows(matrix, start: int, stop: int, dtype) -> np.ndarray:
    block = matrix[start:stop]
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)


def _first_n(key: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the ``n`` smallest keys of each row, in ascending key order."""
    n = min(n, key.shape[1])
    if n < key.shape[1]:
        part = np.argpartition(key, n - 1, axis=1)[:, :n]
    else:
        part = np.broadcast_to(np.arange(key.shape[1]), key.shape).copy()
    order = np.argsort(np.take_along_axis(key, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def prepare(counts, reference, trials: int, N: int, alpha_each: float,
            candidates=None, chunk_users: int = 2048) -> Prepared:
    """Sort out, per user, the reference items and the competitors the certificate compares.

    ``counts`` (U, I) integer frequencies (dense or scipy sparse); ``reference`` (U, I) bool
    (dense or sparse); ``candidates`` (U, I) bool or None: the items that can enter the user's
    top-N at all (e.g. not the user's own rated items); non-candidates never compete. Bounds
    are one-sided Clopper–Pearson at ``alpha_each`` (:func:`bonferroni_alpha`)."""
    n_users, n_items = counts.shape
    observed = np.concatenate([counts.data, [0]]) if sp.issparse(counts) else counts
    values, lower_t, upper_t = bound_tables(observed, trials, alpha_each)
    ref_lower = np.full((n_users, N), np.nan)
    above = np.full((n_users, N), N, dtype=np.int64)
    top_upper = np.full((n_users, N), _PHANTOM)
    n_ref = np.zeros(n_users, dtype=np.int64)
    big = np.int64(trials + 2) * n_items
    ids = np.arange(n_items, dtype=np.int64)
    for start in range(0, n_users, chunk_users):
        stop = min(start + chunk_users, n_users)
        c = _dense_rows(counts, start, stop, np.int64)
        ref = _dense_rows(reference, start, stop, bool)
        compete = ~ref
        if candidates is not None:
            compete &= _dense_rows(candidates, start, stop, bool)
        # order by count descending (bounds are increasing in the count), ties by item id
        key = (trials - c) * n_items + ids
        ref_idx = _first_n(np.where(ref, key, big), N)
        comp_idx = _first_n(np.where(compete, key, big), N)
        n_ref[start:stop] = ref.sum(1)
        n_comp = compete.sum(1)
        k = ref_idx.shape[1]
        lo = lower_t[np.searchsorted(values, np.take_along_axis(c, ref_idx, 1))]
        lo[np.arange(k)[None, :] >= n_ref[start:stop, None]] = np.nan
        ref_lower[start:stop, :k] = lo
        k2 = comp_idx.shape[1]
        up = upper_t[np.searchsorted(values, np.take_along_axis(c, comp_idx, 1))]
        up[np.arange(k2)[None, :] >= n_comp[:, None]] = _PHANTOM
        top_upper[start:stop, :k2] = up
        # competitors above the j-th reference item μ: upper > lower(μ), or equal with a
        # smaller item id (the combined order of the authors' stable sort)
        ub = top_upper[start:stop][:, None, :]              # (u, 1, N)
        cid = np.full((stop - start, N), n_items, dtype=np.int64)
        cid[:, :k2] = comp_idx
        rid = np.full((stop - start, N), -1, dtype=np.int64)
        rid[:, :k] = ref_idx
        lb = ref_lower[start:stop][:, :, None]              # (u, N, 1)
        beats = (ub > lb) | ((ub == lb) & (cid[:, None, :] < rid[:, :, None]))
        above[start:stop] = beats.sum(2)
    return Prepared(ref_lower, above, top_upper, n_ref, N)


def certified_counts(prep: Prepared, disc: float, delta: float, n_prime: int = 1) -> np.ndarray:
    """r_u for one e (given as its discount and fake mass): how many reference items of each
    user are guaranteed to stay in the top-N. Shape (U,)."""
    N = prep.N
    j = np.arange(1, N + 1)                                     # π' = 1..N
    k = prep.above                                              # (U, N)
    rank = j[None, :] + k
    valid = ~np.isnan(prep.ref_lower) & (rank <= N)
    cs = np.concatenate([np.zeros((len(k), 1)), np.cumsum(prep.top_upper, 1)], axis=1)
    length = np.maximum(N - rank + 1, 1)
    hi = np.broadcast_to(N - j + 1, k.shape)                    # window [k, N − π' + 1)
    kk = np.minimum(k, N)
    window = np.take_along_axis(cs, hi, 1) - np.take_along_axis(cs, kk, 1)
    rhs1 = (disc * window + n_prime * delta) / length
    last = prep.top_upper[:, np.clip(N - j, 0, N - 1)]          # (U, N): the window's last item
    rhs2 = disc * last + delta
    lhs = disc * np.nan_to_num(prep.ref_lower, nan=-np.inf)
    ok = valid & (lhs > np.minimum(rhs1, rhs2))
    return np.cumprod(ok, axis=1).sum(1)


def certify(prep: Prepared, n: int, s: int, e_values, n_prime: int = 1,
            mode: str = "sampled") -> np.ndarray:
    """r_u for every e in ``e_values``: shape (len(e_values), U)."""
    e = np.atleast_1d(np.asarray(e_values, dtype=np.int64))
    disc = discount(n, e, s)
    delta = fake_mass(n, e, s, mode)
    return np.stack([certified_counts(prep, float(d), float(dl), n_prime)
                     for d, dl in zip(disc, delta)])


# ----------------------------------------------------------------------------- summaries

def precision_recall(r: np.ndarray, n_ref: np.ndarray, N: int) -> tuple[float, float]:
    """Certified precision@N and recall@N over the users with a non-empty reference set."""
    has = n_ref > 0
    if not has.any():
        return float("nan"), float("nan")
    return float(np.mean(r[has] / N)), float(np.mean(r[has] / n_ref[has]))


def target_hr_bound(r: np.ndarray, N: int, in_top: np.ndarray, eligible: np.ndarray) -> float:
    """Certified upper bound on target HR@N: per target, the share of its eligible users whose
    top-N is not fully certified (r_u < N) or already holds it; mean over the targets.
    ``in_top`` and ``eligible``: (U, n_targets) bool."""
    open_ = (r < N)[:, None] | in_top
    n_elig = eligible.sum(0)
    per = np.where(n_elig > 0, (open_ & eligible).sum(0) / np.maximum(n_elig, 1), 0.0)
    return float(per.mean()) if per.size else float("nan")


def target_entry_bound(counts, candidates, targets, eligible, trials: int, N: int,
                       alpha_each: float, n: int, s: int, e_values,
                       mode: str = "sampled") -> np.ndarray:
    """A per-target certified bound on target HR@N, one value per e (tighter than
    :func:`target_hr_bound`, which needs the user's whole top-N certified).

    Target t cannot be in u's top-N after e fake users if N other items are guaranteed to stay
    strictly above it: the attacker can raise t by at most δ (p'_t ≤ disc · p̄_t + δ) and cannot
    push any item below disc · p̲_i. So t is out whenever the N-th largest lower bound among u's
    other candidate items satisfies disc · p̲_(N) > disc · p̄_t + δ. The bound is the share of
    t's eligible users where this fails, averaged over the targets.

    ``counts`` (U, I) dense ints; ``candidates`` (U, I) bool; ``targets`` (n_t,) item ids;
    ``eligible`` (U, n_t) bool. Returns (len(e_values),)."""
    counts = np.asarray(counts, dtype=np.int64)
    U, I = counts.shape
    targets = np.asarray(targets, dtype=np.int64)
    values, lower_t, upper_t = bound_tables(counts, trials, alpha_each)
    key = np.where(candidates, (trials - counts) * I + np.arange(I), (trials + 2) * I)
    top = _first_n(key, N + 1)                                     # (U, N + 1) by count
    lower = lower_t[np.searchsorted(values, np.take_along_axis(counts, top, 1))]
    lower[~np.take_along_axis(np.asarray(candidates, bool), top, 1)] = -np.inf
    lower = np.pad(lower, ((0, 0), (0, N + 1 - lower.shape[1])), constant_values=-np.inf)
    # the N-th largest lower bound among items other than t
    t_in_top = (top[:, :N, None] == targets[None, None, :]).any(1)      # (U, n_t)
    nth = np.where(t_in_top, lower[:, N, None], lower[:, N - 1, None])  # (U, n_t)
    ub_t = upper_t[np.searchsorted(values, counts[:, targets])]         # (U, n_t)
    e = np.atleast_1d(np.asarray(e_values, dtype=np.int64))
    disc = discount(n, e, s)
    delta = fake_mass(n, e, s, mode)
    eligible = np.asarray(eligible, bool)
    n_elig = eligible.sum(0)
    out = []
    for d, dl in zip(disc, delta):
        open_ = ~(d * nth > d * ub_t + dl)
        per = np.where(n_elig > 0, (open_ & eligible).sum(0) / np.maximum(n_elig, 1), 0.0)
        out.append(float(per.mean()) if per.size else float("nan"))
    return np.array(out)


def largest_certified_e(prep: Prepared, n: int, s: int, n_prime: int = 1,
                        mode: str = "sampled", e_max: int | None = None, need: int = 1) -> int:
    """The largest e at which some user keeps at least ``need`` certified reference items
    (−1: none even at e = 0). Doubling then bisection, assuming r_u does not grow with e (true
    while δ grows: e well below n)."""
    def any_certified(e: int) -> bool:
        return bool((certify(prep, n, s, [e], n_prime, mode) >= need).any())

    if not any_certified(0):
        return -1
    e_max = e_max if e_max is not None else 16 * n
    lo, hi = 0, 1
    while hi <= e_max and any_certified(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, e_max + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if any_certified(mid):
            lo = mid
        else:
            hi = mid
    return lo


def certify_reference(counts, reference, trials: int, n: int, s: int, e_values, N: int,
                      n_prime: int = 1, alpha: float = 0.001, mode: str = "sampled",
                      candidates=None, n_users_bonferroni: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One call: r_u (len(e_values), U) and the reference sizes (U,). ``n`` is the number of
    users the T samples were drawn from; the Bonferroni correction runs over
    ``n_users_bonferroni`` (default: the rows of ``counts``) × the items."""
    U, I = counts.shape
    alpha_each = bonferroni_alpha(alpha, n_users_bonferroni or U, I)
    prep = prepare(counts, reference, trials, N, alpha_each, candidates)
    return certify(prep, n, s, e_values, n_prime, mode), prep.n_ref
