"""Parsers and preprocessing of the raw rating files (protocol.md §1).

Users and items are re-indexed densely from 0 in ascending order of their raw ids after
filtering, so ML-100K item k becomes k − 1, as in the TCD authors' files.

``load_file`` reads your own delimited ratings file (``dataset: file``; the ``dataset.*`` keys
are documented in ``utils/config.py`` and the README); ``load_split_files`` a fixed train / test
split from two such files (``dataset.split_files``, e.g. the TCD authors' files).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from utils.config import decode_sep

from .ratings import Interactions, RatingData, RatingScale
from .sources import DatasetError
from .split import PresplitData


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


def _read_text(path: Path, key: str) -> str:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; set {key} to your ratings file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save the ratings file "
                           "as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror}); check the file and "
                           f"{key}") from None


def parse_ratings_file(path: Path, cfg, key: str = "dataset.path"
                       ) -> tuple[dict[str, list[str]], np.ndarray, np.ndarray]:
    """The lines of a delimited ratings file as read by ``dataset: file`` (``cfg`` is the
    ``dataset`` section: sep, columns, header, max_rating, rating_steps): the user and item
    tokens, the ratings on the file's scale (snapped to the grid; the top rating when there is
    no rating column) and each row's line number. Every problem is a one-line
    :class:`DatasetError` naming the file, the line and the fix (``key``: the config key that
    names the file)."""
    text = _read_text(path, key)
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
        if len(bad) and outside[bad[0]]:
            j = bad[0]
            fix = ("ratings are positive: fix the line" if rating[j] <= 0 else
                   "fix the line or set dataset.max_rating (the file's ratings reach "
                   f"{rating.max():g}: dataset.max_rating={rating.max():g} if that is the top "
                   "of its scale)")
            raise DatasetError(f"{path}: line {line_of[j]} has rating {tokens['rating'][j]}, "
                               f"outside (0, {top:g}]; {fix}")
        if len(bad):
            # A valid rating between the levels (half stars on 5 levels): the fewest levels
            # that hold every rating of the file is the fix, not an edit of the line.
            j, fits = bad[0], fitting_steps(rating, top)
            fix = (f"every rating of the file is on the grid of {fits} levels "
                   f"({_levels(top, fits)}): set dataset.rating_steps={fits}" if fits else
                   f"no grid of up to {MAX_STEPS} levels holds every rating of the file: round "
                   "its ratings to one (max_rating/steps · 1..steps)")
            raise DatasetError(
                f"{path}: line {line_of[j]} has rating {tokens['rating'][j]}, not on the grid "
                f"of {steps} levels ({_levels(top, steps)}); {fix}")
        rating = np.round(level) * top / steps
    else:
        rating = np.full(len(fields), top)  # implicit feedback: every row is the top rating
    return {col: tokens[col] for col in ("user", "item")}, rating, line_of


MAX_STEPS = 1000  # the largest dataset.rating_steps (utils/config.py)


def _levels(top: float, steps: int) -> str:
    """The rating levels max_rating/steps · 1..steps, shortened: ``0.5, 1, …, 5``."""
    if steps == 1:
        return f"{top:g}"
    if steps == 2:
        return f"{top / 2:g}, {top:g}"
    return f"{top / steps:g}, {2 * top / steps:g}, …, {top:g}"


def fitting_steps(rating: np.ndarray, top: float) -> int | None:
    """The fewest rating levels (``top/steps · 1..steps``) that hold every rating in (0, top]
    of ``rating``, e.g. 10 for half stars up to 5; None when more than MAX_STEPS would."""
    from fractions import Fraction
    from math import lcm

    values = np.unique(rating[(rating > 0) & (rating <= top * (1 + 1e-9))] / top)
    steps = 1
    for value in values:  # stops at the first value no grid holds (continuous ratings)
        level = float(value) * steps
        if abs(level - round(level)) <= 1e-6:
            continue
        denominator = Fraction(float(value)).limit_denominator(MAX_STEPS).denominator
        steps = lcm(steps, denominator)
        level = float(value) * steps
        if steps > MAX_STEPS or abs(level - round(level)) > 1e-6:
            return None
    level = values * steps
    return steps if np.all(np.abs(level - np.round(level)) <= 1e-6) else None


def _drop_duplicates(path: Path, frame: pd.DataFrame, line_of: np.ndarray, duplicates: str
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """A user–item pair given twice in one file: an error, or keep the first / last."""
    pairs = frame.duplicated(["user", "item"], keep="first").to_numpy()
    if not pairs.any():
        return frame, line_of
    if duplicates == "error":
        j = np.flatnonzero(pairs)[0]
        u, i = frame["user"].iat[j], frame["item"].iat[j]
        k = np.flatnonzero(((frame["user"] == u) & (frame["item"] == i)).to_numpy())[0]
        raise DatasetError(
            f"{path}: user {u} rates item {i} twice (lines {line_of[k]} and {line_of[j]}); "
            "remove one, or set dataset.duplicates: first|last to keep one")
    keep = ~frame.duplicated(["user", "item"], keep=duplicates).to_numpy()
    return frame[keep], line_of[keep]


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
    tokens, rating, line_of = parse_ratings_file(path, cfg)
    top = float(cfg.max_rating)
    steps = int(cfg.rating_steps or round(top))
    ids = {}
    for col in ("user", "item"):
        ids[col], integer = _raw_ids(tokens[col])
        if line_of[0] == 1 and len(integer) > 1 and not integer[0] and integer[1:].all():
            raise DatasetError(f"{path}: line 1 looks like a header ({col} {tokens[col][0]!r} "
                               "among integer ids); set dataset.header: true")
    frame = pd.DataFrame({"user": ids["user"], "item": ids["item"], "rating": rating})
    frame, line_of = _drop_duplicates(path, frame, line_of, cfg.duplicates)
    for col, least in (("user", cfg.min_user_ratings), ("item", cfg.min_item_ratings)):
        if least > 1:
            frame = frame[frame.groupby(col)["rating"].transform("size") >= least]
            if frame.empty:
                raise DatasetError(
                    f"{path}: no ratings left after dataset.min_{col}_ratings={least} (no "
                    f"{col} has {least} ratings{' from the users kept' if col == 'item' else ''}"
                    f"); lower dataset.min_{col}_ratings")
    return reindex("file", frame, top, steps)


# ----------------------------------------------------------------------------- split files

# The built-in datasets after preprocessing (protocol.md §1): users, items, rating levels and
# the top rating of their own scale. Split files of these datasets in the authors' format hold
# 0-based indices into these tables (ML-100K item k is k − 1, as in ``greensun0830/TCD``).
DATASET_TABLES = {"ml-100k": (943, 1682, 5, 5.0), "filmtrust": (796, 2011, 8, 4.0),
                  "ml-1m": (6040, 3706, 5, 5.0)}


def load_split_files(cfg, name: str) -> PresplitData:
    """``dataset.split_files``: a fixed train / test split read from two files (``cfg`` is the
    ``dataset`` section; ``name`` the dataset the files split: a built-in name, or ``file``).

    Both files are parsed like ``dataset: file`` (``sep``, ``columns``, ``header``,
    ``max_rating``, ``rating_steps``; a pair given twice in one file follows ``duplicates``).
    The default format is the TCD authors' ``Data/<ds>.train.rating`` / ``.test.rating``:
    tab-separated ``user item rating``, 0-based ids, ratings stored as grid levels (FilmTrust
    ×2: ``max_rating: 8, rating_steps: 8``). With ``split_files.ids: index`` (default) the ids
    are kept as 0-based indices — below the dataset's table sizes for a built-in dataset, else
    the tables end at the largest id; with ``ids: raw`` they are re-indexed from 0 in ascending
    order over both files, like ``dataset: file``. The test file holds exactly one rating per
    user of the training file. Every problem is a one-line :class:`SplitFilesError` (a config
    error, exit code 2) naming the file, the line and the fix.
    """
    from .sources import SplitFilesError

    files = cfg.split_files
    top = float(cfg.max_rating)
    steps = int(cfg.rating_steps or round(top))
    table = DATASET_TABLES.get(name)
    if table is not None and steps != table[2]:
        raise SplitFilesError(
            f"dataset.rating_steps: {name} has {table[2]} rating levels but its split files are "
            f"read with {steps} (max_rating {top:g}); the TCD authors' files store ratings as "
            f"levels 1..{table[2]}: set dataset.max_rating: {table[2]} and "
            f"dataset.rating_steps: {table[2]}")
    parts = {}
    for role in ("train", "test"):
        path = Path(getattr(files, role)).expanduser()
        try:
            tokens, rating, line_of = parse_ratings_file(path, cfg, f"dataset.split_files.{role}")
        except SplitFilesError:
            raise
        except DatasetError as exc:
            raise SplitFilesError(str(exc)) from None
        parts[role] = [path, tokens, rating, line_of]
    sizes = {}
    if files.ids == "index":
        for col, n_max in (("user", table and table[0]), ("item", table and table[1])):
            for role in ("train", "test"):
                path, tokens, _, line_of = parts[role]
                ids, integer = _raw_ids(tokens[col])
                if not integer.all() or ids.dtype.kind not in "iu":
                    j = int(np.flatnonzero(~integer)[0]) if not integer.all() else 0
                    header = " (a header line? set dataset.header: true)" if line_of[j] == 1 else ""
                    raise SplitFilesError(
                        f"{path}: line {line_of[j]} has {col} id {tokens[col][j]!r}, not a "
                        f"0-based index{header}; set dataset.split_files.ids: raw to re-index "
                        "the files' ids")
                bad = np.flatnonzero((ids < 0) | ((ids >= n_max) if n_max else False))
                if len(bad):
                    j = bad[0]
                    span = f"0..{n_max - 1} ({name} has {n_max} {col}s)" if n_max else "≥ 0"
                    raise SplitFilesError(
                        f"{path}: line {line_of[j]} has {col} id {ids[j]}, out of range: "
                        f"0-based {col} ids lie in {span}; 1-based or raw ids: set "
                        "dataset.split_files.ids: raw")
                parts[role][1] = {**parts[role][1], col: ids}
            sizes[col] = n_max or 1 + max(int(parts[r][1][col].max()) for r in parts)
        raw_items = np.arange(sizes["item"], dtype=np.int64)
    else:
        raw_items = None
        for col in ("user", "item"):
            joined, _ = _raw_ids(parts["train"][1][col] + parts["test"][1][col])
            uniq, index = np.unique(joined, return_inverse=True)
            n_train = len(parts["train"][1][col])
            parts["train"][1] = {**parts["train"][1], col: index[:n_train]}
            parts["test"][1] = {**parts["test"][1], col: index[n_train:]}
            sizes[col] = len(uniq)
            if col == "item":
                raw_items = uniq.astype(str) if uniq.dtype.kind in "OUS" else uniq.astype(np.int64)
    frames = {}
    for role in ("train", "test"):
        path, ids, rating, line_of = parts[role]
        frame = pd.DataFrame({"user": np.asarray(ids["user"], dtype=np.int64),
                              "item": np.asarray(ids["item"], dtype=np.int64),
                              "rating": rating, "line": line_of})
        try:
            frame, _ = _drop_duplicates(path, frame, line_of, cfg.duplicates)
        except DatasetError as exc:
            raise SplitFilesError(str(exc)) from None
        frames[role] = frame
    (train_path, *_), (test_path, *_) = parts["train"], parts["test"]
    train, test = frames["train"], frames["test"]
    both = train.merge(test, on=["user", "item"], suffixes=("_train", "_test"))
    if len(both):
        rec = {k: int(v) for k, v in both.sort_values("line_test").iloc[0].items()
               if k != "rating_train" and k != "rating_test"}
        raise SplitFilesError(
            f"user {rec['user']} rates item {rec['item']} in both {train_path} (line "
            f"{rec['line_train']}) and {test_path} (line {rec['line_test']}); a held-out "
            "rating must not be in training: remove one of them")
    twice = test.duplicated("user", keep="first").to_numpy()
    if twice.any():
        j = np.flatnonzero(twice)[0]
        u = test["user"].iat[j]
        first = test["line"].to_numpy()[np.flatnonzero(test["user"].to_numpy() == u)[0]]
        raise SplitFilesError(
            f"{test_path}: user {u} has two test rows (lines {first} and {test['line'].iat[j]}); "
            "the split holds one held-out rating per user (leave-one-out): keep one")
    missing = ~np.isin(train["user"].to_numpy(), test["user"].to_numpy())
    if missing.any():
        j = np.flatnonzero(missing)[0]
        raise SplitFilesError(
            f"{test_path}: user {train['user'].iat[j]} has no test row (its first training row "
            f"is line {train['line'].iat[j]} of {train_path}); every user of the training file "
            "needs its held-out rating: add it, or remove the user's training rows")
    inter = Interactions(np.concatenate([train["user"], test["user"]]),
                         np.concatenate([train["item"], test["item"]]),
                         np.concatenate([train["rating"], test["rating"]]) / top)
    scale = RatingScale(table[3], steps) if table is not None else RatingScale(top, steps)
    return PresplitData(name, inter, sizes["user"], sizes["item"], scale, raw_items,
                        test_rows=np.arange(len(train), len(inter), dtype=np.int64))
