"""``summary.csv``: one row per cell over seeds (experiments.md §3) — mean, std (ddof 1), n of
each metric; the confidence intervals of HR@K and target HR@K (``utils/uncertainty.py``); the
attack's gain over Origin with its interval and whether it is distinguishable from noise; RI and
attack-success reduction of the means, blank where the attack was not effective; each defense's
change from the undefended model with its interval and a test against it (Holm-corrected per
table block); and the paired t-tests against the best of AT and RAT (the TCD tables' stars).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiment.tables import BASE, COORDS, ORIGIN, SETTING, UNDEFENDED
from utils.atomic import load_npz
from utils.metrics import LOO, METRICS, RATIO, TARGET_PAIRS, Metric, interval_metrics
from utils.seeding import derive_seed
from utils.statistics import (holm, mean_std_n, paired_p_value, paired_user_p_value,
                              robustness_improvement, stars, success_reduction)
from utils.uncertainty import BlockBootstrap, Interval, seed_t_interval

ID_COLUMNS = ["experiment", "cell", "dataset", "model", "feedback", "target_kind", "targets",
              "attack", "attack_size", "knowledge_cost", "attack_params", "defense",
              "defense_params", "repeat", "seed", "n_fake", "filler_size"]
BASELINES = ("at", "rat")   # "the best baseline" of the TCD tables


@dataclass
class IntervalOptions:
    """How intervals are computed and when a ratio is shown (config section ``report``)."""
    level: float = 0.95        # confidence level of every interval
    bootstrap: int = 1000      # bootstrap replicates
    min_gain: float = 0.01     # RI / success reduction only where the attack gained ≥ this
    seed: int = 0              # the master seed (the resampling is derived from it)
    cells_dir: Path | None = None   # cells/<key>.npz with the per-user outcomes
    tail_floor: float = 0.5    # ‡ below this share of the undefended clean tail_share@K
    protocol: str = LOO        # split.mode: which metrics' columns the runs hold
    test_k: int = 20           # evaluation.test_k: K of the ratio metrics' columns


def metric_columns(frame: pd.DataFrame) -> list[str]:
    skip = set(ID_COLUMNS) | {"defense_info", "error"}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
            and not c.startswith("seconds_")]



# ----------------------------------------------------------------------------- summary

def _key(values) -> tuple:
    return tuple(values)


def summarize(runs: pd.DataFrame, k: int, failed: pd.DataFrame | None = None,
              options: IntervalOptions | None = None) -> pd.DataFrame:
    """One row per cell over seeds (see the module docstring). Without ``options.cells_dir``
    (or for cells stored without per-user outcomes) intervals are t intervals over seeds."""
    options = options or IntervalOptions()
    metrics = metric_columns(runs)
    groups = {_key(key): group for key, group in runs.groupby(COORDS, sort=False, dropna=False)}
    rows = []
    for key, group in groups.items():
        row = dict(zip(COORDS, key))
        row["n_runs"] = len(group)
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = mean_std_n(group[m])
        rows.append(row)
    if failed is not None and len(failed):
        for key, group in failed.groupby(COORDS, sort=False, dropna=False):
            key = _key(key)
            if key not in groups:
                rows.append({**dict(zip(COORDS, key)), "n_runs": 0})
    summary = pd.DataFrame(rows, columns=None if rows else COORDS + ["n_runs"])
    if summary.empty:
        return summary
    _add_failures(summary, failed)
    _add_intervals(summary, runs, groups, k, options)
    _add_relative_of_means(summary, k)
    _add_tail_suppression(summary, k, options.tail_floor)
    for metric in tested_metrics(options.protocol):
        name = metric.column(k, options.test_k)
        if name in runs:
            _add_significance(summary, groups, name, not metric.higher_is_better)
    return summary


def _add_failures(summary: pd.DataFrame, failed: pd.DataFrame | None) -> None:
    counts, errors = {}, {}
    if failed is not None and len(failed):
        for key, group in failed.groupby(COORDS, sort=False, dropna=False):
            counts[_key(key)] = len(group)
            errors[_key(key)] = " | ".join(dict.fromkeys(group["error"].astype(str)))
    keys = [_key(r) for r in summary[COORDS].itertuples(index=False)]
    summary["n_failed"] = [counts.get(key, 0) for key in keys]
    summary["errors"] = [errors.get(key, "") for key in keys]


def _add_relative_of_means(summary: pd.DataFrame, k: int) -> None:
    """RI and success reduction computed from the mean target HRs (what the tables show), only
    where the attack was effective (``attack_effective``): a ratio of noise is no finding."""
    col = f"target_hr@{k}_mean"
    ri, sr = [], []
    if col in summary:
        records = summary.to_dict("records")
        origin = {tuple(r[c] for c in BASE): r[col] for r in records
                  if r["attack"] == ORIGIN and r["defense"] == UNDEFENDED}
        undefended = {tuple(r[c] for c in SETTING): r[col] for r in records
                      if r["defense"] == UNDEFENDED}
        for r in records:
            attacked = r["attack"] != ORIGIN and r.get("attack_effective") in (True,)
            o = origin.get(tuple(r[c] for c in BASE), np.nan)
            a = undefended.get(tuple(r[c] for c in SETTING), np.nan)
            ri.append(robustness_improvement(r[col], a, o) if attacked else np.nan)
            sr.append(success_reduction(r[col], a) if attacked else np.nan)
    else:
        ri = sr = [np.nan] * len(summary)
    summary["ri_of_means"] = ri
    summary["success_reduction_of_means"] = sr


# The utility table's metrics (experiment/tables.py), each with its change from the undefended
# model of the same setting and that change's interval; per split protocol (split.mode).
UTILITY = ("hr", "tail_hr", "tail_share", "coverage")
UTILITY_BY_PROTOCOL = {LOO: UTILITY, RATIO: ("recall", "ndcg_set", "tail_share", "coverage")}
TAIL_SHARE = "tail_share"
# The clean-data columns of the tail-suppression rule: a defense below report.tail_floor of the
# undefended model's on either is marked. Tail share alone misses a defense that fills the
# lists with the same few tail items for everyone (FilmTrust, share_prior: tail share 232 %,
# coverage 36 % of the undefended model's; docs/tail-utility.md).
TAIL_RULE = (TAIL_SHARE, "coverage")


def _add_tail_suppression(summary: pd.DataFrame, k: int, floor: float) -> None:
    """Per row: the defense's clean-data tail_share@K and coverage@K as shares of the
    undefended model's (same dataset, model and target kind; ``clean_tail_share_ratio``,
    ``clean_coverage_ratio``) and the tail-suppression flag ``tail_suppressed`` (either ratio
    below ``report.tail_floor``; blank where a clean cell is missing). Its robustness ratios
    carry ‡ in the tables: a defense that stopped recommending the long tail (or all but a
    few of its items) is not robust on rarely rated targets, it hides them."""
    records = summary.to_dict("records")
    keys = [tuple(r[c] for c in BASE) for r in records]
    ratios = {}
    for metric in TAIL_RULE:
        col = f"{metric}@{k}_mean"
        if col not in summary:
            ratios[metric] = [np.nan] * len(records)
            continue
        clean = {tuple(r[c] for c in BASE) + (r["defense"], r["defense_params"]): r[col]
                 for r in records if r["attack"] == ORIGIN}
        ratios[metric] = []
        for base, r in zip(keys, records):
            mine = clean.get(base + (r["defense"], r["defense_params"]), np.nan)
            undefended = clean.get(base + (UNDEFENDED, ""), np.nan)
            ratios[metric].append(mine / undefended if not (_nan(mine) or _nan(undefended))
                                  and undefended > 0 else np.nan)
    flags = []
    for n in range(len(records)):
        known = [ratios[m][n] for m in TAIL_RULE if not _nan(ratios[m][n])]
        flags.append(bool(min(known) < floor) if len(known) == len(TAIL_RULE) else None)
    for metric in TAIL_RULE:
        summary[f"clean_{metric}_ratio"] = ratios[metric]
    summary["tail_suppressed"] = pd.Series(flags, dtype=object)


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _add_significance(summary: pd.DataFrame, groups: dict, metric: str,
                      lower_is_better: bool) -> None:
    """p-value of each defended cell against the best of AT and RAT in its attack setting
    (by mean; the undefended cell when neither ran), paired over seeds; stars mark
    significant improvements only."""
    mean = f"{metric}_mean"
    by_setting: dict[tuple, list[dict]] = {}
    records = summary.to_dict("records")
    for rec in records:
        by_setting.setdefault(tuple(rec[c] for c in SETTING), []).append(rec)
    names, pvalues, marks = [], [], []
    for rec in records:
        base = None
        if rec["defense"] != UNDEFENDED and mean in rec:
            peers = by_setting[tuple(rec[c] for c in SETTING)]
            candidates = [p for p in peers if p["defense"] in BASELINES
                          and not math.isnan(p.get(mean, np.nan))]
            if candidates:
                pick = min if lower_is_better else max
                base = pick(candidates, key=lambda p: p[mean])
            else:
                base = next((p for p in peers if p["defense"] == UNDEFENDED), None)
        if base is None or base is rec:
            names.append("")
            pvalues.append(np.nan)
            marks.append("")
            continue
        mine = groups.get(tuple(rec[c] for c in COORDS))
        theirs = groups.get(tuple(base[c] for c in COORDS))
        p = np.nan
        if mine is not None and theirs is not None:
            p = paired_over_seeds(mine, theirs, metric)[0]
        better = (rec[mean] < base[mean]) if lower_is_better else (rec[mean] > base[mean])
        names.append(variant_name(base["defense"], base["defense_params"]))
        pvalues.append(p)
        marks.append(stars(p) if better else "")
    summary[f"baseline_{metric}"] = names
    summary[f"p_{metric}"] = pvalues
    summary[f"stars_{metric}"] = marks


def paired_over_seeds(mine: pd.DataFrame, theirs: pd.DataFrame, column: str
                      ) -> tuple[float, pd.Index]:
    """Paired t-test p-value of two cells' runs in ``column`` over the seeds both ran (NaN
    with fewer than two), and those seeds."""
    a = mine.set_index("repeat")[column].astype(float)
    b = theirs.set_index("repeat")[column].astype(float)
    common = a.index.intersection(b.index)
    return paired_p_value(a.loc[common].to_numpy(), b.loc[common].to_numpy()), common


def variant_name(defense: str, params: str) -> str:
    return defense + (f" ({params})" if params else "")


# ----------------------------------------------------------------------------- intervals

ATTACK_METRIC = METRICS["target_hr"]   # the attack's gain and each defense's change are in it


def tested_metrics(protocol: str | None = None) -> list[Metric]:
    """The metrics compared with the baselines and with the undefended model, the attack's
    metric first (with ``protocol``: those computed under it)."""
    tested = [m for m in METRICS.values() if m.tested
              and (protocol is None or m.applies_to(protocol))]
    return sorted(tested, key=lambda m: m is not ATTACK_METRIC)


def _load_outcomes(cells_dir: Path | None, cell: str) -> dict | None:
    """The per-user outcomes stored with a cell (those its metrics' intervals resample)."""
    if cells_dir is None or not isinstance(cell, str) or not cell:
        return None
    arrays = load_npz(Path(cells_dir) / f"{cell}.npz")
    if arrays is None:
        return None
    found = {key: arrays[key] for m in interval_metrics() for key in m.stored_keys()
             if key in arrays}
    return found or None


def _units(found: dict) -> tuple[int, int]:
    """(users, targets) of one seed's stored outcomes: the units the block resamples."""
    pairs = [found[m.outcome] for m in interval_metrics()
             if m.interval == TARGET_PAIRS and m.outcome in found]
    n_users = next(len(v) for v in found.values() if np.ndim(v) >= 1)
    return n_users, (pairs[0].shape[1] if pairs else 1)


def _block_seed(seed: int, block: tuple, seeds: tuple) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, "bootstrap", *map(str, block), *seeds))


