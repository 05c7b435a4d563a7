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
  quality of defenses that distrust rows or users, and the failed cells (``experiment/tables.py``);
- ``figures/*.png`` (``experiment/figures.py``), the resolved ``config.yaml`` and ``meta.json``.

``python -m experiment.reporting results/<exp>`` (or ``python main.py --rebuild results/<exp>``)
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
from utils.metrics import METRICS
from utils.statistics import robustness_improvement, success_reduction
from experiment.certification_report import certification_section
from experiment.summary import ID_COLUMNS, IntervalOptions, summarize, variant_name
from experiment.tables import (BASE, COORDS, ORIGIN, SETTING, UNDEFENDED, Table, Value,
                               attack_label, build_tables)

log = logging.getLogger(__name__)

TEXT_COLUMNS = ["experiment", "cell", "dataset", "model", "feedback", "target_kind", "targets",
                "attack", "attack_params", "defense", "defense_params", "defense_info", "error"]
FAILED_COLUMNS = COORDS + ["repeat", "cell", "error"]
# After the registered metrics, in registry order (metric_order), the columns the runner adds.
RUNNER_COLUMNS = ["prediction_shift", "ri", "success_reduction", "detect_", "best_epoch",
                  "defense_info"]
FLOAT_FORMAT = "%.8g"


# ----------------------------------------------------------------------------- runs

def metric_order() -> list[str]:
    """Column prefixes of runs.csv's metrics in order: the registered metrics (an @K metric's
    columns start with "name@"), then the runner's."""
    return ([f"{m.stem or m.name}@" if m.at_k else m.stem or m.name for m in METRICS.values()]
            + RUNNER_COLUMNS)


def _metric_rank(column: str, order: list[str]) -> tuple:
    for n, prefix in enumerate(order):
        if column == prefix or (prefix.endswith("@") and column.startswith(prefix)):
            return (n, column)
    return (len(order), column)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Identity columns, then metrics in a fixed order, then timings: the same column order
    whatever order the rows were computed or read in."""
    ids = [c for c in ID_COLUMNS if c in frame]
    timing = sorted(c for c in frame if c.startswith("seconds_"))
    order = metric_order()
    rest = sorted((c for c in frame if c not in ids and c not in timing),
                  key=lambda c: _metric_rank(c, order))
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
    if value.ineffective:
        text = "n.e." + ("$^{a}$" if latex else "ᵃ")
    elif value.percent:
        text = f"{100 * value.mean:.1f}%"
        text = text.replace("%", r"\%") if latex else text
    else:
        text = f"{value.mean:.4f}"
        if not (math.isnan(value.low) or math.isnan(value.high)):
            text += f" [{value.low:.4f}, {value.high:.4f}]"
        elif value.n > 1 and not math.isnan(value.std):
            text += f" $\\pm$ {value.std:.4f}" if latex else f" ± {value.std:.4f}"
    if value.stars:
        text += f"$^{{{value.stars}}}$" if latex else value.stars
    if value.mark:
        text += "$^{\\dagger}$" if latex else value.mark
    if value.suppressed:
        text += "$^{\\ddagger}$" if latex else "‡"
    if value.n != n_mode and not value.derived:
        text += f" (n={value.n})"
    if value.note:
        text += f" ({latex_escape(value.note)})" if latex else f" ({value.note})"
    return text


NOTE = ("Mean over {n} seed{s} unless marked (n=…) with its {level:g} % confidence interval "
        "[low, high]: a two-stage bootstrap ({bootstrap} replicates) over the seeds and, within "
        "each seed, the real users and the targets (± std over seeds where a cell has no "
        "per-user outcomes).")
STARS = ("Stars: paired t-test across seeds against the best of AT and RAT in the same attack "
         "setting (the undefended model where neither ran); only improvements are marked: "
         "* p < 0.05, ** p < 0.01, *** p < 0.001.")
DAGGER = ("†: differs from the undefended model of the same setting (paired t-test across "
          "seeds; with one seed a t-test over the users' paired outcomes), Holm-corrected over "
          "all defended cells of a dataset and target kind, at p < {alpha:g}.")
RATIOS = ("RI = 1 − (HR_def − HR_origin) / (HR_attack − HR_origin) and success reduction = "
          "1 − HR_def / HR_attack from the mean target HRs, each beside Δ, the defense's change "
          "of the target HR from the undefended model with its interval.")
DELTA = ("Utility: Δ is the defense's change from the undefended model of the same setting "
         "(Origin on clean data) with its interval; tail = the items outside the head, the "
         "most-rated items making up at most {head:g} % of the catalogue (meta.json \"tail\").")
DDAGGER = ("‡: the defense's clean-data tail share@K or coverage@K is below {floor:g} % of the "
           "undefended model's (report.tail_floor; summary.csv tail_suppressed): it has stopped "
           "recommending the long tail, or all but a few of its items, so its robustness on "
           "rarely rated targets is not creditable as robustness.")
UNJUDGED = ("No defense ran on clean data (add none to attack.name), so no robustness ratio can "
            "be checked for tail suppression (‡).")
NOT_EFFECTIVE = ("ᵃ n.e.: the attack was not effective there — its gain over Origin was below "
                 "{min_gain:g} or its interval included 0 — so no ratio is shown and the mean "
                 "rows leave it out (\"k of n\" says how many they kept).")


def _used(tables: list[Table]) -> dict:
    """Which symbols the tables use (the legend explains only those)."""
    values = [v for t in tables for row in t.rows for v in row if isinstance(v, Value)]
    return {"stars": any(v.stars for v in values), "dagger": any(v.mark for v in values),
            "ddagger": any(v.suppressed for v in values),
            "ne": any(v.ineffective for v in values),
            "ratios": any(t.title.startswith("Table 3 · RI") or "reduction" in t.title
                          or t.title.startswith("Worst case") for t in tables),
            "utility": any(t.title.startswith("Utility") for t in tables)}


def _note(n_mode: int, options: IntervalOptions, tables: list[Table] | None = None,
          head_share: float = 0.2, unjudged: bool = False) -> str:
    used = _used(tables or [])
    parts = [NOTE.format(n=n_mode, s="" if n_mode == 1 else "s", level=100 * options.level,
                         bootstrap=options.bootstrap)]
    if used["stars"]:
        parts.append(STARS)
    if used["dagger"]:
        parts.append(DAGGER.format(alpha=1 - options.level))
    if used["ratios"]:
        parts.append(RATIOS)
    if used["utility"]:
        parts.append(DELTA.format(head=100 * head_share))
    if used["ddagger"]:
        parts.append(DDAGGER.format(floor=100 * options.tail_floor))
    elif unjudged and used["ratios"]:
        parts.append(UNJUDGED)
    if used["ne"]:
        parts.append(NOT_EFFECTIVE.format(min_gain=options.min_gain))
    return " ".join(parts)


def setting_lines(runs: pd.DataFrame, labels: dict | None = None) -> list[str]:
    """What the tables cover, per dataset and model: the targets of each kind (the dataset's
    own item ids, per seed), the attack sizes (fake users), the filler size and the knowledge
    costs."""
    labels = labels or {}
    if runs.empty or "dataset" not in runs:
        return []
    lines = []
    for (dataset, model, feedback), group in runs.groupby(["dataset", "model", "feedback"],
                                                           sort=False):
        parts = []
        if "targets" in group:
            kinds = []
            for kind, by_kind in group.groupby("target_kind", sort=False):
                per_seed = by_kind.drop_duplicates("repeat").sort_values("repeat")
                lists = [_id_list(t) for t in per_seed["targets"]]
                if len(set(lists)) == 1:
                    kinds.append(f"{kind}: {lists[0]}")
                else:
                    kinds.append(f"{kind}: " + "; ".join(
                        f"seed {r}: {t}" for r, t in zip(per_seed["repeat"], lists)))
            parts.append("targets " + " · ".join(kinds))
        attacked = group[group.attack != ORIGIN]
        if len(attacked):
            sizes = []
            for size, by_size in attacked.groupby("attack_size", sort=False):
                fakes = sorted(set(by_size["n_fake"].dropna().astype(int))) \
                    if "n_fake" in by_size else []
                count = "/".join(map(str, fakes))
                sizes.append(f"{100 * size:g} % of the real users"
                             + (f" ({count} fake users)" if count else ""))
            parts.append("attack size " + ", ".join(sizes))
            if "filler_size" in attacked:
                fillers = sorted(set(attacked["filler_size"].dropna().astype(int)))
                if fillers:
                    parts.append("filler " + "/".join(map(str, fillers)) + " items")
            costs = sorted(set(attacked["knowledge_cost"].dropna()))
            parts.append("knowledge cost " + ", ".join(f"c = {c:g}" for c in costs))
        else:
            parts.append("clean data only (no attack)")
        lines.append(f"- **{labels.get(dataset, dataset)}** ({model}, {feedback}): "
                     + "; ".join(parts) + ".")
    return lines


def _id_list(text, limit: int = 12) -> str:
    ids = str(text).split() if isinstance(text, str) else []
    shown = " ".join(ids[:limit]) + (" …" if len(ids) > limit else "")
    return f"{len(ids)} item{'s' if len(ids) != 1 else ''} ({shown})" if ids else "none"


def render_markdown(title: str, tables: list[Table], failed: pd.DataFrame | None,
                    n_mode: int, options: IntervalOptions | None = None,
                    setting: list[str] | None = None, head_share: float = 0.2,
                    unjudged: bool = False, labels: dict | None = None) -> str:
    options = options or IntervalOptions()
    labels = labels or {}
    lines = [f"# {title}", ""]
    if setting:
        lines += ["What the tables cover:", "", *setting, ""]
    lines += [_note(n_mode, options, tables, head_share, unjudged), ""]
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
            lines.append(f"| {labels.get(rec['dataset'], rec['dataset'])} | {rec['model']} | "
                         f"{rec['repeat']} | "
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
                  "−": "-", "…": r"\ldots{}", "Δ": r"$\Delta$",
                  "†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(title: str, tables: list[Table], failed: pd.DataFrame | None,
                 n_mode: int, options: IntervalOptions | None = None,
                 setting: list[str] | None = None, head_share: float = 0.2,
                 unjudged: bool = False) -> str:
    options = options or IntervalOptions()
    lines = [f"% {title}: tables generated by experiment/reporting.py",
             "% requires \\usepackage{booktabs}",
             *(f"% {line}" for line in setting or []),
             "% " + _note(n_mode, options, tables, head_share, unjudged), ""]
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


def interval_options(cfg: ExperimentConfig, out: Path) -> IntervalOptions:
    return IntervalOptions(level=cfg.report.level, bootstrap=cfg.report.bootstrap,
                           min_gain=cfg.report.min_gain, seed=cfg.seed, cells_dir=out / "cells",
                           tail_floor=cfg.report.tail_floor, protocol=cfg.split.mode,
                           test_k=cfg.evaluation.test_k)


TEST_SELECTION = ("MODEL SELECTION ON THE TEST SET (evaluation.select_on: test, the TCD "
                  "authors' protocol): test metrics are biased upwards; for reproduction only")


def selected_on_test(runs: pd.DataFrame) -> bool:
    """Whether any cell kept its epoch by test MSE (``defense_info`` records it), read from
    runs.csv so that a rebuild marks the tables too."""
    info = runs["defense_info"] if "defense_info" in runs else pd.Series([], dtype=str)
    return bool(info.fillna("").astype(str).str.contains('"selected_on": "test"').any())


def report(out: Path, runs: pd.DataFrame, failed: pd.DataFrame | None, k: int,
           title: str, options: IntervalOptions | None = None) -> list[Path]:
    """summary.csv, tables.md, tables.tex and figures/ from a runs frame (as read from
    runs.csv) and the per-user outcomes under ``out/cells``. Returns the figure paths."""
    from experiment import figures

    if options is None:
        options = IntervalOptions(cells_dir=out / "cells")
    summary = summarize(runs, k, failed, options)
    atomic_write_text(out / "summary.csv", csv_text(summary))
    labels, head_share = _saved_labels(out)
    tables = build_tables(summary, k, alpha=1 - options.level, dataset_labels=labels,
                          protocol=options.protocol, test_k=options.test_k)
    n_mode = int(summary["n_runs"].mode().iloc[0]) if len(summary) else 1
    if selected_on_test(runs):
        title += f" — {TEST_SELECTION}"
    setting = setting_lines(runs, labels)
    defended = summary[summary.defense != UNDEFENDED] if "defense" in summary else summary
    unjudged = bool(len(defended)) and ("tail_suppressed" not in summary
                                        or defended["tail_suppressed"].isna().all())
    atomic_write_text(out / "tables.md", render_markdown(title, tables, failed, n_mode, options,
                                                         setting, head_share, unjudged, labels))
    atomic_write_text(out / "tables.tex", render_latex(title, tables, failed, n_mode, options,
                                                       setting, head_share, unjudged))
    paths = figures.write_figures(out / "figures", runs, summary, k, out / "cells",
                                  options.tail_floor)
    return paths + _append_certificate(out, runs, k)


def _append_certificate(out: Path, runs: pd.DataFrame, k: int) -> list[Path]:
    """A certified defense's section (PORE: certification tables, the bound beside the
    measured target HR, the figure of certified precision against e) at the end of
    tables.md; nothing when the grid has no certified cell."""
    section = certification_section(runs, k, out / "figures")
    if not section:
        return []
    text = (out / "tables.md").read_text(encoding="utf-8").rstrip("\n") + "\n\n" + section
    atomic_write_text(out / "tables.md", text)
    figure = out / "figures" / "certified_precision.png"
    return [figure] if figure.is_file() else []


def _saved_labels(out: Path) -> tuple[dict, float]:
    """From the run's config.yaml: the tables' names of datasets (``dataset=file`` by its
    file's name) and the head share of the tail metrics."""
    import yaml

    path = out / "config.yaml"
    tree = {}
    if path.is_file():
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            tree = {}
    dataset = tree.get("dataset") or {}
    labels = {"file": Path(dataset["path"]).name} if dataset.get("path") else {}
    tail = (tree.get("evaluation") or {}).get("tail") or {}
    return labels, float(tail.get("head_share", 0.2))


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
    figure_paths = report(out, read_runs(io.StringIO(text)), failed_frame, k, cfg.experiment,
                          interval_options(cfg, out))
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
    from experiment.planning import dataset_file_digest
    if "file" in as_list(cfg.dataset.name):  # your own ratings file: which content ran
        path = for_dataset(cfg, "file").dataset.path
        meta["dataset_files"] = {path: dataset_file_digest(path)}
    meta["model_selection"] = sorted({for_dataset(cfg, name).evaluation.select_on
                                      for name in as_list(cfg.dataset.name)})
    for name in as_list(cfg.dataset.name):   # fixed splits (dataset.split_files): their contents
        files = for_dataset(cfg, name).dataset.split_files
        if files.train:
            meta.setdefault("split_files", {})[name] = {
                path: dataset_file_digest(path) for path in (files.train, files.test)}
    meta["tail"] = tail_thresholds(cfg)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))


def tail_thresholds(cfg: ExperimentConfig) -> dict:
    """Per dataset: the head share asked for (``evaluation.tail.head_share``) and, per seed (the
    split decides the real users' training ratings), the head's popularity threshold (head =
    items with more training ratings than it), its items and the actual head share."""
    from utils.config import as_list, for_dataset
    from utils.metrics import split_head
    from experiment.workspace import Workspace

    found = {}
    for name in as_list(cfg.dataset.name):
        dcfg = for_dataset(cfg, name)
        ws = Workspace(dcfg)
        per_seed = []
        for repeat in range(cfg.repeats):
            split = ws.split(name, repeat)
            popularity = np.bincount(split.train.items, minlength=split.n_items)
            per_seed.append({"repeat": repeat, **split_head(
                popularity, dcfg.evaluation.tail.head_share).record()})
        found[name] = {"head_share_asked": dcfg.evaluation.tail.head_share,
                       "rule": "head = items with more real-user training ratings than "
                               "threshold; boundary ties go to the tail",
                       "per_seed": per_seed}
    return found


def _saved_settings(out: Path, runs: pd.DataFrame) -> tuple[int, str, IntervalOptions]:
    """K, the title and the interval options of a finished run, from its config.yaml."""
    import yaml

    title, k = out.name, None
    options = IntervalOptions(cells_dir=out / "cells")
    path = out / "config.yaml"
    if path.is_file():
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        title = tree.get("experiment", title)
        k = (tree.get("evaluation") or {}).get("k")
        saved = tree.get("report") or {}
        test_k = (tree.get("evaluation") or {}).get("test_k", options.test_k)
        options = IntervalOptions(level=float(saved.get("level", options.level)),
                                  bootstrap=int(saved.get("bootstrap", options.bootstrap)),
                                  min_gain=float(saved.get("min_gain", options.min_gain)),
                                  seed=int(tree.get("seed", 0)), cells_dir=out / "cells",
                                  tail_floor=float(saved.get("tail_floor", options.tail_floor)),
                                  protocol=str((tree.get("split") or {}).get("mode",
                                                                             options.protocol)),
                                  test_k=int(test_k))
    if k is None:
        found = [int(m.group(1)) for c in runs for m in [re.fullmatch(r"target_hr@(\d+)", c)]
                 if m]
        if not found:
            raise ValueError(f"{out / 'runs.csv'}: no target_hr@K column; is it a runs.csv?")
        k = found[0]
    return int(k), title, options


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
    k, title, options = _saved_settings(out, runs)
    return report(out, runs, failed, k, title, options)


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
