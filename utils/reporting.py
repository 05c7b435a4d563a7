"""Result files of an experiment (experiments.md §3), all written atomically:

- ``runs.csv``: one row per cell and seed — every coordinate, every metric, RI and attack-success
  reduction against the same seed's Origin and undefended cells, timings last;
- ``failed.csv``: the cells that failed (non-finite loss, out of memory) with their error;
- ``summary.csv``: one row per cell over seeds — mean, std (ddof 1), n of each metric, RI and
  success reduction of the means, and paired t-test p-values with stars of the target HR@K and
  test HR@K against the best of AT and RAT in the same attack setting (the undefended model
  where neither ran), plus ``n_failed`` and the errors of failed seeds;
- ``tables.md`` / ``tables.tex``: the TCD paper's layouts (rows dataset × attack, column groups
  per target kind): Table 2 (attack target HR@K vs knowledge cost, when several costs ran),
  Table 3 (target HR@K: Origin, Attack, then every defense that ran), its RI and
  success-reduction companions, Table 4 (test HR@K), the prediction shift, target HR vs attack
  size (when several sizes ran), the worst case over attacks per defense, the detection
  quality of defenses that distrust rows or users, and the failed cells (``utils/tables.py``);
- ``figures/*.png`` (``utils/figures.py``), the resolved ``config.yaml`` and ``meta.json``.

``python -m utils.reporting results/<exp>`` (or ``python main.py --rebuild results/<exp>``)
rebuilds summary, tables and figures from ``runs.csv`` without retraining; ``write_all`` goes
through the same path, so a rebuild reproduces them byte for byte.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from utils.atomic import atomic_write_text
from utils.config import ExperimentConfig, dump_yaml
from utils.statistics import (mean_std_n, paired_p_value, robustness_improvement, stars,
                              success_reduction)
from utils.tables import (BASE, COORDS, ORIGIN, SETTING, UNDEFENDED, Table, Value, attack_label,
                          build_tables)

log = logging.getLogger(__name__)

ID_COLUMNS = ["experiment", "cell", "dataset", "model", "feedback", "target_kind", "targets",
              "attack", "attack_size", "knowledge_cost", "attack_params", "defense",
              "defense_params", "repeat", "seed", "n_fake", "filler_size"]
TEXT_COLUMNS = ["experiment", "cell", "dataset", "model", "feedback", "target_kind", "targets",
                "attack", "attack_params", "defense", "defense_params", "defense_info", "error"]
FAILED_COLUMNS = COORDS + ["repeat", "cell", "error"]
METRIC_ORDER = ["hr@", "ndcg@", "test_mse", "test_rmse", "target_hr@", "target_hr_all@",
                "avg_target_rank", "target_score", "prediction_shift", "ri",
                "success_reduction", "detect_", "best_epoch", "defense_info"]
BASELINES = ("at", "rat")   # "the best baseline" of the TCD tables
FLOAT_FORMAT = "%.8g"


# ----------------------------------------------------------------------------- runs

def _metric_rank(column: str) -> tuple:
    for n, prefix in enumerate(METRIC_ORDER):
        if column == prefix or (prefix.endswith("@") and column.startswith(prefix)):
            return (n, column)
    return (len(METRIC_ORDER), column)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Identity columns, then metrics in a fixed order, then timings: the same column order
    whatever order the rows were computed or read in."""
    ids = [c for c in ID_COLUMNS if c in frame]
    timing = sorted(c for c in frame if c.startswith("seconds_"))
    rest = sorted((c for c in frame if c not in ids and c not in timing), key=_metric_rank)
    return frame[ids + rest + timing]


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in ("attack_params", "defense_params"):
        frame[col] = frame[col].fillna("") if col in frame else ""
    return frame


