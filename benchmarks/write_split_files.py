"""Write the split a config gives each of its datasets in the TCD authors' file format
(``greensun0830/TCD`` ``Data/<ds>.train.rating`` / ``.test.rating``: tab-separated ``user item
rating``, 0-based ids, ratings as grid levels — FilmTrust ×2), e.g. to check that
``dataset.split_files`` reads it back to the same split, or to hand our split to their code.

    python benchmarks/write_split_files.py --out /tmp/split dataset=ml-100k \\
        split.test_item=any evaluation.select_on=test
    # → /tmp/split/ml-100k.train.rating, /tmp/split/ml-100k.test.rating

The training file holds the training and validation rows (validation is drawn again when the
files are read); the test file one row per user with a test item. ``--repeat R``: repeat R's
split (its seed). Exit codes as ``main.py``: 2 bad configuration, 1 a dataset problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common  # noqa: F401 - puts the repository on sys.path

from data import DatasetError
from data.split import write_split_files
from utils.config import ConfigError, as_list, for_dataset
from experiment.validation import load_config
from experiment.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: none)")
    parser.add_argument("--out", required=True, help="folder for the two files per dataset")
    parser.add_argument("--repeat", type=int, default=0, help="whose seed's split (default 0)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as main.py's")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        for name in as_list(cfg.dataset.name):
            split = Workspace(for_dataset(cfg, name)).split(name, args.repeat)
            out = Path(args.out)
            train, test = out / f"{name}.train.rating", out / f"{name}.test.rating"
            write_split_files(split, train, test)
            print(f"{train}, {test.name}: {split.n_users} users, {split.n_items} items, "
                  f"{len(split.train) + len(split.val)} training and "
                  f"{int((split.test_items >= 0).sum())} test ratings")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
