"""Enrichment of SHARE's candidate part-(a) signals in poison, under the platform split.

For each dataset, target kind and attack (3 % fake users, knowledge cost 0.4, the pipeline's
split, targets and cached fake profiles of a TUNING master seed — never the reported seeds;
``split.fake_rows: platform``: fake users' rows reach validation like real users'), builds the
poisoned TrainingData exactly as a cell does (``Workspace.training_data``) and prints, for every
candidate signal, the rows it would eliminate: their number, the precision of fake rows among
them, the recall of the fake rows and of the payload (fake users' rows on the targets). The
``none`` attack is the clean data: there the interesting figure is how many rows a signal would
eliminate. Only this evaluation side knows which rows are fake; the signals never do.

Signals (rank-based ones eliminate the lowest-valued 3 %; ``group`` only its flagged rows):

* ``group``      — share_group.lockstep_counts ≥ min partners (SHARE's new default; data-driven
                   amount, capped at 3 %), at the given lift thresholds;
* ``group_rank`` — the same counts, ranked, filling the 3 % budget;
* ``v1`` / ``v1_no_support`` — the first default valuation (reach, push, unanimity, ± support)
  of an MF model after the warm-up (``--v1``; trains an MF per cell);
* ``unanimity``, ``support`` — the single item terms of the first valuation;
* ``neighbour lift`` — a candidate for camouflage that spreads the targets (one per fake user,
  which the group signal cannot see): a top rating (u, i) is suspicious when u's nearest
  neighbours rate i no more often than users at large. A fake user is a clone of a real user,
  whose neighbours never chose the target; a real fan's neighbours share the taste. Neighbours:
  the k = 50 most cosine-similar users over the observed pattern (train ∪ val, the user's own
  top ratings left out, so a shared payload does not make the fakes each other's neighbours);
  lift = neighbours' rate / the item's base rate (shrunk). ``(3 %)`` eliminates the lowest-lift
  3 % of top-rated rows; ``item test`` only the top-rated rows with lift < 1 of items whose top
  raters' neighbours chose them significantly less often than chance (z = (O − E)/√E < −4 over
  the item's top raters, O = neighbours who rated it, E = k × base rate per rater).

    python benchmarks/share_signals.py [--datasets ml-100k filmtrust] [--seed 1] [--v1]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from common import data_root
from defenses import DEFENSES
from defenses.share_group import lockstep_counts
from defenses.share_valuation import (item_proximity, item_support, item_unanimity,
                                      lowest_rows, ranks01, value_samples)
from utils.config import as_list
from experiment.validation import load_config
from experiment.planning import Cell, model_config
from experiment.workspace import Workspace

ATTACKS = ["none", "random", "average", "bandwagon", "segment", "aush", "pga", "tna", "clone",
           "adaptive"]


def tensors(inter):
    return (torch.as_tensor(inter.users), torch.as_tensor(inter.items),
            torch.as_tensor(inter.ratings))


def v1_values(data, cfg, seed: int, support: bool) -> torch.Tensor:
    """The first default valuation of an MF model after SHARE's warm-up (5 epochs)."""
    mcfg = model_config(cfg, as_list(cfg.model.name)[0])
    mcfg.epochs = 5
    defense = DEFENSES["none"](DEFENSES["none"].parse_options({}), mcfg, "cpu", seed=seed)
    model, _ = defense.fit(data)
    train, val = tensors(data.train), tensors(data.val)
    users = torch.unique(val[0])
    gen = torch.Generator().manual_seed(seed)
    audience = users[torch.randperm(len(users), generator=gen)[:300]]
    P, Q = model.user_emb.detach(), model.item_emb.detach()
    prox = item_proximity(P, Q, audience, 50)
    return value_samples(P, Q, train, val, data.n_users, data.n_items, audience, prox,
                         reach_weight=0.5, push_weight=1.0, unanimity_weight=1.0,
                         support_weight=1.0 if support else 0.0).value


