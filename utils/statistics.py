"""Aggregation across seeds: mean, std (ddof 1), n; robustness improvement (RI); attack-success
reduction; paired t-tests with significance stars (protocol.md §4–5)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

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
