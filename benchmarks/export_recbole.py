"""Export the package's per-user ratio split (``data.split.split_by_ratio``) as RecBole atomic
files, so RecBole trains and evaluates on exactly our train / validation / test rows.

    python benchmarks/export_recbole.py --out /tmp/recbole_data --dataset ml-100k --seed 0
    # → /tmp/recbole_data/ml-100k-s0/ml-100k-s0.{train,valid,test}.inter

RecBole reads them with ``dataset: ml-100k-s0``, ``data_path: /tmp/recbole_data`` and
``benchmark_filename: [train, valid, test]`` (recbole-reference.md). Each file is tab-separated
with the header ``user_id:token  item_id:token  rating:float``; the tokens are the package's
0-based user and item indices, the rating 1 (implicit feedback). The split is the one
``split_by_ratio`` draws from ``numpy_rng(seed, "split", dataset)``, as the package's own runs
would with that master seed. ``--root``: folder of raw files (default ``$ROBUSTREC_DATA``,
else ``../shared/datasets``). Exit 1 on a dataset problem.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import common  # noqa: F401 - puts the repository on sys.path

from data import DatasetError, load_dataset
from data.ratings import Interactions
from data.split import RatioSplit, split_by_ratio
from utils.config import DatasetConfig
from utils.seeding import numpy_rng

HEADER = "user_id:token\titem_id:token\trating:float\n"


def ratio_split(dataset: str, seed: int, test: float = 0.2, val: float = 0.1,
                root: str | None = None, cache_dir: str = ".cache") -> RatioSplit:
    """The package's ratio split of ``dataset`` for master seed ``seed`` (implicit)."""
    root = root or os.environ.get("ROBUSTREC_DATA") or str(common.ROOT.parent / "shared" /
                                                            "datasets")
    data = load_dataset(DatasetConfig(name=dataset, root=root, cache_dir=cache_dir), seed)
    return split_by_ratio(data, numpy_rng(seed, "split", dataset), test, val, "implicit")


def write_atomic(inter: Interactions, path: Path) -> None:
    lines = [HEADER] + [f"{u}\t{i}\t1.0\n" for u, i in zip(inter.users.tolist(),
                                                           inter.items.tolist())]
    path.write_text("".join(lines), encoding="utf-8")


def export(split: RatioSplit, out: str | Path, name: str) -> Path:
    """Write ``<out>/<name>/<name>.train.inter``, ``.valid.inter``, ``.test.inter``; returns
    the folder."""
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    for part, inter in (("train", split.train), ("valid", split.val), ("test", split.test)):
        write_atomic(inter, folder / f"{name}.{part}.inter")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="RecBole data_path")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0, help="master seed of the split")
    parser.add_argument("--test", type=float, default=0.2, help="per-user test share")
    parser.add_argument("--val", type=float, default=0.1, help="per-user validation share")
    parser.add_argument("--root", default=None, help="folder of raw dataset files")
    args = parser.parse_args(argv)
    try:
        split = ratio_split(args.dataset, args.seed, args.test, args.val, args.root)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = f"{args.dataset}-s{args.seed}"
    folder = export(split, args.out, name)
    print(f"{folder}: {split.n_users} users, {split.n_items} items; train {len(split.train)}, "
          f"valid {len(split.val)}, test {len(split.test)} interactions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
