"""MF training speed, TCD setting (d 128, batch 2048, Adam 1e-3, 40 epochs) on ML-100K.

Runs the package's trainer and, in the same process, the straightforward PyTorch loop
(per-batch nn.Embedding lookups, dense Adam, autograd) from the same initialization and the same
batch order, and prints both times, the speed-up and both final validation MSEs
(experiments.md §5: ≥ 6× faster, final validation MSE within 1%).

    python benchmarks/bench_mf.py [--epochs 40] [--dataset ml-100k] [--repeat 3] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from common import data_root, load_average, machine, print_table
from data import load_dataset, split_ratings
from models.mf import MF
from models.trainer import Trainer
from utils.config import DatasetConfig, ModelConfig


class ReferenceMF(nn.Module):
    def __init__(self, init: MF) -> None:
        super().__init__()
        self.user = nn.Embedding.from_pretrained(init.user_emb.detach().clone(), freeze=False)
        self.item = nn.Embedding.from_pretrained(init.item_emb.detach().clone(), freeze=False)


def reference_fit(model: ReferenceMF, train, val, cfg, seed: int) -> tuple[float, list[float]]:
    """The loop a researcher writes first; batch order drawn exactly as the package draws it."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    u_all, i_all, r_all = (torch.as_tensor(a) for a in (train.users, train.items, train.ratings))
    vu, vi, vr = (torch.as_tensor(a) for a in (val.users, val.items, val.ratings))
    curve = []
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(u_all), generator=gen)
        for idx in perm.split(cfg.batch_size):
            p, q = model.user(u_all[idx]), model.item(i_all[idx])
            loss = ((p * q).sum(1) - r_all[idx]).pow(2).mean() + cfg.reg * (
                p.pow(2).mean() + q.pow(2).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            curve.append(float(((model.user(vu) * model.item(vi)).sum(1) - vr).pow(2).mean()))
    return min(curve), curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs; the best is kept")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, every core); 1 is the fair "
                             "setting when other processes share the cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(DatasetConfig(name=args.dataset, root=data_root()))
    split = split_ratings(data, np.random.default_rng(0))
    cfg = ModelConfig(epochs=args.epochs)

    def init() -> MF:
        return MF(data.n_users, data.n_items, cfg.dim, torch.Generator().manual_seed(0))

    fast_times, ref_times = [], []
    load_before = load_average()
    for _ in range(args.repeat):
        trainer = Trainer(init(), cfg, data.scale, torch.Generator().manual_seed(1))
        start = time.perf_counter()
        result = trainer.fit(split.train, split.val)
        fast_times.append(time.perf_counter() - start)
        ref = ReferenceMF(init())
        start = time.perf_counter()
        ref_best, ref_curve = reference_fit(ref, split.train, split.val, cfg, seed=1)
        ref_times.append(time.perf_counter() - start)
    fast_curve = [h["val_loss"] for h in result.history]
    fast, slow = min(fast_times), min(ref_times)
    gap = abs(result.best_val - ref_best) / ref_best
    curve_gap = max(abs(a - b) / b for a, b in zip(fast_curve, ref_curve))
    print(f"machine: {machine()}")
    print(f"load average (1 min) before / after: {load_before} / {load_average()} (the ratio "
          "is measured in one run, interleaved, so it is fair on a shared machine)")
    print(f"data: {args.dataset}, {len(split.train)} train / {len(split.val)} validation ratings")
    print_table(f"MF training, {args.epochs} epochs (best of {args.repeat} runs)", [
        ("package trainer (s)", f"{fast:.2f}", "≤ 1.5 s", "ok" if fast <= 1.5 else "slower"),
        ("straightforward loop (s)", f"{slow:.2f}", "≈ 10 s (spec machine)", ""),
        ("speed-up", f"{slow / fast:.1f}×", "≥ 6×", "ok" if slow / fast >= 6 else "below"),
        ("best validation MSE, package", f"{result.best_val:.5f}", "", ""),
        ("best validation MSE, reference", f"{ref_best:.5f}", "", ""),
        ("relative MSE gap", f"{gap:.2%}", "≤ 1%", "ok" if gap <= 0.01 else "above"),
        ("max per-epoch curve gap", f"{curve_gap:.2%}", "same curve", ""),
    ])


if __name__ == "__main__":
    main()
