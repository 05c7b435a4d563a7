"""Result files of an experiment (experiments.md §3), all written atomically:
``runs.csv`` (one row per cell and seed), ``summary.csv`` (mean, std, n per cell, RI and
attack-success reduction), ``tables.md`` (paper layout: rows attacks, columns Origin, Attack and
each defense), the resolved ``config.yaml`` and ``meta.json``."""
from __future__ import annotations

import io
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from utils.atomic import atomic_write_text
from utils.config import ExperimentConfig, dump_yaml
from utils.statistics import mean_std_n, robustness_improvement, success_reduction

COORDS = ["dataset", "model", "feedback", "target_kind", "attack", "attack_size",
          "knowledge_cost", "defense"]
FLOAT_FORMAT = "%.8g"


def metric_columns(frame: pd.DataFrame) -> list[str]:
    skip = set(COORDS) | {"experiment", "targets", "repeat", "seed", "defense_info", "n_fake",
                          "filler_size"}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
            and not c.startswith("seconds_")]


def add_relative_metrics(runs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per seed: RI and attack-success reduction against the same seed's Origin and Attack."""
    runs = runs.copy()
    col = f"target_hr@{k}"
    base = ["dataset", "model", "feedback", "target_kind", "repeat"]
    origin = runs[runs.attack == "none"].set_index(base)[col].rename("_origin")
    attack_cols = base + ["attack", "attack_size", "knowledge_cost"]
    undefended = runs[(runs.attack != "none") & (runs.defense == "none")]
    undefended = undefended.set_index(attack_cols)[col].rename("_attack")
    runs = runs.join(origin, on=base).join(undefended, on=attack_cols)
    runs["ri"] = [robustness_improvement(d, a, o) if atk != "none" else np.nan
                  for d, a, o, atk in zip(runs[col], runs["_attack"], runs["_origin"],
                                          runs["attack"])]
    runs["success_reduction"] = [success_reduction(d, a) if atk != "none" else np.nan
                                 for d, a, atk in zip(runs[col], runs["_attack"], runs["attack"])]
    return runs.drop(columns=["_origin", "_attack"])


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    metrics = metric_columns(runs)
    out = []
    for key, group in runs.groupby(COORDS, sort=False, dropna=False):
        row = dict(zip(COORDS, key))
        for m in metrics:
            mean, std, n = mean_std_n(group[m])
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = mean, std, n
        out.append(row)
    return pd.DataFrame(out)


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or np.isnan(mean):
        return ""
    return f"{mean:.4f} ± {std:.4f}" if n > 1 and not np.isnan(std) else f"{mean:.4f}"


def tables_markdown(summary: pd.DataFrame, k: int) -> str:
    """Per dataset and metric: rows attacks, column groups target kinds, columns Origin,
    Attack (no defense) and each defense."""
    lines = []
    metrics = [(f"target_hr@{k}", f"Target HR@{k}"), (f"hr@{k}", f"Test HR@{k}"),
               ("prediction_shift", "Prediction shift")]
    defenses = [d for d in summary.defense.unique() if d != "none"]
    for (dataset, model), block in summary.groupby(["dataset", "model"], sort=False):
        kinds = list(block.target_kind.unique())
        attacks = [a for a in block.attack.unique() if a != "none"]
        settings = block[block.attack != "none"][["attack_size", "knowledge_cost"]]
        settings = settings.drop_duplicates().itertuples(index=False)
        settings = list(settings)
        for metric, title in metrics:
            lines.append(f"## {dataset} · {model} · {title}\n")
            header = ["Attack"]
            for kind in kinds:
                header += [f"{kind}: Origin", f"{kind}: Attack"] + [f"{kind}: {d}" for d in
                                                                  defenses]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            for attack in attacks:
                for size, cost in settings:
                    label = attack if len(settings) == 1 else f"{attack} ({size:g}, c={cost:g})"
                    cells = [label]
                    for kind in kinds:
                        sel = block[block.target_kind == kind]
                        origin = sel[sel.attack == "none"]
                        cells.append(_cell(origin, metric))
                        for defense in ["none"] + defenses:
                            hit = sel[(sel.attack == attack) & (sel.defense == defense) &
                                      (sel.attack_size == size) & (sel.knowledge_cost == cost)]
                            cells.append(_cell(hit, metric))
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _cell(rows: pd.DataFrame, metric: str) -> str:
    if rows.empty or f"{metric}_mean" not in rows:
        return ""
    r = rows.iloc[0]
    return fmt(r[f"{metric}_mean"], r[f"{metric}_std"], int(r[f"{metric}_n"]))


def csv_text(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return buf.getvalue()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_all(out: Path, cfg: ExperimentConfig, rows: list[dict], stage_seconds: dict,
              wall: float, argv, seeds: list[int]) -> None:
    import torch

    k = cfg.evaluation.k
    runs = pd.DataFrame(rows)
    runs = add_relative_metrics(runs, k)
    timing = [c for c in runs.columns if c.startswith("seconds_")]
    runs = runs[[c for c in runs.columns if c not in timing] + timing]
    summary = summarize(runs)
    atomic_write_text(out / "runs.csv", csv_text(runs))
    atomic_write_text(out / "summary.csv", csv_text(summary))
    atomic_write_text(out / "tables.md", f"# {cfg.experiment}\n\n" + tables_markdown(summary, k))
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    meta = {
        "experiment": cfg.experiment, "argv": list(argv or sys.argv),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "pandas": pd.__version__, "git_commit": git_commit(),
        "machine": f"{platform.machine()} {platform.system()}",
        "cpu_threads": torch.get_num_threads(), "master_seed": cfg.seed,
        "repeat_seeds": seeds, "cells": len(rows), "wall_seconds": round(wall, 3),
        "stage_seconds": {k_: round(v, 3) for k_, v in stage_seconds.items()},
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