class _Intervals:
    """Per block: each cell's per-seed outcomes and the block's resampling weights per set of
    seeds (cells with the same seeds share them, which pairs their differences)."""

    def __init__(self, runs: pd.DataFrame, options: IntervalOptions) -> None:
        self.options = options
        self.outcomes: dict[tuple, dict[int, dict]] = {}
        self._boot: dict[tuple, BlockBootstrap] = {}
        cells = runs["cell"] if "cell" in runs else pd.Series([None] * len(runs))
        for rec, cell in zip(runs[COORDS + ["repeat"]].itertuples(index=False), cells):
            found = _load_outcomes(options.cells_dir, cell)
            if found is not None:
                self.outcomes.setdefault(tuple(rec[:-1]), {})[int(rec[-1])] = found

    def _bootstrap(self, block: tuple, seeds: tuple, shapes: list) -> BlockBootstrap:
        key = (block, seeds)
        if key not in self._boot:
            self._boot[key] = BlockBootstrap(shapes, self.options.bootstrap,
                                             _block_seed(self.options.seed, block, seeds))
        return self._boot[key]

    def compare(self, cells: list[tuple], weights: list[float], metric: Metric,
                groups: dict, column: str) -> tuple[Interval, str]:
        """Interval of Σ weights · metric over ``cells`` (same block), over the seeds all of
        them ran: the block bootstrap where every such seed has per-user outcomes, else a t
        interval over the seeds' values (``column`` of runs). Returns it and the method."""
        level = self.options.level
        frames = [groups.get(c) for c in cells]
        if any(f is None for f in frames):
            return Interval(math.nan, math.nan, math.nan), ""
        seeds = sorted(set.intersection(*(set(f["repeat"].astype(int)) for f in frames)))
        if not seeds:
            return Interval(math.nan, math.nan, math.nan), ""
        stored = [self.outcomes.get(c, {}) for c in cells]
        keys = metric.stored_keys()
        if all(s in found and all(key in found[s] for key in keys)
               for found in stored for s in seeds):
            arms = [[found[s] for found in stored] for s in seeds]
            shapes = [_units(arms[n][0]) for n in range(len(seeds))]
            boot = self._bootstrap(cells[0][:len(BASE)], tuple(seeds), shapes)
            return boot.interval(arms, weights, metric, level), "bootstrap"
        per_seed = sum(w * f.set_index("repeat")[column].astype(float).loc[seeds].to_numpy()
                       for f, w in zip(frames, weights))
        return seed_t_interval(per_seed, level), "seeds"

    def p_value(self, cell: tuple, base: tuple, metric: Metric, groups: dict, column: str
                ) -> tuple[float, str]:
        """Two-sided p-value of cell vs base in ``metric``: paired t-test over their common
        seeds when there are two or more, else the per-user test of the one seed."""
        a, b = groups.get(cell), groups.get(base)
        if a is None or b is None:
            return math.nan, ""
        p, common = paired_over_seeds(a, b, column)
        if len(common) >= 2:
            return p, "seeds"
        if len(common) == 1:
            seed = int(common[0])
            mine, theirs = self.outcomes.get(cell, {}), self.outcomes.get(base, {})
            if metric.outcome in mine.get(seed, {}) and metric.outcome in theirs.get(seed, {}):
                return paired_user_p_value(mine[seed], theirs[seed], metric), "users"
        return math.nan, ""


