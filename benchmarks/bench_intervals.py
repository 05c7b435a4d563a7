"""Cost of the uncertainty intervals (issue: ≤ 20 % of a plain MF cell's evaluation budget).

Rebuilds the summary of a finished results folder twice — with the per-user outcomes under
``cells/`` (bootstrap intervals, paired tests) and without them (seed-only intervals) — and
prints the extra seconds per cell beside the median time of that folder's plain MF cells
(undefended, training + evaluation, from runs.csv).

    python benchmarks/bench_intervals.py results/<experiment> [--bootstrap 1000]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, print_table
from experiment.reporting import read_runs
from experiment.summary import IntervalOptions, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()
    runs = read_runs(args.folder / "runs.csv")
    timings = {}
    for label, cells in (("seed-only", None), ("bootstrap", args.folder / "cells")):
        start = time.perf_counter()
        summary = summarize(runs, args.k, None,
                            IntervalOptions(bootstrap=args.bootstrap, cells_dir=cells))
        timings[label] = time.perf_counter() - start
        assert cells is None or (summary["interval"] == "bootstrap").any(), \
            f"{args.folder}/cells holds no per-user outcomes"
    n_cells = len(runs)
    extra = (timings["bootstrap"] - timings["seed-only"]) / n_cells
    plain = runs[(runs.defense == "none") & (runs.model == "mf")]
    cell_seconds = float((plain.seconds_train + plain.seconds_eval).median())
    print(f"machine: {machine()}")
    print(f"folder: {args.folder} ({n_cells} cells, {args.bootstrap} replicates)")
    print_table("Uncertainty intervals", [
        ("summary without / with intervals (s)",
         f"{timings['seed-only']:.2f} / {timings['bootstrap']:.2f}", "", ""),
        ("extra per cell (s)", f"{extra:.4f}", "", ""),
        ("plain MF cell, median train + eval (s)", f"{cell_seconds:.2f}", "", ""),
        ("extra / plain MF cell", f"{100 * extra / cell_seconds:.1f} %", "≤ 20 %",
         "ok" if extra <= 0.2 * cell_seconds else "slower"),
    ])


if __name__ == "__main__":
    main()
