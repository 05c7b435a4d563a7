"""How well a defense's distrust matches the fake users (threat-model.md §3)."""
from __future__ import annotations

import numpy as np


def detection_metrics(distrusted_rows: np.ndarray, distrusted_users: np.ndarray | None,
                      train_users: np.ndarray, n_real_users: int,
                      train_items: np.ndarray | None = None,
                      targets: np.ndarray | None = None) -> dict[str, float]:
    """How well a defense's distrust matches the fake users (threat-model.md §3): computed by
    the evaluation side, which knows that users ≥ ``n_real_users`` are fake.

    Rows (over the training rows the defense was given): precision = fake share of the
    distrusted rows; recall = distrusted share of the fake rows; fpr = distrusted share of the
    real users' rows; payload_recall = distrusted share of the fake rows on the targets (the
    rows that promote them). Users (defenses that judge whole users): the same over users, fpr
    over real users. Undefined ratios (nothing distrusted, no fake rows) are NaN, never 0.
    """
    fake = np.asarray(train_users) >= n_real_users
    rows = np.asarray(distrusted_rows, dtype=bool)
    out = {"detect_rows": float(rows.sum())}
    out.update(_precision_recall_fpr(rows, fake, "detect"))
    if targets is not None and train_items is not None:
        payload = fake & np.isin(train_items, targets)
        out["detect_payload_recall"] = (float((rows & payload).sum() / payload.sum())
                                        if payload.any() else float("nan"))
    if distrusted_users is not None:
        flagged = np.asarray(distrusted_users, dtype=bool)
        is_fake = np.arange(len(flagged)) >= n_real_users
        out["detect_users"] = float(flagged.sum())
        out.update(_precision_recall_fpr(flagged, is_fake, "detect_user"))
    return out


def _precision_recall_fpr(flagged: np.ndarray, fake: np.ndarray, prefix: str) -> dict:
    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    hits = int((flagged & fake).sum())
    return {f"{prefix}_precision": ratio(hits, int(flagged.sum())),
            f"{prefix}_recall": ratio(hits, int(fake.sum())),
            f"{prefix}_fpr": ratio(int((flagged & ~fake).sum()), int((~fake).sum()))}