def _add_intervals(summary: pd.DataFrame, runs: pd.DataFrame, groups: dict, k: int,
                   options: IntervalOptions) -> None:
    """Interval columns ``<metric>_low/_high`` and ``interval`` (bootstrap | seeds); per attack
    setting ``attack_gain`` (undefended − Origin target HR, with interval) and
    ``attack_effective``; per defended cell ``change_target_hr@K`` (defense − undefended, with
    interval) and the test against the undefended model, Holm-corrected per block."""
    ix = _Intervals(runs, options)
    thr = ATTACK_METRIC.column(k)
    protocol, test_k = options.protocol, options.test_k
    records = summary.to_dict("records")
    keys = [tuple(r[c] for c in COORDS) for r in records]
    columns: dict[str, list] = {}

    def put(name: str, n: int, value) -> None:
        columns.setdefault(name, [np.nan] * len(records))[n] = value

    methods = [""] * len(records)
    for n, key in enumerate(keys):
        if key not in groups:
            continue
        for metric in interval_metrics(protocol):
            name = metric.column(k, test_k)
            if name not in runs:
                continue
            interval, method = ix.compare([key], [1.0], metric, groups, name)
            put(f"{name}_low", n, interval.low)
            put(f"{name}_high", n, interval.high)
            methods[n] = methods[n] or method
    summary["interval"] = methods
    if thr not in runs:
        return
    # The attack's gain over Origin, per attack setting (on every cell of the setting).
    gains: dict[tuple, tuple[Interval, bool | None]] = {}
    for key in keys:
        setting = key[:len(SETTING)]
        if key[len(BASE)] == ORIGIN or setting in gains:
            continue
        undefended = setting + (UNDEFENDED, "")
        origin = key[:len(BASE)] + (ORIGIN, 0.0, 0.0, "", UNDEFENDED, "")
        interval, _ = ix.compare([undefended, origin], [1.0, -1.0], ATTACK_METRIC, groups, thr)
        effective = (None if math.isnan(interval.low) else
                     bool(interval.low > 0 and interval.estimate >= options.min_gain))
        gains[setting] = (interval, effective)
    summary["attack_effective"] = pd.Series([None] * len(records), dtype=object)
    for n, key in enumerate(keys):
        found = gains.get(key[:len(SETTING)])
        if found is None:
            continue
        interval, effective = found
        put("attack_gain", n, interval.estimate)
        put("attack_gain_low", n, interval.low)
        put("attack_gain_high", n, interval.high)
        summary.at[n, "attack_effective"] = effective
    # Each defense against the undefended model of its setting (clean data: Origin).
    utility = [METRICS[name] for name in UTILITY_BY_PROTOCOL[protocol] if name in METRICS
               and METRICS[name].column(k, test_k) in runs]
    for n, key in enumerate(keys):
        if key[-2] == UNDEFENDED or key not in groups:
            continue
        base = key[:len(SETTING)] + (UNDEFENDED, "")
        for metric in utility:
            name = metric.column(k, test_k)
            interval, _ = ix.compare([key, base], [1.0, -1.0], metric, groups, name)
            put(f"change_{name}", n, interval.estimate)
            put(f"change_{name}_low", n, interval.low)
            put(f"change_{name}_high", n, interval.high)
        interval, _ = ix.compare([key, base], [1.0, -1.0], ATTACK_METRIC, groups, thr)
        put(f"change_{thr}", n, interval.estimate)
        put(f"change_{thr}_low", n, interval.low)
        put(f"change_{thr}_high", n, interval.high)
        for metric in tested_metrics(protocol):
            name = metric.column(k, test_k)
            if name in runs:
                p, test = ix.p_value(key, base, metric, groups, name)
                put(f"p_vs_undefended_{name}", n, p)
                columns.setdefault("test_vs_undefended", [""] * len(records))[n] = test
    for name in [c for c in columns if c.startswith("p_vs_undefended_")]:
        adjusted = np.full(len(records), np.nan)
        for block in dict.fromkeys(key[:len(BASE)] for key in keys):
            rows = [n for n, key in enumerate(keys) if key[:len(BASE)] == block]
            adjusted[rows] = holm([columns[name][n] for n in rows])
        columns[name.replace("p_vs_", "p_holm_vs_")] = list(adjusted)
    for name, values in columns.items():
        summary[name] = values
