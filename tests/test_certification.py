"""PORE's certificate (utils/certification.py): the Clopper–Pearson bounds against scipy, the
fake-user discount against binomial coefficients, r_u on a case worked out by hand, and the
vectorized r_u against a plain per-user transcription of Theorem 1 on random cases with ties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from utils import certification as C


@pytest.mark.parametrize("k,n,alpha", [(0, 10, 0.05), (3, 10, 0.05), (10, 10, 0.05),
                                       (7, 200, 1e-3), (5000, 10000, 1e-3), (1, 1000, 0.01)])
def test_clopper_pearson_matches_scipy(k, n, alpha):
    # a two-sided exact interval at confidence 1 - 2·alpha has alpha in each tail
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert C.cp_lower([k], n, alpha)[0] == pytest.approx(ci.low, rel=1e-9, abs=1e-15)
    assert C.cp_upper([k], n, alpha)[0] == pytest.approx(ci.high, rel=1e-9, abs=1e-15)
    # and by definition: the tails of the binomial at the bounds equal alpha
    if 0 < k:
        assert stats.binom.sf(k - 1, n, C.cp_lower([k], n, alpha)[0]) == pytest.approx(alpha,
                                                                                    rel=1e-6)
    if k < n:
        assert stats.binom.cdf(k, n, C.cp_upper([k], n, alpha)[0]) == pytest.approx(alpha,
                                                                                  rel=1e-6)


@pytest.mark.parametrize("k,n", [(1, 1000), (37, 5000), (21_000, 100_000), (99, 100)])
def test_clopper_pearson_tails_at_bonferroni_levels(k, n):
    # scipy's binomtest is not precise at these levels; the bounds' definition is
    a = 0.001 / (943 * 1682)
    assert stats.binom.sf(k - 1, n, C.cp_lower([k], n, a)[0]) == pytest.approx(a, rel=1e-6)
    assert stats.binom.cdf(k, n, C.cp_upper([k], n, a)[0]) == pytest.approx(a, rel=1e-6)


def test_bound_edges_and_bonferroni():
    # at the Bonferroni level of ML-100K (too small for binomtest's confidence_level in floats):
    # closed forms at count 1 (lower) and 0 (upper)
    a, n = 0.001 / (943 * 1682), 100_000
    assert C.cp_lower([1], n, a)[0] == pytest.approx(-np.expm1(np.log1p(-a) / n), rel=1e-9)
    assert C.cp_upper([0], n, a)[0] == pytest.approx(-np.expm1(np.log(a) / n), rel=1e-9)
    assert C.cp_lower([0], 50, 0.01)[0] == 0.0
    assert C.cp_upper([50], 50, 0.01)[0] == 1.0
    # count 0: 1 - alpha^(1/n)
    assert C.cp_upper([0], 50, 0.01)[0] == pytest.approx(1 - 0.01 ** (1 / 50), rel=1e-12)
    assert C.bonferroni_alpha(0.001, 943, 1682) == pytest.approx(0.001 / (943 * 1682))


@pytest.mark.parametrize("n,s", [(943, 200), (50, 7), (10, 10), (6040, 300)])
def test_discount_is_a_ratio_of_binomial_coefficients(n, s):
    es = [0, 1, 2, 5, 10, 28, 100]
    got = C.discount(n, es, s)
    for e, value in zip(es, got):
        exact = math.comb(n, s) / math.comb(n + e, s)
        assert value == pytest.approx(exact, rel=1e-11, abs=1e-300)


def test_fake_mass_is_a_probability_of_the_sample():
    # sampled: Pr(u in S, some fake in S) = s/n' - Pr(u in S, no fake) = s/n' - C(n-1,s-1)/C(n+e,s)
    n, s, e = 30, 6, 4
    direct = s / (n + e) - math.comb(n - 1, s - 1) / math.comb(n + e, s)
    assert C.fake_mass(n, [e], s, "sampled")[0] == pytest.approx(direct, rel=1e-12)
    assert C.fake_mass(n, [e], s, "all")[0] == pytest.approx(
        1 - math.comb(n, s) / math.comb(n + e, s), rel=1e-12)
    assert C.fake_mass(n, [0], s, "all")[0] == 0.0


def test_r_u_by_hand():
    """One user, N = 2, T = 10,000, items A..E with counts 6000, 3000, 5000, 500, 0 and the
    reference set {A, B}. By hand: ordered by (lower bound for A, B; upper bound for the rest)
    the list is A, C, B, D, E. A is first (rank 1): to push it out of the top 2 the attacker must
    lift both C and D above it. B has C above it (rank 3 > N): never certified. So r = 1 while
    A's lower bound, times the discount, beats min((disc·(ub_C + ub_D) + N'δ)/2, disc·ub_D + δ),
    and r = 0 after."""
    T, N, alpha = 10_000, 2, 1e-4
    counts = np.array([[6000, 3000, 5000, 500, 0]])
    ref = np.array([[True, True, False, False, False]])
    lb_a = C.cp_lower([6000], T, alpha)[0]
    ub_c, ub_d = C.cp_upper([5000, 500], T, alpha)
    assert ub_c > C.cp_lower([3000], T, alpha)[0] and lb_a > ub_c   # the order A, C, B, D
    prep = C.prepare(counts, ref, T, N, alpha)
    n, s = 100, 10
    for mode in C.MODES:
        es = np.arange(0, 60)
        r = C.certify(prep, n, s, es, 1, mode)[:, 0]
        disc = C.discount(n, es, s)
        delta = C.fake_mass(n, es, s, mode)
        by_hand = (disc * lb_a > np.minimum((disc * (ub_c + ub_d) + delta) / 2,
                                            disc * ub_d + delta)).astype(int)
        assert np.array_equal(r, by_hand)
        assert r[0] == 1 and r[-1] == 0        # the case crosses over inside the range
    # with B's competitor C gone (not a candidate for this user) B is ranked 2nd: r = 2 at e = 0
    cand = np.array([[True, True, False, True, True]])
    assert C.certify(C.prepare(counts, ref, T, N, alpha, cand), n, s, [0])[0, 0] == 2


def _theorem1_one_user(counts, ref, T, N, alpha_each, disc, delta, n_prime, cand=None):
    """A plain per-user transcription of Theorem 1 (no vectorization): sort every item by
    (lower bound if reference else upper bound) descending, ties by item id; walk the reference
    items in that order; stop at the first one not guaranteed."""
    items = range(len(counts))
    lows, ups = C.cp_lower(counts, T, alpha_each), C.cp_upper(counts, T, alpha_each)
    lower = {i: lows[i] for i in items}
    upper = {i: ups[i] for i in items}
    pool = [i for i in items if ref[i] or cand is None or cand[i]]
    bound = {i: lower[i] if ref[i] else upper[i] for i in pool}
    order = sorted(pool, key=lambda i: (-bound[i], i))
    refs = [i for i in order if ref[i]]
    r = 0
    for j, mu in enumerate(refs, start=1):
        rank = order.index(mu) + 1
        if rank > N:
            break
        below = [v for v in order[rank:] if not ref[v]]
        size = N - rank + 1
        chosen = below[:size]
        lhs = disc * lower[mu]
        if chosen:
            rhs1 = (disc * sum(upper[v] for v in chosen) + n_prime * delta) / size
            rhs2 = min(disc * upper[v] + delta for v in chosen)
            rhs = min(rhs1, rhs2) if len(chosen) == size else -math.inf
        else:
            rhs = -math.inf
        if lhs <= rhs:
            break
        r = j
    return r


@pytest.mark.parametrize("seed", range(4))
def test_vectorized_r_u_equals_a_per_user_transcription(seed):
    rng = np.random.default_rng(seed)
    U, I, T, N = 25, 30, 1000, 5
    # few distinct counts: many ties between items and between bounds
    counts = rng.choice([0, 1, 3, 10, 30, 80, 200, 400, 600, 900], size=(U, I),
                        p=[.4, .1, .1, .1, .1, .06, .05, .04, .03, .02])
    ref = rng.random((U, I)) < 0.25
    cand = rng.random((U, I)) < 0.9
    alpha_each = 0.05 / (U * I)
    n, s = 400, 8
    seen = set()
    for use_cand in (None, cand):
        prep = C.prepare(sp.csr_matrix(counts), ref, T, N, alpha_each, use_cand,
                         chunk_users=7)
        for e in (0, 3, 15):
            for mode, n_prime in (("sampled", 1), ("all", 2)):
                disc = C.discount(n, [e], s)[0]
                delta = C.fake_mass(n, [e], s, mode)[0]
                got = C.certify(prep, n, s, [e], n_prime, mode)[0]
                want = [_theorem1_one_user(counts[u], ref[u], T, N, alpha_each, disc, delta,
                                           n_prime, None if use_cand is None else cand[u])
                        for u in range(U)]
                assert got.tolist() == want, (e, mode)
                seen.update(want)
    assert {0, 1, 2} <= seen     # the cases certify none, one and several items


def test_summaries():
    r = np.array([2, 0, 1, 3])
    n_ref = np.array([4, 0, 1, 3])
    p, rec = C.precision_recall(r, n_ref, 3)
    assert p == pytest.approx(np.mean([2 / 3, 1 / 3, 1]))
    assert rec == pytest.approx(np.mean([2 / 4, 1, 1]))
    # target bound: users with r < N or the target already in the top-N, among the eligible
    in_top = np.array([[False, True], [False, False], [False, False], [True, False]])
    elig = np.array([[True, True], [True, False], [True, True], [False, True]])
    # target 0: eligible users 0,1,2 -> open: r<3 for 0,1,2 -> 3/3; target 1: eligible 0,2,3
    # -> open 0 (r<3), 2 (r<3), 3 (r=3, not in top) -> 2/3
    assert C.target_hr_bound(r, 3, in_top, elig) == pytest.approx((1 + 2 / 3) / 2)


def test_largest_certified_e_is_the_last_e_with_a_certificate():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 400, size=(20, 40)) ** 2 // 40
    ref = np.zeros((20, 40), bool)
    ref[np.arange(20), counts.argmax(1)] = True
    prep = C.prepare(counts, ref, 4000, 3, 0.001 / 800)
    e_star = C.largest_certified_e(prep, 100, 10, 1, "all")
    assert e_star >= 0
    assert C.certify(prep, 100, 10, [e_star], 1, "all").any()
    assert not C.certify(prep, 100, 10, [e_star + 1], 1, "all").any()


def test_target_entry_bound_by_hand():
    """N = 2, one user, items A..E (counts 6000, 5000, 3000, 0, 40 of T = 10,000); the target is
    D (count 0). D stays out of the top 2 while the 2nd largest lower bound among the other
    candidates (B's) times the discount beats D's upper bound times the discount plus δ. A
    second target, A, is in the top 2: the bound counts that user as open at every e."""
    T, N, alpha = 10_000, 2, 1e-4
    counts = np.array([[6000, 5000, 3000, 0, 40]])
    cand = np.ones_like(counts, dtype=bool)
    n, s = 100, 10
    es = np.arange(0, 60)
    lb_b = C.cp_lower([5000], T, alpha)[0]
    ub_d = C.cp_upper([0], T, alpha)[0]
    disc, delta = C.discount(n, es, s), C.fake_mass(n, es, s, "all")
    want = (~(disc * lb_b > disc * ub_d + delta)).astype(float)
    got = C.target_entry_bound(counts, cand, [3], np.ones((1, 1), bool), T, N, alpha, n, s,
                               es, "all")
    assert np.array_equal(got, want) and want[0] == 0 and want[-1] == 1
    # A is the user's top item: open whatever e (its N-th other item is C, below A)
    got_a = C.target_entry_bound(counts, cand, [0], np.ones((1, 1), bool), T, N, alpha, n, s,
                                 es, "all")
    assert (got_a == 1).all()
    # B not a candidate (the user rated it): the 2nd other item is now C
    cand2 = cand.copy()
    cand2[0, 1] = False
    lb_c = C.cp_lower([3000], T, alpha)[0]
    want2 = (~(disc * lb_c > disc * ub_d + delta)).astype(float)
    got2 = C.target_entry_bound(counts, cand2, [3], np.ones((1, 1), bool), T, N, alpha, n, s,
                                es, "all")
    assert np.array_equal(got2, want2) and not np.array_equal(want2, want)
