"""What moves target HR as the attacker's knowledge cost c grows (issue 19, TCD Table 2).

For each *switch* below, runs the undefended MF on ML-100K (3 % attacks, 5 targets, HR@50) for
every knowledge cost, attack, target kind and seed, through the package's workspace API (the
same split, targets, knowledge view, attack and victim training as ``main.py``), and prints
target_hr_all@50 and target_hr@50 as mean ± std over the seeds, one markdown table per switch.

Switches (one change at a time):

* ``pipeline`` — exactly the cells of ``configs/table2_knowledge_cost.yaml``: the attack's
  random draws (filler items, filler ratings) and the victim's initialization are seeded per
  cell, so each c gets its own draws (reproduces ``main.py``'s runs.csv to the digit).
* ``null`` — the pipeline's per-c seeds, but every column sees the *full* data (c = 1.0
  view): whatever still varies across columns is the draws alone, not knowledge.
* ``paired`` — common random numbers: the attack's draws and the victim's seed depend on the
  seed and target kind only, not on c, so columns differ only by the knowledge view.
* ``paired_view_fillers`` — ``paired`` with ``attack.options.<name>.fillers: view`` (fillers
  only from items rated in the view).
* ``paired_oracle_stats`` — ``paired`` with the item / global statistics computed from all
  real ratings (a diagnostic: no attacker at c < 1 has them); the fillers and the filler size
  still come from the c view.
* ``paired_fixed_filler`` — ``paired`` with the filler size fixed at the full data's
  int(ratings / users) − targets for every c.
* ``paired_unseen_top`` — ``paired`` with ``attack.options.average.unseen: top``: an item
  without a rating in the view gets the top rating and no noise, as the TCD authors'
  ``Dataset.item_distribution`` computes it on the view (``greensun0830/TCD`` ``Dataset.py``;
  ours: the view's global mean and std). Random has no such option (its row is ``paired``'s).

    python benchmarks/knowledge_cost.py                       # every switch, 3 seeds
    python benchmarks/knowledge_cost.py --switches pipeline,paired --repeats 3 \\
        --attacks average,random --kinds unpopular,random --out /tmp/kc_bench

Rows: target kind × attack; columns: c. Undefended MF cells take about a second each; one
switch (2 attacks × 2 kinds × 5 c × 3 seeds = 60 cells) about 3–4 minutes on the shared 2-core
machine. Per-seed numbers go to ``<out>/<switch>.csv``.

Measured 2026-11-30 (ML-100K, 3 seeds), Average on unpopular targets, target_hr_all@50 at
c = 0.2 / 1.0: pipeline 0.557 ± 0.171 / 0.381 ± 0.244; null 0.495 ± 0.075 / 0.381 ± 0.244;
paired 0.370 ± 0.188 / 0.401 ± 0.083; paired_oracle_stats 0.378 / 0.401; paired_fixed_filler
0.396 / 0.401; paired_view_fillers 0.504 ± 0.081 / 0.401; paired_unseen_top 0.196 ± 0.193 /
0.401 ± 0.083. The decline of the preset is the per-c draws; only ``unseen: top`` moves the
paired curve consistently (up with c, every seed), and ``fillers: view`` the other way.
PGA and TNA on random targets (``--switches paired,paired_fixed_filler --attacks pga,tna
--kinds random``), c = 0.2 / 1.0: paired PGA 0.143 / 0.105, TNA 0.309 / 0.188; fixed filler
PGA 0.102 / 0.105, TNA 0.191 / 0.188 — their decline is the view's longer profiles at small c.
FilmTrust TNA keeps its decline with the filler size fixed (random targets 0.551 / 0.304).
"""
from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common import data_root, machine
from attacks import ATTACKS
from attacks.threat import ThreatContext, filler_size_of, knowledge_view, n_fake_users
from experiment.validation import load_config
from experiment.planning import component_options, model_config
from utils.seeding import derive_seed, numpy_rng
from experiment.workspace import Workspace, seed_globals

SWITCHES = ("pipeline", "null", "paired", "paired_view_fillers", "paired_oracle_stats",
            "paired_fixed_filler", "paired_unseen_top")
METRICS = ("target_hr_all@50", "target_hr@50")


def workspace(dataset: str, cache: str) -> Workspace:
    overrides = [f"dataset.name={dataset}", f"dataset.cache_dir={cache}", "progress=false",
                 "defense=none", "model=mf", "evaluation.k=50", "targets.count=5"]
    root = data_root()
    if root:
        overrides.append(f"dataset.root={root}")
    return Workspace(load_config(None, overrides))


