"""What SHARE did, from an experiment's result files: robustness per defense and the poison
content of SHARE's eliminated rows.

Reads ``results/<experiment>/runs.csv`` and its ``config.yaml``. Prints, per dataset and target
kind, for every attack and defense: target HR@K, test HR@K, RI and attack-success reduction
(mean ± std over seeds), the average over attacks, and — for every SHARE-family row — the share
of fake-user rows among the rows it eliminated (against their share of the training data) and
the share of the fake rows on the targets (the poison's payload) it eliminated. Only this
evaluation side knows which rows are fake: it rebuilds each cell's training data (the split and
the cached fake profiles; fake users are the ids ≥ the number of real users) — the defense never
saw that.

    python benchmarks/share_analysis.py results/<experiment>
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import data_root
from defenses.share import decode_eliminated
from experiment.validation import load_config
from experiment.planning import Cell
from experiment.workspace import Workspace


def fmt(values: pd.Series, digits: int = 4) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def elimination_stats(runs: pd.DataFrame, cfg) -> pd.DataFrame:
    """Per SHARE-family row: eliminated fake share, base fake share, payload rows caught."""
    if data_root() and not cfg.dataset.root:
        cfg.dataset.root = data_root()
    ws = Workspace(cfg)
    out = []
    for _, row in runs.iterrows():
        rep = int(row["repeat"])
        if not str(row.defense).startswith("share") or row.attack == "none":
            continue
        info = json.loads(row.defense_info) if isinstance(row.defense_info, str) else {}
        scorings = decode_eliminated(info)
        if not scorings:
            continue
        cell = Cell(row.dataset, rep, row.target_kind, row.attack,
                    float(row.attack_size), float(row.knowledge_cost), row.defense, row.model)
        split = ws.split(row.dataset, rep)
        fake, _ = ws.fake_profiles(cell)
        data = ws.training_data(split, fake)
        is_fake = data.train.users >= split.n_users
        targets = ws.targets(row.dataset, rep, row.target_kind)   # runs.csv lists raw ids
        payload = is_fake & np.isin(data.train.items, targets)
        first, last = scorings[0][1], scorings[-1][1]
        out.append({"dataset": row.dataset, "target_kind": row.target_kind,
                    "attack": row.attack, "defense": row.defense, "repeat": rep,
                    "fake_share_data": is_fake.mean(),
                    "fake_share_eliminated": is_fake[first].mean() if len(first) else np.nan,
                    "fake_share_eliminated_last": is_fake[last].mean() if len(last) else np.nan,
                    "payload_caught": payload[first].sum() / max(payload.sum(), 1),
                    "payload_caught_last": payload[last].sum() / max(payload.sum(), 1)})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--k", type=int, default=None)
    args = parser.parse_args()
    runs = pd.read_csv(args.experiment / "runs.csv")
    cfg = load_config(args.experiment / "config.yaml", ["progress=false"])
    k = args.k or cfg.evaluation.k
    thr, hr = f"target_hr@{k}", f"hr@{k}"
    defenses = list(dict.fromkeys(runs.defense))
    for (dataset, kind), block in runs.groupby(["dataset", "target_kind"], sort=False):
        print(f"\n## {dataset} · {kind} targets ({block.repeat.nunique()} seeds)\n")
        print("| attack | defense | target HR@K | test HR@K | RI | success reduction |")
        print("|---|---|---|---|---|---|")
        for attack, rows in block.groupby("attack", sort=False):
            for defense in defenses:
                sel = rows[rows.defense == defense]
                if sel.empty:
                    continue
                print(f"| {attack} | {defense} | {fmt(sel[thr])} | {fmt(sel[hr])} | "
                      f"{fmt(sel.ri, 3)} | {fmt(sel.success_reduction, 3)} |")
        attacked = block[block.attack != "none"]
        print("\n| defense | mean target HR@K | mean test HR@K | mean RI | mean success "
              "reduction (over attacks) |")
        print("|---|---|---|---|---|")
        for defense in defenses:
            sel = attacked[attacked.defense == defense]
            if sel.empty:
                continue
            per_attack = sel.groupby("attack")[[thr, hr, "ri", "success_reduction"]].mean()
            print(f"| {defense} | {per_attack[thr].mean():.4f} | {per_attack[hr].mean():.4f} | "
                  f"{per_attack.ri.mean():.3f} | {per_attack.success_reduction.mean():.3f} |")
    stats = elimination_stats(runs, cfg)
    if stats.empty:
        return
    print("\n## SHARE's eliminated rows (first scoring / last scoring)\n")
    print("| dataset | targets | attack | defense | fake share of data | fake share of "
          "eliminated | payload rows eliminated |")
    print("|---|---|---|---|---|---|---|")
    for key, sel in stats.groupby(["dataset", "target_kind", "attack", "defense"], sort=False):
        print(f"| {' | '.join(key)} | {sel.fake_share_data.mean():.3f} | "
              f"{sel.fake_share_eliminated.mean():.3f} / {sel.fake_share_eliminated_last.mean():.3f}"
              f" | {sel.payload_caught.mean():.2f} / {sel.payload_caught_last.mean():.2f} |")
    print("\n| defense | fake share of data | of eliminated (first scoring) | enrichment | "
          "payload rows eliminated |")
    print("|---|---|---|---|---|")
    for defense, sel in stats.groupby("defense", sort=False):
        data_share, elim = sel.fake_share_data.mean(), sel.fake_share_eliminated.mean()
        print(f"| {defense} | {data_share:.3f} | {elim:.3f} | {elim / data_share:.1f}× | "
              f"{sel.payload_caught.mean():.2f} |")


if __name__ == "__main__":
    main()
