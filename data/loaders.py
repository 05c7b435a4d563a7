"""Parsers and preprocessing of the raw rating files (protocol.md §1).

Users and items are re-indexed densely from 0 in ascending order of their raw ids after
filtering, so ML-100K item k becomes k − 1, as in the TCD authors' files.

``load_file`` reads your own delimited ratings file (``dataset: file``; the ``dataset.*`` keys
are documented in ``utils/config.py`` and the README).
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
    # Raw ids stay strings when they are tokens ("u12", only `dataset: file`), else int64.
    raw_items = items.astype(str) if items.dtype.kind in "OUS" else items.astype(np.int64)
    return RatingData(name, Interactions(user_index, item_index, ratings), len(users),
                      len(items), RatingScale(max_rating, steps), raw_items)


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


# ----------------------------------------------------------------------------- dataset: file

def decode_sep(sep: str) -> str:
    """``dataset.sep`` with a literal backslash-t (``\\t`` unquoted in YAML or on the command
    line) read as a tab."""
    return sep.replace("\\t", "\t")


def _raw_ids(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ids as int64 when every one is an integer, else as strings (``u12``); and which tokens
    are integers."""
    ids = np.asarray(tokens, dtype=str)
    integer = pd.Series(ids, dtype=str).str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    if integer.all():
        try:
            return ids.astype(np.int64), integer
        except (OverflowError, ValueError):
            pass  # beyond int64: keep the tokens
    return ids, integer


def load_file(cfg) -> RatingData:
    """``dataset: file``: any delimited ratings file (``cfg`` is the ``dataset`` section).

    Lines are split on ``cfg.sep`` into ``cfg.columns`` (user, item, rating, timestamp are
    read; other names and extra trailing fields are skipped; blank lines are skipped; with
    ``cfg.header`` the first line is). Without a rating column every row is the top rating
    (implicit feedback). A user–item pair given twice follows ``cfg.duplicates`` (file order);
    then users with fewer than ``min_user_ratings`` ratings are dropped, then items with fewer
    than ``min_item_ratings`` — once each, not until stable. Every problem is a one-line
    :class:`DatasetError` naming the file, the line and the fix.
    """
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; set dataset.path to your ratings file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save the ratings file "
                           "as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror}); check the file and "
                           "dataset.path") from None
    sep, columns = decode_sep(cfg.sep), list(cfg.columns)
    # Vectorized string work (pandas), no Python loop over the lines.
    lines = pd.Series(text.split("\n"), dtype=str)
    first = 1 if cfg.header else 0
    body = lines.iloc[first:]
    body = body[body.str.strip() != ""].str.rstrip("\r")
    line_of = body.index.to_numpy(dtype=np.int64) + 1
    if body.empty:
        raise DatasetError(f"{path}: holds no ratings; check the file and dataset.header")
    fields = body.str.split(sep, regex=False, expand=True)
    counts = fields.notna().sum(axis=1).to_numpy()
    short = np.flatnonzero(counts < len(columns))
    if len(short):
        j = short[0]
        raise DatasetError(
            f"{path}: line {line_of[j]} has {counts[j]} field(s) separated by {sep!r}, fewer "
            f"than the {len(columns)} of dataset.columns {columns}; fix the line, or set "
            "dataset.sep / dataset.columns to match the file")
    hint = " (a header line? set dataset.header: true)"
    at = {col: columns.index(col) for col in ("user", "item", "rating", "timestamp")
          if col in columns}
    tokens = {col: fields[j].str.strip().tolist() for col, j in at.items()}
    for col in ("user", "item"):
        empty = np.flatnonzero(fields[at[col]].str.strip().to_numpy() == "")
        if len(empty):
            raise DatasetError(f"{path}: line {line_of[empty[0]]} has an empty {col} id; fix "
                               "the line")
    values = {}
    for col in ("rating", "timestamp"):
        if col in tokens:
            values[col] = pd.to_numeric(pd.Series(tokens[col], dtype=str), errors="coerce"
                                        ).to_numpy(dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(values[col]))
            if len(bad):
                j = bad[0]
                raise DatasetError(
                    f"{path}: line {line_of[j]} has a non-numeric {col} {tokens[col][j]!r}; "
                    f"fix the line or dataset.columns{hint if line_of[j] == 1 else ''}")
    top = float(cfg.max_rating)
    steps = int(cfg.rating_steps or round(top))
    if "rating" in values:
        rating = values["rating"]
        level = rating / top * steps
        outside = (rating <= 0) | (rating > top * (1 + 1e-9))
        bad = np.flatnonzero(outside | (np.abs(level - np.round(level)) > 1e-6))
        grid = (f"{top:g}" if steps == 1 else f"{top / steps:g}, {2 * top / steps:g}"
                if steps == 2 else f"{top / steps:g}, {2 * top / steps:g}, …, {top:g}")
        if len(bad) and outside[bad[0]]:
            j = bad[0]
            raise DatasetError(f"{path}: line {line_of[j]} has rating {tokens['rating'][j]}, "
                               f"outside (0, {top:g}]; fix the line or set dataset.max_rating")
        if len(bad):
            j = bad[0]
            raise DatasetError(
                f"{path}: line {line_of[j]} has rating {tokens['rating'][j]}, not on the grid "
                f"of {steps} levels ({grid}); fix the line or set dataset.rating_steps")
        rating = np.round(level) * top / steps
    else:
        rating = np.full(len(fields), top)  # implicit feedback: every row is the top rating
    ids = {}
    for col in ("user", "item"):
        ids[col], integer = _raw_ids(tokens[col])
        if line_of[0] == 1 and len(integer) > 1 and not integer[0] and integer[1:].all():
            raise DatasetError(f"{path}: line 1 looks like a header ({col} {tokens[col][0]!r} "
                               "among integer ids); set dataset.header: true")
    frame = pd.DataFrame({"user": ids["user"], "item": ids["item"], "rating": rating})
    pairs = frame.duplicated(["user", "item"], keep="first").to_numpy()
    if pairs.any():
        if cfg.duplicates == "error":
            j = np.flatnonzero(pairs)[0]
            u, i = frame["user"].iat[j], frame["item"].iat[j]
            k = np.flatnonzero(((frame["user"] == u) & (frame["item"] == i)).to_numpy())[0]
            raise DatasetError(
                f"{path}: user {u} rates item {i} twice (lines {line_of[k]} and {line_of[j]}); "
                "remove one, or set dataset.duplicates: first|last to keep one")
        frame = frame.drop_duplicates(["user", "item"], keep=cfg.duplicates)
    for col, least in (("user", cfg.min_user_ratings), ("item", cfg.min_item_ratings)):
        if least > 1:
            frame = frame[frame.groupby(col)["rating"].transform("size") >= least]
            if frame.empty:
                raise DatasetError(
                    f"{path}: no ratings left after dataset.min_{col}_ratings={least} (no "
                    f"{col} has {least} ratings{' from the users kept' if col == 'item' else ''}"
                    f"); lower dataset.min_{col}_ratings")
    return reindex("file", frame, top, steps)
