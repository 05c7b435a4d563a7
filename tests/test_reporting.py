"""Statistics, tables and figures from known runs (protocol.md §4–5, experiments.md §3): RI,
success reduction, paired t-tests against the best of AT and RAT, the TCD table layouts in
Markdown and LaTeX, the figures, and the rebuild from runs.csv."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import REPO
from experiment import reporting
from utils.atomic import atomic_save_npz
from utils.statistics import paired_p_value, robustness_improvement, stars

K = 50
TARGET = f"target_hr@{K}"
# Mean target HR@50 per (target kind, defense): Origin 0.01, undefended 0.11.
LEVELS = {"none": 0.11, "at": 0.09, "rat": 0.10, "tcd": 0.02}
NOISE = np.array([0.004, -0.002, 0.001, -0.003, 0.0])   # per seed, shared by all defenses


def row(kind, attack, defense, repeat, hr, cost=0.4, **extra):
    return {"experiment": "e", "cell": f"{kind}-{attack}-{cost}-{defense}-{repeat}",
            "dataset": "ml-100k", "model": "mf", "feedback": "explicit", "target_kind": kind,
            "targets": "1 2", "attack": attack, "attack_size": 0.0 if attack == "none" else 0.03,
            "knowledge_cost": 0.0 if attack == "none" else cost, "attack_params": "",
            "defense": defense, "defense_params": "", "repeat": repeat, "seed": repeat,
            "n_fake": 0, "filler_size": 0, TARGET: hr, f"hr@{K}": 0.2 + hr / 10,
            "prediction_shift": hr, "best_epoch": 10, "defense_info": "{}",
            "seconds_train": 1.0, **extra}


def known_runs(costs=(0.4,)) -> pd.DataFrame:
    rows = []
    for kind in ("random", "unpopular"):
        for rep in range(5):
            rows.append(row(kind, "none", "none", rep, 0.01 + NOISE[rep] / 4))
            for cost in costs:
                for defense, level in LEVELS.items():
                    jitter = 0.0005 * ((rep * 7 + len(defense)) % 3) if defense != "none" else 0
                    rows.append(row(kind, "random", defense, rep,
                                    level * cost / 0.4 + NOISE[rep] + jitter, cost))
    return reporting.add_relative_metrics(reporting.runs_frame(rows), K)


def test_statistics_primitives():
    assert robustness_improvement(0.02, 0.11, 0.01) == pytest.approx(0.9)
    assert np.isnan(robustness_improvement(0.02, 0.01 + 5e-5, 0.01))   # attack gained nothing
    a, b = np.array([0.1, 0.2, 0.25, 0.3]), np.array([0.12, 0.26, 0.27, 0.38])
    assert paired_p_value(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert np.isnan(paired_p_value(a[:1], b[:1]))
    assert [stars(p) for p in (0.2, 0.04, 0.009, 0.0009, float("nan"))] == [
        "", "*", "**", "***", ""]


def test_summary_ri_and_significance_against_the_best_of_at_and_rat():
    runs = known_runs()
    tcd = runs[runs.defense == "tcd"]
    expected = 1 - (tcd[TARGET].to_numpy() - runs[runs.attack == "none"][TARGET].to_numpy()) / (
        runs[(runs.attack != "none") & (runs.defense == "none")][TARGET].to_numpy()
        - runs[runs.attack == "none"][TARGET].to_numpy())
    assert tcd.ri.to_numpy() == pytest.approx(expected)
    summary = reporting.summarize(runs, K).set_index(["target_kind", "defense"])
    s = summary.loc[("random", "tcd")]
    assert s[f"{TARGET}_n"] == 5 and s["n_runs"] == 5
    assert s["ri_of_means"] == pytest.approx(1 - (s[f"{TARGET}_mean"] - summary.loc[
        ("random", "none")].query("attack == 'none'")[f"{TARGET}_mean"].iloc[0]) / (
        0.11 + NOISE.mean() - summary.loc[("random", "none")].query("attack == 'none'")[
            f"{TARGET}_mean"].iloc[0]))
    # Best baseline on target HR is AT (lower); TCD is tested against it, paired by seed.
    assert s[f"baseline_{TARGET}"] == "at"
    at = runs[(runs.defense == "at") & (runs.target_kind == "random")][TARGET].to_numpy()
    mine = runs[(runs.defense == "tcd") & (runs.target_kind == "random")][TARGET].to_numpy()
    assert s[f"p_{TARGET}"] == pytest.approx(stats.ttest_rel(mine, at).pvalue)
    assert s[f"stars_{TARGET}"] == "***"
    # RAT is worse than AT: it gets a p-value but no star; AT is the baseline itself.
    assert summary.loc[("random", "rat"), f"stars_{TARGET}"] in ("", np.nan)
    assert summary.loc[("random", "at"), f"baseline_{TARGET}"] in ("", np.nan)
    # Without AT and RAT, the comparison is against the undefended model.
    alone = reporting.summarize(runs[~runs.defense.isin(["at", "rat"])], K)
    alone = alone.set_index(["target_kind", "defense"])
    assert alone.loc[("random", "tcd"), f"baseline_{TARGET}"] == "none"


def test_tables_follow_the_paper_layout_in_markdown_and_latex():
    runs = known_runs(costs=(0.2, 0.4, 1.0))
    failed = pd.DataFrame([{**{c: v for c, v in row("random", "random", "share", 0, 0,
                                                          0.4).items()
                               if c in reporting.FAILED_COLUMNS},
                            "error": "NonFiniteLossError: non-finite training loss"}],
                          columns=reporting.FAILED_COLUMNS)
    summary = reporting.summarize(runs, K, failed)
    tables = reporting.build_tables(summary, K)
    titles = [t.title for t in tables]
    assert titles[0].startswith("Table 2") and any(t.startswith("Table 3 · Target") for t in
                                                   titles)
    assert any(t.startswith("Table 4") for t in titles)
    table2 = tables[0]
    assert table2.columns == ["Origin", "c=0.2", "c=0.4", "c=1"]
    assert table2.groups == ["random", "unpopular"]
    table3 = next(t for t in tables if t.title.startswith("Table 3 · Target"))
    # Origin, Attack, then the defenses in the paper's order, extra ones after.
    assert table3.columns == ["Origin", "Attack", "AT", "RAT", "TCD", "SHARE"]
    md = reporting.render_markdown("e", tables, failed, 5)
    assert "| Dataset | Attack | Cost | random: Origin | random: Attack | random: AT |" in md
    tcd_mean = summary[(summary.defense == "tcd") & (summary.target_kind == "random")
                       & (summary.knowledge_cost == 0.4)][f"{TARGET}_mean"].iloc[0]
    assert f"{tcd_mean:.4f} ± " in md and "***" in md
    assert "## Failed cells" in md and "| failed |" in md
    tex = reporting.render_latex("e", tables, failed, 5)
    assert tex.count("\\begin{tabular}") == len(tables)
    assert "\\multicolumn{6}{c}{random}" in tex and "$^{***}$" in tex and "$\\pm$" in tex
    assert "% ml-100k mf seed 0 random random (0.03, c=0.4) share: NonFiniteLossError" in tex
    ri = next(t for t in tables if "RI" in t.title)
    mean_row = next(r for r in ri.rows if r[1] == "mean")
    assert mean_row[2 + 2].mean == pytest.approx(np.mean([
        r[2 + 2].mean for r in ri.rows if r[1] != "mean"]))


def test_rebuild_from_runs_csv_reproduces_tables_and_draws_figures(tmp_path):
    out = tmp_path / "e"
    runs = known_runs(costs=(0.2, 0.4, 1.0))
    rng = np.random.default_rng(0)
    for cell, attack in zip(runs.cell, runs.attack):
        if attack != "none":
            atomic_save_npz(out / "cells" / f"{cell}.npz",
                            rank_shift=rng.integers(-50, 500, 200).astype(np.int32))
    text = reporting.csv_text(reporting.order_columns(runs))
    (out / "runs.csv").write_text(text)
    (out / "config.yaml").write_text("experiment: e\nevaluation:\n  k: 50\n")
    paths = reporting.report(out, reporting.read_runs(io.StringIO(text)), None, K, "e")
    names = sorted(p.name for p in paths)
    assert names == ["attack_hr_vs_knowledge_cost_ml-100k.png", "rank_shift_ml-100k.png",
                     "ri_vs_knowledge_cost_ml-100k.png", "target_hr_bars_ml-100k.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    first = {name: (out / name).read_bytes() for name in ("summary.csv", "tables.md",
                                                          "tables.tex")}
    (out / "figures" / "stale.png").write_bytes(b"old")
    for name in first:
        (out / name).unlink()
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--rebuild", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {name: (out / name).read_bytes() for name in first} == first
    assert sorted(p.name for p in (out / "figures").iterdir()) == names
    bad = subprocess.run([sys.executable, "-m", "experiment.reporting", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "runs.csv not found" in bad.stderr


def test_pseudo_rate_sweep_draws_target_hr_vs_rate(tmp_path):
    rows = []
    for kind in ("random", "unpopular"):
        rows.append(row(kind, "none", "none", 0, 0.01))
        rows.append(row(kind, "random", "none", 0, 0.11))
        for rate in (0.2, 0.6, 1.0):
            rows.append(row(kind, "random", "tcd", 0, 0.11 - 0.08 * rate,
                            defense_params=f"pseudo_rate={rate}"))
    runs = reporting.add_relative_metrics(reporting.runs_frame(rows), K)
    paths = reporting.report(tmp_path, runs, None, K, "sweep")
    assert "target_hr_vs_tcd_pseudo_rate_ml-100k.png" in [p.name for p in paths]
    md = (tmp_path / "tables.md").read_text()
    assert "random: TCD (pseudo_rate=0.2)" in md and "random: TCD (pseudo_rate=1.0)" in md


def test_tables_say_when_models_were_selected_on_the_test_set(tmp_path):
    runs = known_runs()
    plain = tmp_path / "plain"
    reporting.report(plain, runs, None, K, "e")
    assert "TEST SET" not in (plain / "tables.md").read_text()
    runs.loc[runs.defense == "tcd", "defense_info"] = '{"selected_on": "test"}'
    marked = tmp_path / "marked"
    reporting.report(marked, runs, None, K, "e")
    assert (marked / "tables.md").read_text().startswith(
        "# e — MODEL SELECTION ON THE TEST SET")
    assert "MODEL SELECTION ON THE TEST SET" in (marked / "tables.tex").read_text()
