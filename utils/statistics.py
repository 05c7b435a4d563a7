"""Aggregation across seeds: mean, std (ddof 1), n; robustness improvement (RI); attack-success
reduction; paired t-tests with significance stars (protocol.md §4–5)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from utils.metrics import METRICS

RI_MIN_GAIN = 1e-4


def robustness_improvement(hr_def: float, hr_attack: float, hr_origin: float) -> float:
    """RI = 1 − (HR_def − HR_origin) / (HR_attack − HR_origin); NaN (reported blank) when the
    attack gained nothing (HR_attack − HR_origin ≤ 1e-4)."""
    gain = hr_attack - hr_origin
    if not gain > RI_MIN_GAIN:
        return float("nan")
    return 1.0 - (hr_def - hr_origin) / gain


def success_reduction(asr_def: float, asr_none: float) -> float:
    """Attack-success reduction 1 − ASR_def / ASR_none (NaN when ASR_none is 0)."""
    if not asr_none > 0:
        return float("nan")
    return 1.0 - asr_def / asr_none


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value of a vs b (pairs share seed, split, targets, poison).
    NaN with fewer than two complete pairs; identical differences give 0 (a constant nonzero
    shift) or 1 (no difference), where the t statistic is undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) != len(b):
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return float("nan")
    diff = a - b
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        return 0.0 if abs(diff[0]) > 1e-12 else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def stars(p: float) -> str:
    """``*``, ``**``, ``***`` for p < 0.05, 0.01, 0.001 (the TCD tables' convention)."""
    if p is None or math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def mean_std_n(values: pd.Series) -> tuple[float, float, int]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    return (float(values.mean()) if n else float("nan")), std, n


def user_contributions(outcomes_a: dict, outcomes_b: dict, metric) -> np.ndarray:
    """Per real user, their share of the difference metric(a) − metric(b) between two cells of
    one seed (same users, test items, targets), from their stored outcomes: the metric's own
    split of the difference (``Metric.user_contributions``: HR sums (hit_a − hit_b) / n over
    users with a test item; target HR sums (hit_a − hit_b) / (T · n_t) over each target's n_t
    eligible users), so the contributions add up to the difference exactly. Users who count for
    nothing (no test item / no eligible target) are left out. ``metric``: a registered name or
    a metric."""
    metric = METRICS[metric] if isinstance(metric, str) else metric
    try:
        return metric.user_contributions(outcomes_a, outcomes_b)
    except NotImplementedError:
        raise ValueError(f"no per-user test for metric {metric.name!r}") from None


def paired_user_p_value(outcomes_a: dict, outcomes_b: dict, metric: str) -> float:
    """Two-sided p-value that two cells of one seed differ in ``metric``, from the per-user
    outcomes (for one seed, where a test across seeds is impossible): a one-sample t-test that
    the users' contributions to the difference (``user_contributions``) have mean 0. Users are
    the independent units; a user's targets are not (they share the user), so pairs are not."""
    contributions = user_contributions(outcomes_a, outcomes_b, metric)
    if len(contributions) < 2:
        return float("nan")
    if np.allclose(contributions, contributions[0], rtol=0.0, atol=1e-15):
        return 0.0 if abs(contributions[0]) > 1e-15 else 1.0
    return float(stats.ttest_1samp(contributions, 0.0).pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of one family of tests (NaN stays NaN and is not
    counted): the i-th smallest of m p-values becomes max over j ≤ i of (m − j + 1) · p_(j),
    capped at 1. Controls the family-wise error rate under any dependence."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if not len(valid):
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out
