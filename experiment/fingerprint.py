"""Profile fingerprints (attacks.md §1): statistics that tell how a set of fake profiles was made,
so generated poison can be compared with other packages' and the TCD authors' files.

* ratings per profile (mean, min, max) and the share of profiles rating every target at the top;
* median popularity of the filler items (ratings each has in the real data) vs the median over
  all items — TNA concentrates on popular items (authors' files: 42–43 vs 26 on ML-100K);
* mean pairwise Jaccard similarity of the fake users' item sets (targets included);
* Pearson correlation of filler ratings with the items' real mean rating;
* the histogram of filler ratings on the dataset's original scale.

Command line (``key=value`` overrides as for ``main.py``; the first dataset, model, target kind,
size and cost of the config are used, and every listed attack gets a column)::

    python -m experiment.fingerprint dataset=ml-100k attack=[random,aush,pga,tna] [--repeat 0]
    python -m experiment.fingerprint dataset=ml-100k targets.kind=list \\
        targets.id_space=index targets.items=[1485,1320,821,1562,1531] --file poison.npy

Generated profiles come from (and go to) the pipeline's profile cache; with ``--file`` only the
files are fingerprinted (the config then only chooses the dataset, split and targets).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data.ratings import Interactions, RatingScale


def fingerprint(fake: Interactions, real: Interactions, n_items: int, targets: np.ndarray,
                scale: RatingScale) -> dict:
    """The statistics of ``fake`` against the real ratings ``real`` (dense ids, normalized)."""
    if len(fake) == 0:
        raise ValueError("no fake ratings to fingerprint")
    n_fake = int(fake.users.max()) + 1
    sizes = np.bincount(fake.users, minlength=n_fake)
    is_target = np.isin(fake.items, targets)
    top_targets = np.bincount(fake.users[is_target & (fake.ratings >= 1 - 1e-6)],
                              minlength=n_fake)
    popularity = np.bincount(real.items, minlength=n_items)
    totals = np.bincount(real.items, weights=real.ratings, minlength=n_items)
    item_mean = np.where(popularity > 0, totals / np.maximum(popularity, 1), np.nan)
    filler = ~is_target
    f_items, f_ratings = fake.items[filler], fake.ratings[filler].astype(np.float64)

    member = np.zeros((n_fake, n_items), dtype=np.float32)
    member[fake.users, fake.items] = 1.0
    inter = member @ member.T
    union = sizes[:, None] + sizes[None, :] - inter
    upper = np.triu_indices(n_fake, k=1)
    jaccard = float(np.mean(inter[upper] / np.maximum(union[upper], 1))) if n_fake > 1 \
        else float("nan")

    known = ~np.isnan(item_mean[f_items])
    if known.sum() > 1 and np.std(f_ratings[known]) > 0 and np.std(item_mean[f_items][known]) > 0:
        corr = float(np.corrcoef(f_ratings[known], item_mean[f_items][known])[0, 1])
    else:
        corr = float("nan")  # constant ratings (implicit feedback, lowest-rated fillers)
    steps = np.round(f_ratings * scale.steps).astype(np.int64)
    histogram = {round(s * scale.max_rating / scale.steps, 4): int((steps == s).sum())
                 for s in range(1, scale.steps + 1)}
    return {
        "profiles": n_fake,
        "ratings_per_profile_mean": float(sizes.mean()),
        "ratings_per_profile_min": int(sizes.min()),
        "ratings_per_profile_max": int(sizes.max()),
        "share_all_targets_top": float(np.mean(top_targets == len(targets))),
        "filler_popularity_median": float(np.median(popularity[f_items])) if len(f_items)
        else float("nan"),
        "item_popularity_median": float(np.median(popularity)),
        "mean_pairwise_jaccard": jaccard,
        "filler_rating_item_mean_corr": corr,
        "filler_rating_histogram": histogram,
    }


def format_table(columns: dict[str, dict]) -> str:
    """A markdown table: one row per statistic, one column per profile set."""
    names = list(columns)
    keys = list(next(iter(columns.values())))
    lines = ["| statistic | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for key in keys:
        cells = []
        for name in names:
            value = columns[name][key]
            if isinstance(value, dict):
                cells.append(" ".join(f"{k:g}:{v}" for k, v in value.items()))
            elif isinstance(value, float):
                cells.append(f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}")
            else:
                cells.append(str(value))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: none)")
    parser.add_argument("--file", action="append", default=[],
                        help="a poison file (.csv/.tsv/.npy) to fingerprint; repeatable")
    parser.add_argument("--repeat", type=int, default=0, help="which repeat's split and targets")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)

    from attacks.poison_file import load_poison
    from attacks.threat import AttackError
    from data import DatasetError
    from utils.config import ConfigError, as_list
    from experiment.validation import load_config
    from experiment.planning import Cell
    from experiment.workspace import Workspace

    try:
        cfg = load_config(args.config, args.overrides)
        cfg.progress = False
        if args.repeat >= cfg.repeats:
            cfg.repeats = args.repeat + 1
        ws = Workspace(cfg)
        dataset = as_list(cfg.dataset.name)[0]
        kind = as_list(cfg.targets.kind)[0]
        data = ws.data(dataset)
        split = ws.split(dataset, args.repeat)
        targets = ws.targets(dataset, args.repeat, kind)
        sets: dict[str, Interactions] = {}
        for path in args.file:
            sets[Path(path).name] = load_poison(path, split.n_items, split.scale, targets,
                                                data.raw_item_ids)
        if not args.file:
            for attack in as_list(cfg.attack.name):
                if attack in ("none", "file"):
                    continue
                cell = Cell(dataset=dataset, repeat=args.repeat, target_kind=kind, attack=attack,
                            attack_size=float(as_list(cfg.attack.size)[0]),
                            knowledge_cost=float(as_list(cfg.attack.knowledge_cost)[0]),
                            defense="none", model=as_list(cfg.model.name)[0])
                sets[attack], _ = ws.fake_profiles(cell)
    except (ConfigError, DatasetError, AttackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sets:
        print("error: nothing to fingerprint; give --file PATH or attack=<name>", file=sys.stderr)
        return 2
    columns = {name: fingerprint(fake, data.interactions, data.n_items, targets, data.scale)
               for name, fake in sets.items()}
    raw_targets = ", ".join(str(t) for t in data.raw_item_ids[targets])
    print(f"# fingerprints · {dataset} · repeat {args.repeat} · targets ({kind}) raw ids "
          f"{raw_targets}\n")
    print(format_table(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