def read_runs(source) -> pd.DataFrame:
    """``runs.csv`` (or ``failed.csv``) back as a frame with its text columns as text."""
    frame = pd.read_csv(source, dtype={c: str for c in TEXT_COLUMNS})
    for col in ("attack_params", "defense_params"):  # absent from files of older versions
        frame[col] = frame[col].fillna("") if col in frame else ""
    if "model" not in frame:
        frame["model"] = "mf"
    return frame


def metric_columns(frame: pd.DataFrame) -> list[str]:
    skip = set(ID_COLUMNS) | {"defense_info", "error"}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
            and not c.startswith("seconds_")]


def add_relative_metrics(runs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per seed: RI and attack-success reduction against the same seed's Origin and
    undefended cells (blank on clean-data rows)."""
    runs = runs.drop(columns=["ri", "success_reduction"], errors="ignore").copy()
    col = f"target_hr@{k}"
    key = ["repeat"]
    origin = runs[(runs.attack == ORIGIN) & (runs.defense == UNDEFENDED)]
    origin = origin.set_index(BASE + key)[col].rename("_origin")
    undefended = runs[runs.defense == UNDEFENDED].set_index(SETTING + key)[col].rename("_attack")
    joined = runs.join(origin, on=BASE + key).join(undefended, on=SETTING + key)
    attacked = (joined.attack != ORIGIN).to_numpy()
    runs["ri"] = [robustness_improvement(d, a, o) if hit else np.nan for d, a, o, hit in
                  zip(joined[col], joined["_attack"], joined["_origin"], attacked)]
    runs["success_reduction"] = [success_reduction(d, a) if hit else np.nan for d, a, hit in
                                 zip(joined[col], joined["_attack"], attacked)]
    return runs


# ----------------------------------------------------------------------------- summary

def _key(values) -> tuple:
    return tuple(values)


def summarize(runs: pd.DataFrame, k: int, failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell over seeds (see the module docstring)."""
    metrics = metric_columns(runs)
    groups = {_key(key): group for key, group in runs.groupby(COORDS, sort=False, dropna=False)}
    rows = []
    for key, group in groups.items():
        row = dict(zip(COORDS, key))
        row["n_runs"] = len(group)
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = mean_std_n(group[m])
        rows.append(row)
    if failed is not None and len(failed):
        for key, group in failed.groupby(COORDS, sort=False, dropna=False):
            key = _key(key)
            if key not in groups:
                rows.append({**dict(zip(COORDS, key)), "n_runs": 0})
    summary = pd.DataFrame(rows, columns=None if rows else COORDS + ["n_runs"])
    if summary.empty:
        return summary
    _add_failures(summary, failed)
    _add_relative_of_means(summary, k)
    for metric, lower_is_better in ((f"target_hr@{k}", True), (f"hr@{k}", False)):
        if metric in runs:
            _add_significance(summary, groups, metric, lower_is_better)
    return summary


def _add_failures(summary: pd.DataFrame, failed: pd.DataFrame | None) -> None:
    counts, errors = {}, {}
    if failed is not None and len(failed):
        for key, group in failed.groupby(COORDS, sort=False, dropna=False):
            counts[_key(key)] = len(group)
            errors[_key(key)] = " | ".join(dict.fromkeys(group["error"].astype(str)))
    keys = [_key(r) for r in summary[COORDS].itertuples(index=False)]
    summary["n_failed"] = [counts.get(key, 0) for key in keys]
    summary["errors"] = [errors.get(key, "") for key in keys]


def _add_relative_of_means(summary: pd.DataFrame, k: int) -> None:
    """RI and success reduction computed from the mean target HRs (what the tables show)."""
    col = f"target_hr@{k}_mean"
    ri, sr = [], []
    if col in summary:
        records = summary.to_dict("records")
        origin = {tuple(r[c] for c in BASE): r[col] for r in records
                  if r["attack"] == ORIGIN and r["defense"] == UNDEFENDED}
        undefended = {tuple(r[c] for c in SETTING): r[col] for r in records
                      if r["defense"] == UNDEFENDED}
        for r in records:
            attacked = r["attack"] != ORIGIN
            o = origin.get(tuple(r[c] for c in BASE), np.nan)
            a = undefended.get(tuple(r[c] for c in SETTING), np.nan)
            ri.append(robustness_improvement(r[col], a, o) if attacked else np.nan)
            sr.append(success_reduction(r[col], a) if attacked else np.nan)
    else:
        ri = sr = [np.nan] * len(summary)
    summary["ri_of_means"] = ri
    summary["success_reduction_of_means"] = sr


def _add_significance(summary: pd.DataFrame, groups: dict, metric: str,
                      lower_is_better: bool) -> None:
    """p-value of each defended cell against the best of AT and RAT in its attack setting
    (by mean; the undefended cell when neither ran), paired over seeds; stars mark
    significant improvements only."""
    mean = f"{metric}_mean"
    by_setting: dict[tuple, list[dict]] = {}
    records = summary.to_dict("records")
    for rec in records:
        by_setting.setdefault(tuple(rec[c] for c in SETTING), []).append(rec)
    names, pvalues, marks = [], [], []
    for rec in records:
        base = None
        if rec["defense"] != UNDEFENDED and mean in rec:
            peers = by_setting[tuple(rec[c] for c in SETTING)]
            candidates = [p for p in peers if p["defense"] in BASELINES
                          and not math.isnan(p.get(mean, np.nan))]
            if candidates:
                pick = min if lower_is_better else max
                base = pick(candidates, key=lambda p: p[mean])
            else:
                base = next((p for p in peers if p["defense"] == UNDEFENDED), None)
        if base is None or base is rec:
            names.append("")
            pvalues.append(np.nan)
            marks.append("")
            continue
        mine = groups.get(tuple(rec[c] for c in COORDS))
        theirs = groups.get(tuple(base[c] for c in COORDS))
        p = np.nan
        if mine is not None and theirs is not None:
            a = mine.set_index("repeat")[metric]
            b = theirs.set_index("repeat")[metric]
            common = a.index.intersection(b.index)
            p = paired_p_value(a.loc[common].to_numpy(), b.loc[common].to_numpy())
        better = (rec[mean] < base[mean]) if lower_is_better else (rec[mean] > base[mean])
        names.append(variant_name(base["defense"], base["defense_params"]))
        pvalues.append(p)
        marks.append(stars(p) if better else "")
    summary[f"baseline_{metric}"] = names
    summary[f"p_{metric}"] = pvalues
    summary[f"stars_{metric}"] = marks


def variant_name(defense: str, params: str) -> str:
    return defense + (f" ({params})" if params else "")


# ----------------------------------------------------------------------------- rendering

def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or np.isnan(mean):
        return ""
    return f"{mean:.4f} ± {std:.4f}" if n > 1 and not np.isnan(std) else f"{mean:.4f}"


def _text(value: Value | None, n_mode: int, latex: bool) -> str:
    if value is None:
        return ""
    if value.failed:
        return "failed"
    if value.percent:
        text = f"{100 * value.mean:.1f}%"
        return text.replace("%", r"\%") if latex else text
    if value.n > 1 and not math.isnan(value.std):
        text = (f"{value.mean:.4f} $\\pm$ {value.std:.4f}" if latex
                else f"{value.mean:.4f} ± {value.std:.4f}")
    else:
        text = f"{value.mean:.4f}"
    if value.stars:
        text += f"$^{{{value.stars}}}$" if latex else value.stars
    if value.n != n_mode and not value.derived:
        text += f" (n={value.n})"
    if value.note:
        text += f" ({latex_escape(value.note)})" if latex else f" ({value.note})"
    return text


NOTE = ("Mean ± std (ddof 1) over {n} seed{s} unless marked (n=…). Stars: paired t-test "
        "across seeds against the best of AT and RAT in the same attack setting (the undefended "
        "model where neither ran); only improvements are marked: * p < 0.05, ** p < 0.01, "
        "*** p < 0.001. RI = 1 − (HR_def − HR_origin) / (HR_attack − HR_origin) from the mean "
        "target HRs, blank when the attack gained ≤ 1e-4; success reduction = 1 − "
        "HR_def / HR_attack.")


def render_markdown(title: str, tables: list[Table], failed: pd.DataFrame | None,
                    n_mode: int) -> str:
    lines = [f"# {title}", "", NOTE.format(n=n_mode, s="" if n_mode == 1 else "s"), ""]
    for table in tables:
        header = table.label_columns + [f"{g}: {c}" for g in table.groups for c in table.columns]
        lines += [f"## {table.title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for row in table.rows:
            n_labels = len(table.label_columns)
            cells = row[:n_labels] + [_text(v, n_mode, False) for v in row[n_labels:]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if failed is not None and len(failed):
        lines += ["## Failed cells", "", "| Dataset | Model | Seed | Targets | Attack | "
                  "Defense | Error |", "|---|---|---|---|---|---|---|"]
        for rec in failed.to_dict("records"):
            lines.append(f"| {rec['dataset']} | {rec['model']} | {rec['repeat']} | "
                         f"{rec['target_kind']} | {_attack_label(rec)} | "
                         f"{variant_name(rec['defense'], rec['defense_params'])} | "
                         f"{str(rec['error']).replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def _attack_label(rec: dict) -> str:
    if rec["attack"] == ORIGIN:
        return "(no attack)"
    return (f"{attack_label(rec['attack'], rec.get('attack_params'))} "
            f"({rec['attack_size']:g}, c={rec['knowledge_cost']:g})")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "·": r"$\cdot$", "≤": r"$\leq$",
                  "−": "-", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(title: str, tables: list[Table], failed: pd.DataFrame | None,
                 n_mode: int) -> str:
    lines = [f"% {title}: tables generated by utils/reporting.py",
             "% requires \\usepackage{booktabs}",
             "% " + NOTE.format(n=n_mode, s="" if n_mode == 1 else "s"), ""]
    for table in tables:
        n_labels, width = len(table.label_columns), len(table.columns)
        spec = "l" * n_labels + ("@{\\quad}" + "c" * width) * len(table.groups)
        lines += ["\\begin{table}[t]", "\\centering", "\\small",
                  f"\\caption{{{latex_escape(table.title)}}}",
                  f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        group_cells = [""] * n_labels + [f"\\multicolumn{{{width}}}{{c}}{{{latex_escape(g)}}}"
                                         for g in table.groups]
        lines.append(" & ".join(group_cells) + " \\\\")
        rules = "".join(f"\\cmidrule(lr){{{n_labels + 1 + n * width}-{n_labels + (n + 1) * width}}}"
                        for n in range(len(table.groups)))
        lines.append(rules)
        header = table.label_columns + table.columns * len(table.groups)
        lines.append(" & ".join(latex_escape(h) for h in header) + " \\\\")
        lines.append("\\midrule")
        for n, row in enumerate(table.rows):
            if n in table.blocks and n > 0:
                lines.append("\\midrule")
            labels = [latex_escape(c) for c in row[:n_labels]]
            if n not in table.blocks:
                labels[0] = ""  # the dataset is named once per block
            cells = labels + [_text(v, n_mode, True) for v in row[n_labels:]]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    if failed is not None and len(failed):
        lines.append("% Failed cells:")
        for rec in failed.to_dict("records"):
            lines.append(f"% {rec['dataset']} {rec['model']} seed {rec['repeat']} "
                         f"{rec['target_kind']} {_attack_label(rec)} "
                         f"{variant_name(rec['defense'], rec['defense_params'])}: {rec['error']}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- files

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


def report(out: Path, runs: pd.DataFrame, failed: pd.DataFrame | None, k: int,
           title: str) -> list[Path]:
    """summary.csv, tables.md, tables.tex and figures/ from a runs frame (as read from
    runs.csv). Returns the figure paths."""
    from utils import figures

    summary = summarize(runs, k, failed)
    atomic_write_text(out / "summary.csv", csv_text(summary))
    tables = build_tables(summary, k)
    n_mode = int(summary["n_runs"].mode().iloc[0]) if len(summary) else 1
    atomic_write_text(out / "tables.md", render_markdown(title, tables, failed, n_mode))
    atomic_write_text(out / "tables.tex", render_latex(title, tables, failed, n_mode))
    return figures.write_figures(out / "figures", runs, summary, k, out / "cells")


def write_all(out: Path, cfg: ExperimentConfig, rows: list[dict], failed: list[dict],
              stage_seconds: dict, wall: float, argv, seeds: list[int],
              execution: dict | None = None) -> None:
    import torch

    k = cfg.evaluation.k
    out.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(rows) if rows else pd.DataFrame(columns=ID_COLUMNS)
    if rows:
        runs = add_relative_metrics(runs, k)
    text = csv_text(order_columns(runs))
    atomic_write_text(out / "runs.csv", text)
    failed_frame = pd.DataFrame(failed, columns=FAILED_COLUMNS)
    if failed:
        failed_text = csv_text(failed_frame)
        atomic_write_text(out / "failed.csv", failed_text)
        failed_frame = read_runs(io.StringIO(failed_text))
    else:
        (out / "failed.csv").unlink(missing_ok=True)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    # Reported from runs.csv as written, exactly as a rebuild will.
    figure_paths = report(out, read_runs(io.StringIO(text)), failed_frame, k, cfg.experiment)
    meta = {
        "experiment": cfg.experiment, "argv": list(sys.argv if argv is None else argv),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "pandas": pd.__version__, "git_commit": git_commit(),
        "machine": f"{platform.machine()} {platform.system()} {platform.node()}",
        "cpu_count": __import__("os").cpu_count(), "torch_threads_per_cell": cfg.threads,
        "master_seed": cfg.seed, "repeat_seeds": seeds, "cells": len(rows),
        "failed_cells": len(failed), "wall_seconds": round(wall, 3),
        "stage_seconds": {k_: round(v, 3) for k_, v in sorted(stage_seconds.items())},
        "execution": execution or {},
        "figures": [p.name for p in figure_paths],
    }
    from utils.config import as_list, for_dataset
    from utils.planning import dataset_file_digest
    if "file" in as_list(cfg.dataset.name):  # your own ratings file: which content ran
        path = for_dataset(cfg, "file").dataset.path
        meta["dataset_files"] = {path: dataset_file_digest(path)}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))


def _k_of(out: Path, runs: pd.DataFrame) -> tuple[int, str]:
    import yaml

    title, k = out.name, None
    path = out / "config.yaml"
    if path.is_file():
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        title = tree.get("experiment", title)
        k = (tree.get("evaluation") or {}).get("k")
    if k is None:
        found = [int(m.group(1)) for c in runs for m in [re.fullmatch(r"target_hr@(\d+)", c)]
                 if m]
        if not found:
            raise ValueError(f"{out / 'runs.csv'}: no target_hr@K column; is it a runs.csv?")
        k = found[0]
    return int(k), title


def rebuild(out: Path) -> list[Path]:
    """Rebuild summary.csv, tables.md, tables.tex and the figures from runs.csv (and
    failed.csv, and the rank shifts under cells/) without training anything."""
    out = Path(out)
    path = out / "runs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass a results/<experiment> folder of a "
                                "finished run")
    runs = read_runs(path)
    failed = read_runs(out / "failed.csv") if (out / "failed.csv").is_file() else None
    k, title = _k_of(out, runs)
    return report(out, runs, failed, k, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rebuild summary.csv, tables.md, tables.tex and figures from runs.csv")
    parser.add_argument("folder", help="results/<experiment>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = rebuild(Path(args.folder))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rebuilt: {Path(args.folder) / 'tables.md'}, {Path(args.folder) / 'tables.tex'}, "
          f"{len(paths)} figure{'s' if len(paths) != 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
