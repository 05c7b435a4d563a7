"""Parsers and preprocessing of the raw rating files (protocol.md §1).

Users and items are re-indexed densely from 0 in ascending order of their raw ids after
filtering, so ML-100K item k becomes k − 1, as in the TCD authors' files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .ratings import Interactions, RatingData, RatingScale
from .sources import DatasetError


def _read_table(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep=sep, header=None, names=names, engine="python"
                            if len(sep) > 1 else "c", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot parse ({str(exc).splitlines()[0]}); "
                           "replace it with the official file") from None
    out = {}
    for col in ("user", "item", "rating"):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            raise DatasetError(f"{path}: line {bad[0] + 1} has a non-numeric {col} "
                               f"{frame[col].iloc[bad[0]]!r}; replace it with the official file")
        out[col] = values.to_numpy()
    return pd.DataFrame(out)


def reindex(name: str, frame: pd.DataFrame, max_rating: float, steps: int) -> RatingData:
    if frame.empty:
        raise DatasetError(f"dataset {name}: no ratings left after preprocessing; "
                           "check the raw file and the filters")
    users, user_index = np.unique(frame["user"].to_numpy(), return_inverse=True)
    items, item_index = np.unique(frame["item"].to_numpy(), return_inverse=True)
    ratings = frame["rating"].to_numpy(dtype=np.float64) / max_rating
    if ratings.min() <= 0 or ratings.max() > 1 + 1e-9:
        raise DatasetError(f"dataset {name}: ratings outside (0, {max_rating}]; "
                           "replace the raw file with the official one")
    return RatingData(name, Interactions(user_index, item_index, ratings), len(users),
                      len(items), RatingScale(max_rating, steps), items.astype(np.int64))


def load_filmtrust(path: Path, min_user_ratings: int = 15) -> RatingData:
    frame = _read_table(path, " ", ["user", "item", "rating"])
    frame = frame.drop_duplicates(["user", "item"], keep="last")
    counts = frame.groupby("user")["item"].transform("size")
    frame = frame[counts >= min_user_ratings]  # items left with none vanish in reindex
    return reindex("filmtrust", frame, 4.0, 8)


def load_ml100k(path: Path) -> RatingData:
    frame = _read_table(path, "\t", ["user", "item", "rating", "time"])
    return reindex("ml-100k", frame, 5.0, 5)


def load_ml1m(path: Path) -> RatingData:
    frame = _read_table(path, "::", ["user", "item", "rating", "time"])
    return reindex("ml-1m", frame, 5.0, 5)
