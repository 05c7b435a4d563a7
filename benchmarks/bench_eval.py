"""Full-ranking evaluation speed (experiments.md §5: ≤ 1 s on ML-1M-sized data) and the cost of
the long-tail metrics (issue 29: tail_share@K, tail_hr@K, coverage@K, gini@K add ≤ 10 %).

Scores every item for all users of a synthetic dataset of ML-100K size (943 × 1,682, 100 k
ratings) and of ML-1M size (6,040 × 3,706, 1 M ratings), masks each user's training and
validation items with −inf, and computes every registered metric (HR@50, NDCG@50, MRR@50, test
MSE, target HR@50 for 5 targets, …) with and without the tail metrics (which add the top-K lists
and the items' popularity). The time is the process CPU time of ``Evaluator.evaluate`` (metrics and
the stored per-user outcomes included; one torch thread, so CPU time is the run time on an idle
machine and less disturbed than wall time on a loaded one), best of ``--repeat`` runs, the two
variants interleaved.

    python benchmarks/bench_eval.py [--only ml-100k]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import machine, print_table
from data import split_ratings
from data.synthetic import generate
from models.mf import MF
from utils.metrics import LOO, Evaluator, metrics_for

CASES = {"ml-100k": (943, 1682, 100_000), "ml-1m": (6040, 3706, 1_000_000)}
TAIL = ("tail_share", "tail_hr", "coverage", "gini")


def time_case(users: int, items: int, ratings: int, repeat: int) -> tuple[float, float]:
    data = generate(users, items, ratings / (users * items), 8, 0.3, 5,
                    np.random.default_rng(0))
    split = split_ratings(data, np.random.default_rng(1))
    model = MF(data.n_users, data.n_items, 128, torch.Generator().manual_seed(0))
    every = metrics_for(LOO)   # the leave-one-out protocol's metrics (this split's)
    without = Evaluator(split, np.arange(5), k=50,
                        metrics=[m for m in every if m.name not in TAIL])
    with_tail = Evaluator(split, np.arange(5), k=50, metrics=every)
    assert {m.name for m in with_tail.metrics} >= set(TAIL)
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeat):
        for name, ev in (("without", without), ("with", with_tail)):
            start = time.process_time()
            ev.evaluate(model)
            times[name].append(time.process_time() - start)
    return min(times["without"]), min(times["with"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=sorted(CASES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()} (1 torch thread)")
    rows = []
    for name, (users, items, ratings) in CASES.items():
        if args.only and name != args.only:
            continue
        base, tail = time_case(users, items, ratings, args.repeat)
        extra = tail / base - 1
        rows.append((f"{name}-sized ({users} × {items}): evaluate, s", f"{base:.3f} → {tail:.3f}",
                     "≤ 1 s (ML-1M)" if name == "ml-1m" else "",
                     f"+{100 * extra:.1f} % ({'ok' if extra <= 0.10 else 'over 10 %'})"))
    print_table(f"Full-ranking evaluation without → with the tail metrics (best of "
                f"{args.repeat})", rows)


if __name__ == "__main__":
    main()
