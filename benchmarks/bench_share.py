"""SHARE's training cost against plain MF on the same data (experiments.md §5: ≤ 3×).

Builds ML-100K with a 3% random attack on 5 unpopular targets (the pipeline's split, targets and
fake profiles for seed 0), then times, interleaved and best of ``--repeat`` runs each:
plain MF training (``none``: the trainer's hand-derived fast path), SHARE (every part on: the
hand-derived adversarial epoch, valuation every T_v epochs, the reward), SHARE's parts
separately, PamaCF (same hand-derived epoch, no valuation or reward) and PamaCF through the
generic autograd adversarial step — the reference for what a straightforward adversarial step
costs. Prints seconds and ratios to plain MF, and the machine.

    python benchmarks/bench_share.py [--dataset ml-100k] [--repeat 3] [--epochs 40]
"""
from __future__ import annotations

import argparse
import time

import torch

from common import data_root, machine, print_table
from defenses import DEFENSES
from defenses.adversarial import AdversarialTrainer
from defenses.pamacf import PamaCF


class AutogradPamaCF(PamaCF):
    """PamaCF through the generic autograd step (the reference)."""

    trainer_class = AdversarialTrainer
from utils.config import as_list
from experiment.validation import load_config
from experiment.planning import Cell, model_config
from experiment.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs; the best is kept")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--skip-autograd", action="store_true",
                        help="do not time the autograd reference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [f"dataset={args.dataset}", "progress=false", f"model.epochs={args.epochs}"]
    if data_root():
        overrides.append(f"dataset.root={data_root()}")
    cfg = load_config(None, overrides)
    ws = Workspace(cfg)
    split = ws.split(args.dataset, 0)
    cell = Cell(args.dataset, 0, "unpopular", "random", 0.03, 0.4, "share")
    fake, _ = ws.fake_profiles(cell)
    data = ws.training_data(split, fake)
    mcfg = model_config(cfg, as_list(cfg.model.name)[0])

    runs = {"none": {}, "share": {}, "share_no_elim": {}, "share_no_adv": {},
            "share_no_reward": {}}
    runs["pamacf"] = {"eps": 0.03}
    if not args.skip_autograd:
        runs["pamacf_autograd"] = {"eps": 0.03}
    times = {name: [] for name in runs}
    for rep in range(args.repeat):
        for name, options in runs.items():
            cls = AutogradPamaCF if name == "pamacf_autograd" else DEFENSES[name]
            defense = cls(cls.parse_options(options), mcfg, "cpu", seed=rep)
            start = time.perf_counter()
            defense.fit(data)
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    base = best["none"]
    print(f"machine: {machine()}")
    print(f"data: {args.dataset} + 3% random attack, {len(data.train)} training rows, "
          f"{args.epochs} epochs, MF d={mcfg.dim}")
    rows = [("plain MF (none) (s)", f"{base:.2f}", "", "")]
    labels = {"share": "SHARE, all parts", "share_no_elim": "SHARE without (a)",
              "share_no_adv": "SHARE without (b) (valuation only)",
              "share_no_reward": "SHARE without (c)",
              "pamacf": "PamaCF (ε 0.03), hand-derived epoch",
              "pamacf_autograd": "PamaCF (ε 0.03), autograd step"}
    for name, label in labels.items():
        if name not in best:
            continue
        ratio = best[name] / base
        target = "≤ 3×" if name == "share" else ""
        verdict = ("ok" if ratio <= 3 else "above") if name == "share" else ""
        rows.append((f"{label} (s)", f"{best[name]:.2f} ({ratio:.1f}×)", target, verdict))
    print_table(f"training time, best of {args.repeat}", rows)


if __name__ == "__main__":
    main()
