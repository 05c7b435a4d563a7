"""Full-ranking evaluation speed on ML-1M-sized data (experiments.md §5: ≤ 1 s).

Scores every item for all 6,040 users of a synthetic 6,040 × 3,706 dataset with about 1 M
ratings, masks each user's training and validation items with −inf, and computes HR@50, NDCG@50
and target HR@50 for 5 targets.

    python benchmarks/bench_eval.py
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
from utils.metrics import Evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    density = args.ratings / (args.users * args.items)
    data = generate(args.users, args.items, density, 8, 0.3, 5, np.random.default_rng(0))
    split = split_ratings(data, np.random.default_rng(1))
    model = MF(data.n_users, data.n_items, 128, torch.Generator().manual_seed(0))
    evaluator = Evaluator(split, np.arange(5), k=50)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        evaluator.evaluate(model)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"machine: {machine()}")
    print(f"data: {data.n_users} users × {data.n_items} items, {data.n_ratings} ratings")
    print_table(f"Full-ranking evaluation (best of {args.repeat})", [
        ("evaluate all users (s)", f"{best:.3f}", "≤ 1 s", "ok" if best <= 1 else "slower"),
    ])


if __name__ == "__main__":
    main()
