"""The certification table, the bound-vs-measured table and the figure from stored per-cell
values (experiment/certification_report.py)."""
from __future__ import annotations

import pandas as pd

from experiment.certification_report import (bound_vs_measured_tables, cert_columns,
                                             certification_section, certification_tables)


def runs_frame() -> pd.DataFrame:
    base = {"dataset": "ml-100k", "target_kind": "unpopular", "attack_params": None,
            "knowledge_cost": 0.4, "defense_params": None}
    rows = []
    for rep in (0, 1):
        clean = {**base, "attack": "none", "attack_size": 0.0, "defense": "pore", "repeat": rep,
                 "n_fake": 0, "target_hr@10": 0.0, "pore_cert_max_e@10": 3 + rep,
                 "pore_cert_max_e_top@10": 1}
        for e, p in ((0, 0.3), (1, 0.2), (28, 0.0)):
            clean[f"pore_cert_precision@10_e{e}"] = p + rep * 0.01
            clean[f"pore_cert_recall@10_e{e}"] = p / 2
            clean[f"pore_cert_target_hr@10_e{e}"] = min(1.0, 0.5 + e)
            clean[f"pore_cert_target_entry@10_e{e}"] = min(1.0, 0.1 + e)
        rows.append(clean)
        rows.append({**base, "attack": "random", "attack_size": 0.03, "defense": "pore",
                     "repeat": rep, "n_fake": 28, "target_hr@10": 0.01 * (rep + 1)})
        rows.append({**base, "attack": "random", "attack_size": 0.03, "defense": "none",
                     "repeat": rep, "n_fake": 28, "target_hr@10": 0.4})
    return pd.DataFrame(rows)


def test_tables_from_stored_values(tmp_path):
    runs = runs_frame()
    assert list(cert_columns(runs, 10)) == [0, 1, 28]
    (table,) = certification_tables(runs, 10)
    assert "| 0 | 0.3050 ± 0.0071 | 0.1500 ± 0.0000 | 0.5000 ± 0.0000 | 0.1000 ± 0.0000 |" in table
    assert "| 28 | 0.0050 ± 0.0071 | 0.0000 ± 0.0000 | 1.0000 ± 0.0000 | 1.0000 ± 0.0000 |" in table
    assert "Largest e with a certified test item for some user: 3, 4" in table
    (bvm,) = bound_vs_measured_tables(runs, 10)
    assert ("| random | 28 | 0.0150 ± 0.0071 | 1.0000 ± 0.0000 / 1.0000 ± 0.0000 | "
            "0.4000 ± 0.0000 |") in bvm
    text = certification_section(runs, 10, tmp_path / "figures")
    assert (tmp_path / "figures" / "certified_precision.png").stat().st_size > 1000
    assert "certified_precision.png" in text


def test_no_pore_no_section():
    runs = runs_frame()
    assert certification_section(runs[runs["defense"] == "none"], 10) == ""


def test_a_grid_with_pore_writes_its_certificate_into_tables_md(tmp_path):
    """End to end: a PORE cell's certificate columns reach runs.csv, and tables.md ends with
    the certification section and its figure; a grid without PORE has no such section."""
    from experiment.pipeline import run_experiment
    from experiment.validation import config_from_dict
    from tests.conftest import small_tree

    tree = small_tree(tmp_path, attack={"name": ["random"], "size": 0.05},
                      defense={"name": ["none", "pore"],
                               "options": {"pore": {"T": 60, "s": 60, "certify_e": [0, 1]}}},
                      model={"dim": 8, "epochs": 3, "batch_size": 256})
    out = run_experiment(config_from_dict(tree))
    runs = pd.read_csv(out / "runs.csv")
    pore = runs[runs.defense == "pore"]
    assert pore["pore_cert_precision@10_e0"].notna().all()
    assert (pore["pore_cert_precision@10_e1"] <= pore["pore_cert_precision@10_e0"]).all()
    tables = (out / "tables.md").read_text()
    assert "## PORE certificate" in tables and "certified_precision.png" in tables
    assert (out / "figures" / "certified_precision.png").is_file()
    plain = small_tree(tmp_path / "plain", attack={"name": ["random"], "size": 0.05},
                       model={"dim": 8, "epochs": 3, "batch_size": 256})
    assert "PORE certificate" not in (run_experiment(config_from_dict(plain)) /
                                      "tables.md").read_text()
