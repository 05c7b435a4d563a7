"""The protocol-deviation table of issue 16: which of the authors' choices moves which number.

Reads the results folders of ``configs/tcd_protocol_deviation.yaml`` (our protocol, with the
ε and Π sweeps beside ours; one folder per whole-run switch: test item, selection set,
optimizer) and, when present, the ML-100K cells of ``configs/tcd_paper_protocol.yaml`` (all
five switches), and prints one row per protocol:

- Origin test HR@K — the clean model's test hit ratio;
- attack target HR — the undefended target HR@K over all real users × targets (the authors'
  count, ``target_hr_all@K``), averaged over the folder's attacks;
- AT, RAT and TCD target HR, averaged the same way, and TCD's test HR@K;

each for random and unpopular targets, as the mean over the folder's seeds (± the standard
deviation over seeds when there are two or more), and the difference from the "ours" row.

A row is ``label=folder`` or ``label=folder:key=value,...``: the filter keeps the defended
cells whose ``defense_params`` agree with every listed option they carry (so
``eps=0.05,projection=clip`` picks the ε-0.05 AT/RAT cells and the clipped TCD cells of a
folder that swept both). Without rows, the preset's five folders under ``results/``.

    python benchmarks/protocol_deviation.py [--k 50] [--dataset ml-100k] [--repeats 0,1]
        [label=folder[:filter] ...]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

import common  # noqa: F401 - puts the repository on sys.path
from experiment.reporting import read_runs, runs_frame

DEFAULT_ROWS = (
    "ours=results/tcd_protocol_deviation:eps=0.03,projection=clip",
    "test item any=results/tcd_protocol_deviation_test_item",
    "select on test=results/tcd_protocol_deviation_select_on",
    "Adadelta + L2 1e-4=results/tcd_protocol_deviation_optimizer",
    "Π round=results/tcd_protocol_deviation:eps=0.03,projection=round",
    "AT/RAT ε 0.05=results/tcd_protocol_deviation:eps=0.05,projection=clip",
    "all five (authors')=results/tcd_paper_protocol",
)
KINDS = ("random", "unpopular")


def read_cells(folder: Path) -> pd.DataFrame:
    """runs.csv of a finished folder, else the cells finished so far (cells/*.json)."""
    runs_csv = folder / "runs.csv"
    if runs_csv.is_file():
        return read_runs(runs_csv)
    records = [json.loads(p.read_text()) for p in sorted((folder / "cells").glob("*.json"))]
    if not records:
        raise SystemExit(f"{folder}: no runs.csv and no finished cells; run the preset first")
    return runs_frame(records)


def parse_row(text: str) -> tuple[str, Path, dict]:
    label, sep, rest = text.partition("=")
    if not sep or not rest:
        raise SystemExit(f"row '{text}': write label=folder or label=folder:key=value,...")
    folder, _, spec = rest.partition(":")
    options = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"row '{text}': filter '{item}' is not key=value")
        options[key.strip()] = value.strip()
    return label, Path(folder), options


def keep(params: str, options: dict) -> bool:
    """Whether a cell's ``defense_params`` ("eps=0.05 projection=round") agrees with every
    filter option it carries; options the cell does not carry do not exclude it."""
    carried = dict(p.split("=", 1) for p in str(params).split() if "=" in p)
    return all(carried[k] == v for k, v in options.items() if k in carried)


def summarize(cells: pd.DataFrame, options: dict, k: int) -> dict:
    """(kind, column) → (mean, std or nan, seeds) for the row's columns."""
    target, test = f"target_hr_all@{k}", f"hr@{k}"
    missing = [m for m in (target, test) if m not in cells]
    if missing:
        raise SystemExit(f"no column {', '.join(missing)} in the cells; pass the run's --k")
    cells = cells[[keep(p, options) for p in cells["defense_params"]]]
    out = {}
    for kind in KINDS:
        of_kind = cells[cells["target_kind"] == kind]
        clean = of_kind[of_kind["attack"] == "none"]
        attacked = of_kind[of_kind["attack"] != "none"]
        picks = {"origin test HR": (clean[clean["defense"] == "none"], test)}
        for defense, label in (("none", "attack"), ("at", "AT"), ("rat", "RAT"),
                               ("tcd", "TCD")):
            picks[label] = (attacked[attacked["defense"] == defense], target)
        picks["TCD test HR"] = (attacked[attacked["defense"] == "tcd"], test)
        for label, (subset, metric) in picks.items():
            if subset.empty:
                continue
            # Per seed, the mean over attacks; then mean and spread over seeds.
            per_seed = subset.groupby("repeat")[metric].mean()
            std = per_seed.std(ddof=1) if len(per_seed) > 1 else math.nan
            out[(kind, label)] = (per_seed.mean(), std, len(per_seed))
    return out


COLUMNS = ("origin test HR", "attack", "AT", "RAT", "TCD", "TCD test HR")


def render(rows: list[tuple[str, dict]], k: int) -> str:
    lines = []
    base = rows[0][1] if rows else {}
    for kind in KINDS:
        lines += [f"#### {kind} targets (HR@{k}; target HR over all real users × targets, "
                  "mean over attacks; Δ against the first row)", "",
                  "| protocol | seeds | " + " | ".join(COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]
        for label, values in rows:
            seeds = max((v[2] for (kd, _), v in values.items() if kd == kind), default=0)
            cells = []
            for column in COLUMNS:
                value = values.get((kind, column))
                if value is None:
                    cells.append("—")
                    continue
                mean, std, _ = value
                text = f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")
                ref = base.get((kind, column))
                if values is not base and ref is not None:
                    text += f" ({mean - ref[0]:+.3f})"
                cells.append(text)
            lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", default=list(DEFAULT_ROWS),
                        help="label=folder[:key=value,...]; the first row is the baseline")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeats", default=None,
                        help="only these repeats, comma-separated (e.g. 0), so that rows "
                             "compare the same seeds")
    args = parser.parse_args()
    rows, cache = [], {}
    for text in args.rows:
        label, folder, options = parse_row(text)
        if not folder.is_dir():
            print(f"{folder}: not found; row '{label}' left out")
            continue
        if folder not in cache:
            cells = read_cells(folder)
            cells = cells[cells["dataset"] == args.dataset]
            if args.repeats is not None:
                wanted = [int(r) for r in args.repeats.split(",")]
                cells = cells[cells["repeat"].astype(int).isin(wanted)]
            cache[folder] = cells
        if cache[folder].empty:
            print(f"{folder}: no {args.dataset} cells; row '{label}' left out")
            continue
        rows.append((label, summarize(cache[folder], options, args.k)))
    print(render(rows, args.k))


if __name__ == "__main__":
    main()
