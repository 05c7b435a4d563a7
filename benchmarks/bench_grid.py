"""Grid scale-out: the same ML-100K grid with 1 worker and with 2 local workers (and optionally
on a local Ray instance), each from a cold cache, by ``python main.py`` exactly as a user runs it.

The grid: random and unpopular targets × the attacks random, average, bandwagon, segment (3%,
knowledge cost 0.4) × the defenses none, AT, RAT = 24 attacked cells, plus the 2 Origin cells
the grid adds itself; MF in the TCD setting (d 128, batch 2048, Adam, 40 epochs); one torch
thread per cell. Prints the wall times, the speed-up (experiments.md §4: ≥ 1.6× with 2 workers
on a 2-core machine) and whether runs.csv holds identical numbers (every column except the
``seconds_*`` timings).

    python benchmarks/bench_grid.py [--workers 2] [--ray] [--epochs 40]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import ROOT, data_root, machine, print_table

GRID = ["dataset=ml-100k", "targets.kind=[random,unpopular]",
        "attack.name=[random,average,bandwagon,segment]", "attack.size=0.03",
        "attack.knowledge_cost=0.4", "defense.name=[none,at,rat]", "repeats=1", "seed=0",
        "experiment=bench_grid", "threads=1"]


def run(workdir: Path, extra: list[str], epochs: int) -> tuple[float, Path]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    root = data_root()
    if root:
        env["ROBUSTREC_DATA"] = root
    cmd = [sys.executable, str(ROOT / "main.py"), *GRID, f"model.epochs={epochs}",
           f"results_dir={workdir / 'results'}", f"dataset.cache_dir={workdir / 'cache'}",
           *extra, "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run {extra} failed:\n{proc.stderr[-3000:]}")
    return wall, workdir / "results" / "bench_grid" / "runs.csv"


def numbers(path: Path) -> pd.DataFrame:
    runs = pd.read_csv(path)
    return runs[[c for c in runs.columns if not c.startswith("seconds_")]]


def differences(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """The cells and columns where two runs.csv tables disagree (for a mismatch report)."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return f"shapes differ: {a.shape} vs {b.shape}"
    key = ["target_kind", "attack", "defense", "repeat"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    lines = []
    for column in a.columns:
        differ = ~((a[column] == b[column]) | (a[column].isna() & b[column].isna()))
        for row in differ[differ].index[:5]:
            lines.append(f"{column}: {a.loc[row, key].tolist()} {a.loc[row, column]!r} vs "
                         f"{b.loc[row, column]!r}")
    return "\n".join(lines) or "same values, different row order"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray instance")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()}")
    base = Path(tempfile.mkdtemp(prefix="bench_grid_"))
    try:
        one, one_csv = run(base / "w1", ["workers=1"], args.epochs)
        many, many_csv = run(base / f"w{args.workers}", [f"workers={args.workers}"],
                             args.epochs)
        runs = numbers(one_csv)
        same = numbers(many_csv).equals(runs)
        rows = [("grid cells (attacked + Origin)",
                 f"{(runs.attack != 'none').sum()} + {(runs.attack == 'none').sum()}", "24 + 2",
                 ""),
                ("wall, 1 worker (s)", f"{one:.1f}", "", ""),
                (f"wall, {args.workers} workers (s)", f"{many:.1f}", "", ""),
                (f"speed-up {args.workers} workers vs 1", f"{one / many:.2f}×", "≥ 1.6×",
                 "ok" if one / many >= 1.6 else "below target"),
                ("runs.csv numbers identical", "yes" if same else "NO", "yes",
                 "ok" if same else "MISMATCH")]
        if args.ray:
            ray_wall, ray_csv = run(base / "ray", ["executor=ray", f"workers={args.workers}"],
                                    args.epochs)
            ray_same = numbers(ray_csv).equals(runs)
            rows += [(f"wall, Ray local instance, {args.workers} CPUs (s)", f"{ray_wall:.1f}",
                      "", ""),
                     ("Ray runs.csv numbers identical", "yes" if ray_same else "NO", "yes",
                      "ok" if ray_same else "MISMATCH")]
        print_table("Grid scale-out (ML-100K, 40-epoch MF cells)", rows)
        if not same:
            print(differences(runs, numbers(many_csv)))
        print(f"\nload average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
