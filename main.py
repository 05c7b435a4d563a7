"""Run an experiment: ``python main.py [--config FILE] [key=value ...]``.

Reads ``config.yaml`` (or ``--config FILE``), applies ``key=value`` overrides (values parsed as
YAML, e.g. ``dataset=ml-1m defense=[none,tcd] repeats=5``), validates everything before any
work, runs every cell and writes the result files to ``results/<experiment>/``.
``python main.py --rebuild results/<experiment>`` rebuilds summary, tables and figures from its
``runs.csv`` without training anything.
Exit codes: 0 done, 2 bad configuration, 1 any other error or a failed cell (message on one
line).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from utils.config import ConfigError
from experiment.validation import load_config

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: config.yaml)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress logs")
    parser.add_argument("--rebuild", metavar="RESULTS_DIR", default=None,
                        help="rebuild tables and figures of a finished run from its runs.csv")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_intermixed_args(argv)  # flags may follow overrides
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s")
    if args.rebuild is not None:
        from experiment.reporting import main as rebuild_main
        return rebuild_main([args.rebuild])
    try:
        path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        cfg = load_config(path, args.overrides)
        if args.quiet:  # after the overrides: `progress=true --quiet` is not a key given twice
            cfg.progress = False
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from attacks import AttackError
    from data import DatasetError
    from models.trainer import NonFiniteLossError
    from experiment.pipeline import run_experiment
    from experiment.results_folder import ResultsFolderError

    try:
        out = run_experiment(cfg, argv)
    except ConfigError as exc:  # found once the datasets are known (e.g. K above the items)
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (DatasetError, AttackError, NonFiniteLossError, ResultsFolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(f"results: {out}/ (tables: {out / 'tables.md'})")
    if (out / "failed.csv").is_file():
        print(f"error: some cells failed, listed in {out / 'failed.csv'}; the others are "
              "saved: fix the cause and rerun the same command to run only those",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
