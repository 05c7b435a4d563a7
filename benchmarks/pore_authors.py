"""PORE's certificate on the authors' own frequency files (ML-100K, T = 100,000 base
recommenders, s = 200, N' = 1; ``../shared/datasets/pore-100k/``): certified precision@N and
recall@N at e = 0, 1, 2, 5, 10 for the SAR and BPR bases, beside the numbers the authors' own
certification code gives on those files (issue 32: e = 0 and 1).

    python benchmarks/pore_authors.py [--N 10] [--alpha 0.001] [--e 0 1 2 5 10]

Training = ``u.data`` minus the test rows (only needed to report its size: the authors'
certificate ranks every item, the user's own training items included, so ``candidates`` is
all items here).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import data_root, machine
from utils import certification as C
from utils.pore_files import load_authors_run

# The authors' certification code on their files, N = 10, alpha = 0.001 (issue 32).
REFERENCE = {("sar", 0): (0.2806, 0.1502), ("bpr", 0): (0.2888, 0.1373),
             ("sar", 1): (0.1410, 0.0799), ("bpr", 1): (0.1433, 0.0763)}
T, S, N_PRIME = 100_000, 200, 1


def certify_authors_run(root: Path, base: str, N: int = 10, alpha: float = 0.001,
                        e_values=(0, 1, 2, 5, 10)) -> dict[int, tuple[float, float]]:
    """{e: (certified precision@N, certified recall@N)} of one of the authors' runs."""
    run = load_authors_run(root / "pore-100k", base, root / "ml-100k" / "u.data")
    counts = run["counts"]
    n_users = counts.shape[0]
    r, n_ref = C.certify_reference(counts, run["test"], T, n_users, S, list(e_values), N,
                                   N_PRIME, alpha, mode="sampled")
    return {int(e): C.precision_recall(row, n_ref, N) for e, row in zip(e_values, r)}


def promotion_bound(root: Path, base: str, N: int = 10, alpha: float = 0.001,
                    e_values=(0, 1, 2, 5, 10)) -> tuple[dict[int, float], int, int]:
    """With each user's top-N (by frequency, ties by item id, training items excluded) as the
    reference set: {e: share of users whose top-N is NOT fully certified} (the target-HR@N
    bound for a target no user rated), the largest e at which some user's whole top-N is
    certified, and the largest e at which some user keeps one certified test item."""
    run = load_authors_run(root / "pore-100k", base, root / "ml-100k" / "u.data")
    counts = run["counts"].toarray()
    n_users, n_items = counts.shape
    cand = ~run["train"].toarray()
    key = np.where(cand, (T - counts.astype(np.int64)) * n_items + np.arange(n_items),
                   np.iinfo(np.int64).max)
    top = np.zeros(counts.shape, bool)
    np.put_along_axis(top, np.argsort(key, axis=1, kind="stable")[:, :N], True, axis=1)
    a = C.bonferroni_alpha(alpha, n_users, n_items)
    prep = C.prepare(counts, top, T, N, a, cand)
    r = C.certify(prep, n_users, S, list(e_values), N_PRIME, "sampled")
    shares = {int(e): float((row < N).mean()) for e, row in zip(e_values, r)}
    e_top = C.largest_certified_e(prep, n_users, S, N_PRIME, "sampled", need=N)
    prep_test = C.prepare(counts, run["test"], T, N, a)
    e_test = C.largest_certified_e(prep_test, n_users, S, N_PRIME, "sampled")
    return shares, e_top, e_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--e", type=int, nargs="+", default=[0, 1, 2, 5, 10])
    parser.add_argument("--thin", type=int, nargs="*", default=[],
                        help="also certify the counts thinned to these T (Binomial(count, T/T0) "
                             "per cell: what fewer base models would have given)")
    args = parser.parse_args()
    root = Path(data_root() or "../shared/datasets")
    print(machine())
    if args.thin:
        print(f"\n## Fewer base models: the authors' SAR counts thinned to T' (seed 0), "
              f"certified precision@{args.N}\n")
        print("| T' | recommendations per user | " +
              " | ".join(f"e = {e}" for e in args.e) + " |")
        print("|---|---|" + "---|" * len(args.e))
        run = load_authors_run(root / "pore-100k", "sar", root / "ml-100k" / "u.data")
        rng = np.random.default_rng(0)
        for t_prime in args.thin:
            counts = run["counts"].copy()
            counts.data = rng.binomial(counts.data, t_prime / T)
            r, n_ref = C.certify_reference(counts, run["test"], t_prime, counts.shape[0], S,
                                           args.e, args.N, N_PRIME, args.alpha, "sampled")
            print(f"| {t_prime} | {counts.sum(1).mean():.0f} | " +
                  " | ".join(f"{C.precision_recall(x, n_ref, args.N)[0]:.4f}" for x in r) +
                  " |")
    print(f"\n## Certified precision@{args.N} / recall@{args.N} on the authors' files "
          f"(T={T}, s={S}, N'={N_PRIME}, alpha={args.alpha})\n")
    print("| base | e | certified precision | certified recall | authors' code | match |")
    print("|---|---|---|---|---|---|")
    for base in ("sar", "bpr"):
        start = time.perf_counter()
        result = certify_authors_run(root, base, args.N, args.alpha, args.e)
        seconds = time.perf_counter() - start
        for e, (p, r) in result.items():
            ref = REFERENCE.get((base, e)) if args.N == 10 and args.alpha == 0.001 else None
            match = "" if ref is None else (
                "yes" if (round(p, 4), round(r, 4)) == ref else "NO")
            shown = "" if ref is None else f"{ref[0]:.4f} / {ref[1]:.4f}"
            print(f"| {base} | {e} | {p:.4f} | {r:.4f} | {shown} | {match} |")
        print(f"| {base} | | ({seconds:.2f} s: read + certify every e) | | | |")
    print(f"\n## Promotion bound on the authors' files: share of users whose top-{args.N} is "
          "not fully certified (= certified target-HR bound for an item no user rated)\n")
    print("| base | " + " | ".join(f"e = {e}" for e in args.e) +
          " | largest e, whole top-N certified for some user | largest e, a test item "
          "certified for some user |")
    print("|---|" + "---|" * (len(args.e) + 2))
    for base in ("sar", "bpr"):
        shares, e_top, e_test = promotion_bound(root, base, args.N, args.alpha, args.e)
        print(f"| {base} | " + " | ".join(f"{shares[e]:.4f}" for e in args.e) +
              f" | {e_top} | {e_test} |")


if __name__ == "__main__":
    main()