def run_cell(ws: Workspace, switch: str, dataset: str, repeat: int, kind: str, attack: str,
             cost: float, size: float = 0.03) -> dict:
    """One undefended cell under ``switch``; returns its metrics and the attack's inputs."""
    cfg = ws.cfg
    split = ws.split(dataset, repeat)
    targets = ws.targets(dataset, repeat, kind)
    seen = split.observed()
    rseed = ws.repeat_seed(repeat)
    paired = switch.startswith("paired")
    # The pipeline's seeds (experiment/workspace.py): per cell, so per knowledge cost.
    attack_seed = derive_seed(rseed, "attack", dataset, kind, attack, size, cost)
    train_seed = derive_seed(rseed, "train", dataset, kind, attack, size, cost, "none")
    view_cost = 1.0 if switch == "null" else cost
    visible = knowledge_view(seen, split.n_users, targets, view_cost,
                             numpy_rng(attack_seed, "view"))
    if paired:  # common random numbers: the same draws and victim seed at every c
        attack_seed = derive_seed(rseed, "kc-bench", "attack", dataset, kind, attack, size)
        train_seed = derive_seed(rseed, "kc-bench", "train", dataset, kind, attack, size)
    keep = np.zeros(split.n_users, dtype=bool)
    keep[visible] = True
    view = seen.subset(keep[seen.users])
    filler = filler_size_of(view, len(visible), len(targets))
    if switch == "paired_fixed_filler":
        filler = filler_size_of(seen, split.n_users, len(targets))
    options = component_options(cfg, "attack", attack, ())
    if switch == "paired_view_fillers":
        options = replace(options, fillers="view")
    if switch == "paired_unseen_top" and hasattr(options, "unseen"):
        options = replace(options, unseen="top")
    stats_view, stats_users = view, visible
    if switch == "paired_oracle_stats":
        stats_view, stats_users = seen, np.arange(split.n_users)
    ctx = ThreatContext(view=stats_view, visible_users=stats_users, n_users=split.n_users,
                        n_items=split.n_items, scale=split.scale, targets=targets,
                        n_fake=n_fake_users(split.n_users, size), filler_size=filler,
                        feedback=cfg.dataset.feedback, model_cfg=model_config(cfg, "mf"),
                        device=str(ws.device), seed=attack_seed)
    seed_globals(derive_seed(attack_seed, "globals"))
    fake = ATTACKS[attack](options).generate(ctx)
    model, _, _ = ws.train("none", (), "mf", ws.training_data(split, fake), train_seed)
    result = ws.evaluator(dataset, repeat, kind).evaluate(model)
    view_items = np.bincount(view.items, minlength=split.n_items) > 0
    return {**{m: result.metrics[m] for m in METRICS}, "filler_size": filler,
            "visible_users": len(visible), "view_items": int(view_items.sum())}


def table(rows: list[dict], costs: list[float], metric: str) -> str:
    out = ["| targets | attack | " + " | ".join(f"c = {c:g}" for c in costs) + " |",
           "|---|---|" + "---|" * len(costs)]
    keys = sorted({(r["kind"], r["attack"]) for r in rows}, key=lambda k: (k[0] != "unpopular", k))
    for kind, attack in keys:
        cells = []
        for c in costs:
            vals = np.array([r[metric] for r in rows
                             if (r["kind"], r["attack"], r["cost"]) == (kind, attack, c)])
            std = vals.std(ddof=1) if len(vals) > 1 else float("nan")
            cells.append(f"{vals.mean():.3f} ± {std:.3f}" if len(vals) else "—")
        out.append(f"| {kind} | {attack} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", default=",".join(SWITCHES))
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--attacks", default="average,random")
    parser.add_argument("--kinds", default="unpopular,random")
    parser.add_argument("--costs", default="0.2,0.4,0.6,0.8,1.0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/robustrec_knowledge_cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    switches = args.switches.split(",")
    unknown = [s for s in switches if s not in SWITCHES]
    if unknown:
        parser.error(f"unknown switch {unknown[0]}; valid: {', '.join(SWITCHES)}")
    costs = [float(c) for c in args.costs.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ws = workspace(args.dataset, str(out / "cache"))
    print(f"machine: {machine()}")
    print(f"data: {args.dataset}, 3 % attacks, 5 targets, undefended MF, HR@50, "
          f"{args.repeats} seeds (mean ± std, ddof 1)")
    for switch in switches:
        start = time.perf_counter()
        rows = []
        for repeat in range(args.repeats):
            for kind in args.kinds.split(","):
                for attack in args.attacks.split(","):
                    for c in costs:
                        row = run_cell(ws, switch, args.dataset, repeat, kind, attack, c)
                        rows.append({"switch": switch, "repeat": repeat, "kind": kind,
                                     "attack": attack, "cost": c, **row})
        with open(out / f"{switch}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\n## {switch} ({time.perf_counter() - start:.0f} s)\n")
        for metric in METRICS:
            print(f"{metric}\n\n{table(rows, costs, metric)}\n")


if __name__ == "__main__":
    main()
