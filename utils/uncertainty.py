"""Confidence intervals of a cell's metrics (those with an interval kind, ``utils/metrics/``:
HR@K, target HR@K, …) that account for both sources of variation: the seeds (each draws its own
split, targets, fake profiles and initialization) and, within a seed, the users and the targets
the proportion is measured on.

The interval is a two-stage (hierarchical) percentile bootstrap. One replicate draws the seeds
with replacement, then for every drawn seed resamples its real users and its targets with
replacement and recomputes the metric on the per-user outcomes stored with each cell
(``EvalResult.outcomes``: hit, miss or not counted per user and per (user, target) pair); the
replicate is the mean over the drawn seeds, like the table's mean. Resampling users and targets
matters because one seed's target HR is a mean over five targets whose hit rates differ by
orders of magnitude; resampling seeds because the poison and the model change with the seed.
Two-stage resampling counts the within-seed noise twice (once inside each seed's value, once in
the seed draw), so with many seeds it is slightly conservative; with one seed it is the plain
user × target bootstrap.

Every cell of one block (dataset, model, feedback, target kind) shares its seeds' users and
targets, so a block draws its resampling weights once and applies them to every cell: the
interval of a difference between two cells (attack − Origin, defense − attack) is then a paired
bootstrap, and the cost per cell is a few small matrix products.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.metrics import METRICS, NONE, TARGET_PAIRS, Metric, Resample


def metric_value(outcomes: dict, metric: str | Metric, user_w: np.ndarray | None = None,
                 target_w: np.ndarray | None = None) -> np.ndarray | float:
    """``metric`` (a registered name or a :class:`Metric` with an interval) of one seed's
    stored outcomes, as the evaluator computes it (``utils/metrics/``). With user and target
    weights (n, U) and (n, T), the n weighted values."""
    metric = resolve(metric)
    if user_w is None:
        values = np.asarray(outcomes[metric.outcome])
        n_targets = values.shape[1] if metric.interval == TARGET_PAIRS else 1
        return float(metric.resampled(outcomes, Resample.identity(len(values), n_targets))[0])
    return metric.resampled(outcomes, Resample(user_w, target_w))


def resolve(metric: str | Metric) -> Metric:
    """The registered metric of that name (or the metric itself); it must have an interval."""
    found = METRICS.get(metric) if isinstance(metric, str) else metric
    if found is None or found.interval == NONE:
        raise ValueError(f"no interval for metric {metric!r}")
    return found


@dataclass
class Interval:
    estimate: float   # mean over seeds of the full-sample values
    low: float
    high: float


class BlockBootstrap:
    """The resampling weights of one block and one set of seeds (see the module docstring).

    ``shapes`` gives (n_users, n_targets) per seed, in seed order; ``rng`` is derived from the
    master seed and the block, so intervals are reproducible.
    """

    def __init__(self, shapes: list[tuple[int, int]], n_boot: int, rng: np.random.Generator):
        self.shapes, self.n_boot = shapes, n_boot
        n_seeds = len(shapes)
        picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        # Per seed: the replicate slots (flat positions of ``picks``) it fills, and one fresh
        # user and target resample per slot.
        self.slots, self.user_w, self.target_w = [], [], []
        for s, (n_users, n_targets) in enumerate(shapes):
            slots = np.flatnonzero(picks.ravel() == s)
            self.slots.append(slots)
            self.user_w.append(_resample_counts(rng, len(slots), n_users))
            self.target_w.append(_resample_counts(rng, len(slots), max(n_targets, 1)))
        # Per seed: its weights, with the weighted counts of the users who count cached (every
        # cell of a seed shares them).
        self.weights = [Resample(u, t) for u, t in zip(self.user_w, self.target_w)]

    def replicates(self, arms: list[list[dict]], weights: list[float], metric: str | Metric
                   ) -> np.ndarray:
        """Bootstrap replicates of Σ_a weights[a] · metric(arm a), averaged over the seeds:
        ``arms[s]`` holds seed s's outcomes of each arm (cells aligned on users and
        targets). One arm with weight 1 is the cell's own metric; two arms with 1, −1 their
        paired difference."""
        metric = resolve(metric)
        n_seeds = len(self.shapes)
        flat = np.zeros(self.n_boot * n_seeds)
        for s in range(n_seeds):
            values = np.zeros(len(self.slots[s]))
            for arm, weight in zip(arms[s], weights):
                values += weight * metric.resampled(arm, self.weights[s])
            flat[self.slots[s]] = values
        return flat.reshape(self.n_boot, n_seeds).mean(1)

    def interval(self, arms: list[list[dict]], weights: list[float], metric: str | Metric,
                 level: float) -> Interval:
        estimate = float(np.mean([sum(w * metric_value(arm, metric)
                                      for arm, w in zip(seed_arms, weights))
                                  for seed_arms in arms]))
        replicates = self.replicates(arms, weights, metric)
        if resolve(metric).debias and np.isfinite(replicates).any():
            # A statistic of the lists taken together (coverage, Gini) is biased under
            # resampling (a resample shows fewer distinct users): shift the replicates by the
            # bootstrap's estimate of that bias, mean(replicates) − estimate.
            replicates = replicates - (np.nanmean(replicates) - estimate)
            if list(weights) == [1.0] and resolve(metric).value_range is not None:
                replicates = np.clip(replicates, *resolve(metric).value_range)
        low, high = percentile_interval(replicates, level)
        return Interval(estimate, low, high)


def _resample_counts(rng: np.random.Generator, n_draws: int, size: int) -> np.ndarray:
    """(n_draws, size) counts of a resample with replacement of ``size`` units: how often each
    unit was drawn (a multinomial with equal probabilities, via one bincount)."""
    if n_draws == 0:
        return np.zeros((0, size))
    idx = rng.integers(0, size, size=(n_draws, size))
    idx += np.arange(n_draws)[:, None] * size
    # float32 is exact here: counts and hit sums stay far below 2**24.
    return np.bincount(idx.ravel(), minlength=n_draws * size).reshape(n_draws, size
                                                                       ).astype(np.float32)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    replicates = replicates[~np.isnan(replicates)]
    if not len(replicates):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def seed_t_interval(values: np.ndarray, level: float) -> Interval:
    """Fallback when a cell has no per-user outcomes (cells of older versions): a t interval
    over the seeds' values (NaN bounds with fewer than two seeds)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return Interval(float("nan"), float("nan"), float("nan"))
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, float("nan"), float("nan"))
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(
        len(values))
    return Interval(mean, float(mean - half), float(mean + half))
