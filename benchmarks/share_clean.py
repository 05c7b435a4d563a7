"""SHARE on clean data: test HR@50 of defenses trained on the unpoisoned split, per seed.

The pipeline trains only the undefended model on clean data (the Origin column); the SHARE
abstract's second claim is about clean-data quality, so this script trains the listed defenses
on the same clean splits (the pipeline's splits and seeds: the ``none`` row reproduces Origin)
and prints test HR@50, test RMSE and the train time, per seed and as mean ± std, with the paired
difference of each defense against ``none``.

It also prints what a defense costs the long tail (SHARE's item prior holds thinly rated items
back): ``tail share`` = the share of the real users' top-K slots that go to items with fewer
than ``--tail`` observed ratings, and ``tail HR@K`` = HR@K over the users whose test item is
such an item. Target HR cannot show this cost: a defense that never recommends a rarely rated
item keeps every unpopular target out of the lists.

    python benchmarks/share_clean.py [--dataset ml-100k] [--repeats 3] [--tail 20]
        [--defenses none,share,share_no_adv] [--options '{"share": {"eps": 0.03}}']
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from common import data_root, machine
from utils.config import as_list
from experiment.validation import load_config
from utils.metrics import Evaluator
from experiment.planning import ORIGIN
from experiment.workspace import Workspace
from utils.seeding import derive_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--defenses", default="none,share")
    parser.add_argument("--options", default="{}", help="JSON: {defense: {option: value}}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tail", type=int, default=20,
                        help="items with fewer observed ratings count as the long tail")
    args = parser.parse_args()
    torch.set_num_threads(1)
    defenses = args.defenses.split(",")
    overrides = [f"dataset={args.dataset}", "progress=false", f"seed={args.seed}",
                 f"repeats={args.repeats}", f"defense.options={json.dumps(json.loads(args.options))}"]
    if data_root():
        overrides.append(f"dataset.root={data_root()}")
    cfg = load_config(None, overrides)
    ws = Workspace(cfg)
    k = cfg.evaluation.k
    model_name = as_list(cfg.model.name)[0]
    rows = {d: [] for d in defenses}
    print(f"machine: {machine()}")
    print(f"clean {args.dataset}, {args.repeats} seeds; K = {k}\n")
    print("| seed | defense | test HR@K | test RMSE | tail share | tail HR@K | best epoch | "
          "train s |")
    print("|---|---|---|---|---|---|---|---|")
    for rep in range(args.repeats):
        split = ws.split(args.dataset, rep)
        evaluator = Evaluator(split, ws.targets(args.dataset, rep, "unpopular"), k)
        data = ws.training_data(split, None)
        for name in defenses:
            seed = derive_seed(ws.repeat_seed(rep), "train", args.dataset, ORIGIN, name)
            start = time.perf_counter()
            model, info, _ = ws.train(name, (), model_name, data, seed)
            seconds = time.perf_counter() - start
            metrics = evaluator.evaluate(model).metrics
            share, tail_hr = tail_exposure(model, split, k, args.tail)
            rows[name].append((metrics[f"hr@{k}"], metrics["test_rmse"], seconds, share,
                               tail_hr))
            print(f"| {rep} | {name} | {metrics[f'hr@{k}']:.4f} | {metrics['test_rmse']:.4f} | "
                  f"{share:.4f} | {tail_hr:.4f} | {info.get('best_epoch')} | {seconds:.1f} |")
    print("\n| defense | test HR@K mean ± std | Δ vs none (paired) | test RMSE | tail share | "
          "tail HR@K | train s |")
    print("|---|---|---|---|---|---|---|")
    base = np.array([r[0] for r in rows.get("none", [])])
    for name, values in rows.items():
        hr = np.array([v[0] for v in values])
        delta = f"{np.mean(hr - base):+.4f} ({np.mean(hr - base) / np.mean(base):+.1%})" \
            if len(base) == len(hr) and name != "none" else ""
        print(f"| {name} | {hr.mean():.4f} ± {hr.std(ddof=1) if len(hr) > 1 else 0:.4f} | "
              f"{delta} | {np.mean([v[1] for v in values]):.4f} | "
              f"{np.mean([v[3] for v in values]):.4f} | {np.mean([v[4] for v in values]):.4f} | "
              f"{np.mean([v[2] for v in values]):.1f} |")


@torch.no_grad()
def tail_exposure(model, split, k: int, tail: int) -> tuple[float, float]:
    """(share of top-K slots on items with < ``tail`` observed ratings, HR@K of the users whose
    test item is such an item); the users' observed items are masked as in the evaluator."""
    seen = split.observed()
    counts = np.bincount(seen.items, minlength=split.n_items)
    counts[split.test_items[split.test_items >= 0]] += 1
    is_tail = torch.as_tensor(counts < tail)
    model.eval()
    scores = model.score_all(torch.arange(split.n_users)).float()
    scores[torch.as_tensor(seen.users), torch.as_tensor(seen.items)] = float("-inf")
    top = scores.topk(k, dim=1).indices
    share = float(is_tail[top].float().mean())
    test = torch.as_tensor(split.test_items)
    users = torch.nonzero((test >= 0) & is_tail[test.clamp(min=0)]).flatten()
    if len(users) == 0:
        return share, float("nan")
    hits = (top[users] == test[users].unsqueeze(1)).any(1)
    return share, float(hits.float().mean())


if __name__ == "__main__":
    main()
