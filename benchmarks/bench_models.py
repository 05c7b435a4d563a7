"""Clean implicit top-K cells of the graph and BPR victims on ML-100K, beside RecBole (issue 30).

For each seed: the package's per-user ratio split (test 0.2, validation 0.1; the split
``benchmarks/export_recbole.py`` writes), then per model — LightGCN (3 layers) and MF-BPR —
the package's trainer epoch by epoch, validation Recall@20 after every epoch, early stop after
``--patience`` epochs without a better one, the best epoch restored, and Recall@20 / NDCG@20 on
the test rows (training and validation items masked). With ``--recbole PYTHON`` (the
interpreter of an environment built from ``requirements-recbole.txt``), RecBole's LightGCN and
BPR run on the same files in a subprocess with the same dimension, layers, learning rate,
batch size, L2, epoch budget, patience and validation metric, one thread each.

    python benchmarks/bench_models.py --seeds 0 1 2 --epochs 300 \\
        --recbole .venv-recbole/bin/python

Matched settings and the differences that remain:
- L2: ours is λ · ½ Σ ‖ego row‖² / batch (the LightGCN authors'); RecBole's LightGCN gets
  ``require_pow: true``, which is the same term. RecBole's BPR has no L2 term, so MF-BPR runs
  with ``--mf-reg`` (default 0) on our side.
- Initialisation: ours Glorot uniform, RecBole's Glorot normal (same variance).
- Negatives: one per positive, uniform over the user's non-training items, on both sides.
- Seconds: training plus the per-epoch validation, to the early stop (both sides), one torch
  thread each; RecBole's also include its checkpoint saving.
Prints one table row per (system, model, seed) and the mean per (system, model).
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import common
from common import machine
from data.ratings import Interactions
from export_recbole import export, ratio_split
from models import build_model
from models.trainer import Trainer
from utils.config import ModelConfig
from utils.seeding import torch_generator
from utils.topk_metrics import topk_metrics

K = 20


def our_cell(split, name: str, args, seed: int, reg: float) -> dict:
    cfg = ModelConfig(name=name, dim=args.dim, layers=args.layers, lr=args.lr, reg=reg,
                      batch_size=args.batch_size, epochs=args.epochs, loss="bpr")
    model = build_model(cfg, split.n_users, split.n_items, torch_generator(seed, "init", name),
                        "implicit", interactions=split.train)
    trainer = Trainer(model, cfg, split.scale, torch_generator(seed, "shuffle", name), "cpu",
                      "implicit")
    best, best_epoch, best_state, waited = -1.0, 0, None, 0
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        trainer.train_epoch(split.train)
        val = topk_metrics(model, split.train, split.val, split.n_users, k=K).metrics
        if val[f"recall@{K}"] > best:
            best, best_epoch, waited = val[f"recall@{K}"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= args.patience:
                break
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    seen = Interactions.concat(split.train, split.val)
    test = topk_metrics(model, seen, split.test, split.n_users, k=K).metrics
    return {"system": "package", "model": name, "seed": seed, "epochs": epoch,
            "best_epoch": best_epoch, "valid_recall": best, "recall": test[f"recall@{K}"],
            "ndcg": test[f"ndcg@{K}"], "seconds": seconds}


def recbole_cell(python: str, data_path: Path, dataset: str, model: str, args, seed: int,
                 workdir: Path) -> dict:
    config = {
        "model": model, "dataset": dataset, "data_path": str(data_path),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id", "rating"]},
        "embedding_size": args.dim, "n_layers": args.layers, "reg_weight": args.reg,
        "require_pow": True, "learning_rate": args.lr, "train_batch_size": args.batch_size,
        "epochs": args.epochs, "stopping_step": args.patience, "eval_step": 1,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
        "eval_args": {"mode": "full", "order": "RO", "group_by": "user"},
        "metrics": ["Recall", "NDCG"], "topk": [K], "valid_metric": f"Recall@{K}",
        "eval_batch_size": 4096, "seed": seed, "reproducibility": True, "device": "cpu",
        "use_gpu": False, "worker": 0, "show_progress": False, "threads": 1,
        "checkpoint_dir": str(workdir / "saved"), "log_wandb": False,
        "state": "WARNING",
    }
    driver = Path(__file__).with_name("recbole_driver.py")
    proc = subprocess.run([python, str(driver), json.dumps(config)], capture_output=True,
                          text=True, cwd=workdir, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"RecBole {model} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"system": "RecBole 1.2.1", "model": "lightgcn" if model == "LightGCN" else "mf",
            "seed": seed, "epochs": out["epochs"], "best_epoch": out["best_epoch"],
            "valid_recall": out["valid"][f"recall@{K}"], "recall": out["test"][f"recall@{K}"],
            "ndcg": out["test"][f"ndcg@{K}"], "seconds": out["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=["lightgcn", "mf"])
    parser.add_argument("--epochs", type=int, default=300, help="epoch budget")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reg", type=float, default=1e-4, help="LightGCN's L2")
    parser.add_argument("--mf-reg", type=float, default=0.0, help="MF-BPR's L2 (RecBole: 0)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--recbole", default=None, help="RecBole environment's python")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in args.seeds:
            split = ratio_split(args.dataset, seed)
            name = f"{args.dataset}-s{seed}"
            export(split, tmp / "data", name)
            for model in args.models:
                reg = args.reg if model == "lightgcn" else args.mf_reg
                rows.append(our_cell(split, model, args, seed, reg))
                print(rows[-1], flush=True)
                if args.recbole:
                    rb = {"lightgcn": "LightGCN", "mf": "BPR"}[model]
                    rows.append(recbole_cell(args.recbole, tmp / "data", name, rb, args, seed,
                                             tmp))
                    print(rows[-1], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    header = ["system", "model", "seed", "epochs", "best epoch", f"Recall@{K}", f"NDCG@{K}",
              "seconds"]
    table = [[r["system"], r["model"], r["seed"], r["epochs"], r["best_epoch"],
              f"{r['recall']:.4f}", f"{r['ndcg']:.4f}", f"{r['seconds']:.1f}"] for r in rows]
    for system in dict.fromkeys(r["system"] for r in rows):
        for model in args.models:
            sel = [r for r in rows if r["system"] == system and r["model"] == model]
            if len(sel) > 1:
                rec, nd = np.array([r["recall"] for r in sel]), np.array([r["ndcg"] for r in sel])
                table.append([system, model, f"mean of {len(sel)}", "", "",
                              f"{rec.mean():.4f} ± {rec.std(ddof=1):.4f}",
                              f"{nd.mean():.4f} ± {nd.std(ddof=1):.4f}",
                              f"{np.mean([r['seconds'] for r in sel]):.1f}"])
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    _ = common.ROOT
    main()
