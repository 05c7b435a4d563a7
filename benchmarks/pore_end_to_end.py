"""PORE end to end on ML-100K with the authors' test split: the package's ``defense: pore``
(SAR bases) trained on ``u.data`` minus the authors' ``sar_test_1.csv``, then certified
precision@N / recall@N with each user's test items as the reference set (as the authors
certify), beside the authors' own numbers (T = 100,000 SAR bases, recommend-to-sampled), and the
wall time.

    python benchmarks/pore_end_to_end.py [--T 1000] [--mode all|sampled] [--s 200] [--N 10]

Candidates: every item, the user's training items included (the authors' convention; the
package's cells exclude them, which can only certify more). The affinity is the rating / 5
(no time decay: see defenses/pore.py).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from common import data_root, machine
from data.ratings import Interactions, RatingScale
from defenses.base import TrainingData
from defenses.pore import Pore, PoreOptions
from utils import certification as C
from utils.config import ModelConfig
from utils.pore_files import pair_matrix, read_pairs

AUTHORS = {0: (0.2806, 0.1502), 1: (0.1410, 0.0799), 2: (0.0930, 0.0538), 5: (0.0231, 0.0180),
           10: (0.0, 0.0)}   # their code on their SAR file (benchmarks/pore_authors.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--s", type=int, default=200)
    parser.add_argument("--mode", default="all", choices=["all", "sampled"])
    parser.add_argument("--N", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--e", type=int, nargs="+", default=[0, 1, 2, 5, 10])
    args = parser.parse_args()
    root = Path(data_root() or "../shared/datasets")
    print(machine())
    raw = np.loadtxt(root / "ml-100k" / "u.data", dtype=np.int64)
    n_users, n_items = 943, 1682
    test = pair_matrix(read_pairs(root / "pore-100k" / "sar_test_1.csv"), n_users, n_items)
    is_test = np.asarray(test[raw[:, 0] - 1, raw[:, 1] - 1]).ravel()
    train = raw[~is_test]
    inter = Interactions(train[:, 0] - 1, train[:, 1] - 1, train[:, 2] / 5.0)
    empty = Interactions(np.zeros(0), np.zeros(0), np.zeros(0))
    data = TrainingData(inter, empty, n_users, n_items, RatingScale(5.0, 5))
    opts = PoreOptions(s=args.s, T=args.T, recommend_to=args.mode, batch=args.batch)
    start = time.perf_counter()
    model, info = Pore(opts, ModelConfig(), "cpu", args.seed).fit(data)
    seconds = time.perf_counter() - start
    counts = model.counts.numpy()
    r, n_ref = C.certify_reference(counts, test, args.T, n_users, args.s, args.e, args.N, 1,
                                   0.001, mode=args.mode)
    print(f"\n## PORE end to end, ML-100K, authors' SAR test split ({len(train)} training "
          f"ratings): SAR bases, T={args.T}, s={args.s}, N'=1, recommend_to={args.mode}, "
          f"seed {args.seed}; {torch.get_num_threads()} threads\n")
    print(f"Bases: {seconds:.1f} s ({1000 * seconds / args.T:.0f} ms per base model); "
          f"recommendations per user: {counts.sum(1).mean():.0f}\n")
    print(f"| e | certified precision@{args.N} | certified recall@{args.N} | authors "
          "(T = 100,000, sampled) |")
    print("|---|---|---|---|")
    for e, row in zip(args.e, r):
        p, rec = C.precision_recall(row, n_ref, args.N)
        ref = AUTHORS.get(e) if args.N == 10 else None
        shown = f"{ref[0]:.4f} / {ref[1]:.4f}" if ref else ""
        print(f"| {e} | {p:.4f} | {rec:.4f} | {shown} |")
    # plain (uncertified) precision of the frequency top-N, for scale
    key = (args.T - counts.astype(np.int64)) * n_items + np.arange(n_items)
    top = np.argsort(key, axis=1, kind="stable")[:, :args.N]
    hits = np.take_along_axis(test.toarray(), top, axis=1).sum(1)
    print(f"\nEmpirical precision@{args.N} of PORE's top-{args.N} (not certified): "
          f"{hits.mean() / args.N:.4f}")


if __name__ == "__main__":
    main()