def neighbour_lift(train, observed, n_users: int, n_items: int, k: int = 50,
                   prior: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per training row: how much more often the user's k nearest neighbours rated the row's
    item than users at large do (shrunk towards 1 by ``prior`` neighbours' worth); and per
    item the z statistic of its top-rated training rows' neighbour counts against chance."""
    users, items, ratings = observed[0].long(), observed[1].long(), observed[2]
    X = torch.zeros(n_users, n_items)
    X[users, items] = 1.0
    taste = X.clone()
    top = ratings >= 1.0 - 1e-6
    taste[users[top], items[top]] = 0.0
    taste = taste / taste.norm(dim=1, keepdim=True).clamp_min(1e-9)
    sim = taste @ taste.T
    sim.fill_diagonal_(0.0)
    weight, nearest = sim.topk(min(k, n_users - 1), dim=1)
    W = torch.zeros_like(sim).scatter_(1, nearest, weight.clamp_min(0.0))
    W = W / W.sum(dim=1, keepdim=True).clamp_min(1e-9)
    u, i = train[0].long(), train[1].long()
    rate = (W[u] * X[:, i].T).sum(dim=1)       # neighbours' share that rated the row's item
    base = X.mean(dim=0)[i]
    lift = (rate + prior * base / k) / (base * (1.0 + prior / k)).clamp_min(1e-12)
    top = train[2] >= 1.0 - 1e-6
    observed_count = torch.zeros(n_items).index_add_(0, i[top], k * rate[top])
    expected_count = torch.zeros(n_items).index_add_(0, i[top], k * base[top])
    z = (observed_count - expected_count) / expected_count.clamp_min(1e-9).sqrt()
    return lift, z


def signals(data, args, cfg, seed) -> dict[str, np.ndarray]:
    """Name → boolean mask of the training rows the signal would eliminate."""
    train, val = tensors(data.train), tensors(data.val)
    n = len(train[0])
    budget = int(args.fraction * n)
    observed = tuple(torch.cat([t, v]) for t, v in zip(train, val))
    out = {}

    def mask(rows: torch.Tensor) -> np.ndarray:
        m = np.zeros(n, dtype=bool)
        m[rows.numpy()] = True
        return m

    for lift in args.lifts:
        group = lockstep_counts(*train, observed, data.n_users, data.n_items, args.prior, lift)
        for m_min in args.partners:
            flagged = torch.nonzero(group >= m_min).squeeze(1)
            if len(flagged) > budget:
                flagged = flagged[torch.argsort(-group[flagged], stable=True)[:budget]]
            out[f"group lift≥{lift:g} m≥{m_min}"] = mask(flagged)
        if lift == args.lifts[0]:
            out["group_rank (3 %)"] = mask(lowest_rows(-group, args.fraction))
    ratings = train[2].float()
    unan = item_unanimity(train[1], ratings, data.n_items, 20.0)[train[1]]
    out["unanimity+push (3 %)"] = mask(lowest_rows(ranks01(-unan) + ranks01(-ratings),
                                                   args.fraction))
    sup = item_support(train[1], val[1], data.n_items, 10.0)[train[1]]
    out["support+push (3 %)"] = mask(lowest_rows(ranks01(sup) + ranks01(-ratings), args.fraction))
    lift, z = neighbour_lift(train, observed, data.n_users, data.n_items)
    top_rows = train[2] >= 1.0 - 1e-6
    out["neighbour lift (3 %)"] = mask(lowest_rows(torch.where(top_rows, lift, math.inf),
                                                   args.fraction))
    suspect = z[train[1].long()] < -4.0
    out["neighbour lift, item test"] = mask(torch.nonzero(top_rows & suspect & (lift < 1.0))
                                            .squeeze(1))
    if args.v1:
        for support in (True, False):
            value = v1_values(data, cfg, seed, support)
            out["v1" + ("" if support else "_no_support") + " (3 %)"] = mask(
                lowest_rows(value, args.fraction, train[0], 0.25))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "filmtrust"])
    parser.add_argument("--kinds", nargs="+", default=["unpopular", "random"])
    parser.add_argument("--attacks", nargs="+", default=ATTACKS)
    parser.add_argument("--seed", type=int, default=1, help="tuning master seed (not 0)")
    parser.add_argument("--fraction", type=float, default=0.03)
    parser.add_argument("--lifts", nargs="+", type=float, default=[4.0, 5.0, 6.0])
    parser.add_argument("--partners", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--prior", type=float, default=2.0)
    parser.add_argument("--v1", action="store_true", help="also the first valuation (trains MF)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for ds in args.datasets:
        overrides = [f"dataset={ds}", "progress=false", f"seed={args.seed}",
                     "split.fake_rows=platform"]
        if data_root():
            overrides.append(f"dataset.root={data_root()}")
        cfg = load_config(None, overrides)
        ws = Workspace(cfg)
        split = ws.split(ds, 0)
        print(f"\n# {ds}, master seed {args.seed}, split.fake_rows: platform, 3 % attacks, "
              "c = 0.4\n")
        print("| kind | attack | signal | eliminated | fake precision | fake recall | "
              "payload recall |")
        print("|---|---|---|---|---|---|---|")
        for kind in args.kinds:
            targets = ws.targets(ds, 0, kind)
            for attack in args.attacks:
                cell = Cell(ds, 0, kind, attack, 0.03, 0.4, "share")
                fake = None if attack == "none" else ws.fake_profiles(cell)[0]
                data = ws.training_data(split, fake, cell)
                is_fake = data.train.users >= split.n_users
                payload = is_fake & np.isin(data.train.items, targets)
                for name, chosen in signals(data, args, cfg, ws.repeat_seed(0)).items():
                    k = int(chosen.sum())
                    prec = is_fake[chosen].mean() if k else 0.0
                    rec = is_fake[chosen].sum() / max(is_fake.sum(), 1)
                    pay = payload[chosen].sum() / max(payload.sum(), 1)
                    cols = ([f"{k}", "", "", ""] if attack == "none" else
                            [f"{k}", f"{prec:.2f}", f"{rec:.3f}", f"{pay:.2f}"])
                    print(f"| {kind} | {attack} | {name} | " + " | ".join(cols) + " |",
                          flush=True)


if __name__ == "__main__":
    main()
