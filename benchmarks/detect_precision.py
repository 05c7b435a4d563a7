"""Precision and recall of the users a detection defense flagged, from an experiment's files.

Reads ``results/<experiment>/runs.csv`` and its ``config.yaml``; for every attacked cell whose
defense judges users (``pca_detect``, ``degsim``, …) it rebuilds the cell's training data (the
split and the cached fake profiles, fake rows placed as ``split.fake_rows`` says) and reruns the
defense's detector with the cell's options and training seed — the same users its ``fit``
flagged, without training. Only this evaluation side knows which users are fake (ids ≥ the
number of real users); the defense never saw it. Prints per cell: flagged, fake, precision,
recall and the false-positive rate on real users, then the mean per defense and target kind.

    python benchmarks/detect_precision.py results/<experiment>
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from common import data_root
from defenses import DEFENSES
from utils.config import load_config
from utils.pipeline import Cell, Workspace, component_options, model_config
from utils.seeding import derive_seed


def parse_params(text) -> tuple:
    if not isinstance(text, str) or not text:
        return ()
    pairs = (part.split("=", 1) for part in text.split(","))
    return tuple(sorted((k, yaml.safe_load(v)) for k, v in pairs))


def detection_stats(runs: pd.DataFrame, cfg) -> pd.DataFrame:
    if data_root() and not cfg.dataset.root:
        cfg.dataset.root = data_root()
    ws = Workspace(cfg)
    out = []
    for _, row in runs.iterrows():
        if row.attack == "none" or row.defense not in DEFENSES:
            continue
        impl = DEFENSES[row.defense]
        if not hasattr(impl, "flag"):
            continue
        rep = int(row["repeat"])
        params = parse_params(row.get("defense_params"))
        cell = Cell(row.dataset, rep, row.target_kind, row.attack, float(row.attack_size),
                    float(row.knowledge_cost), row.defense, row.model,
                    parse_params(row.get("attack_params")), params)
        split = ws.split(row.dataset, rep)
        fake, _ = ws.fake_profiles(cell)
        data = ws.training_data(split, fake, cell)
        seed = derive_seed(ws.repeat_seed(rep), "train", cell.dataset, cell.target_kind,
                           cell.attack, cell.attack_size, cell.knowledge_cost, cell.defense)
        defense = impl(component_options(cfg, "defense", row.defense, params),
                       model_config(cfg, row.model), "cpu", seed)
        flagged = defense.flag(data)
        is_fake = np.arange(data.n_users) >= split.n_users
        hit = int((flagged & is_fake).sum())
        out.append({"dataset": row.dataset, "target_kind": row.target_kind,
                    "attack": row.attack, "defense": row.defense, "repeat": rep,
                    "flagged": int(flagged.sum()), "fake": int(is_fake.sum()),
                    "precision": hit / max(int(flagged.sum()), 1),
                    "recall": hit / max(int(is_fake.sum()), 1),
                    "fpr_real": int((flagged & ~is_fake).sum()) / split.n_users})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = pd.read_csv(args.experiment / "runs.csv")
    cfg = load_config(args.experiment / "config.yaml", ["progress=false"])
    stats = detection_stats(runs, cfg)
    if stats.empty:
        print("no attacked cell of a detection defense")
        return
    print("| dataset | targets | attack | defense | flagged | fake | precision | recall | "
          "FPR (real) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, sel in stats.groupby(["dataset", "target_kind", "attack", "defense"], sort=False):
        print(f"| {' | '.join(key)} | {sel.flagged.mean():.0f} | {sel.fake.mean():.0f} | "
              f"{sel.precision.mean():.3f} | {sel.recall.mean():.3f} | "
              f"{sel.fpr_real.mean():.4f} |")
    print("\n| dataset | targets | defense | mean precision | mean recall (over attacks) |")
    print("|---|---|---|---|---|")
    for key, sel in stats.groupby(["dataset", "target_kind", "defense"], sort=False):
        per = sel.groupby("attack")[["precision", "recall"]].mean()
        print(f"| {' | '.join(key)} | {per.precision.mean():.3f} | {per.recall.mean():.3f} |")


if __name__ == "__main__":
    main()
