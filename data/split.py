"""Train / validation / test split (protocol.md §2), fully vectorized and fixed by the seed.

Besides the package's split (one random *positive* per user for test, the rest 9:1 into train
and validation), two switches reproduce the TCD authors' protocol (paper-tables.md):

* ``split.test_item: any`` — the held-out rating of a user may have any value (the authors'
  leave-one-out files), not only a positive one;
* a fixed split read from files (``dataset.split_files``, ``data/loaders.py``): the data is a
  :class:`PresplitData` whose ``test_rows`` are the test file's rows; validation is still
  drawn from the training rows (none when ``evaluation.select_on: test``).

:func:`write_split_files` writes a split in the authors' file format (tab-separated ``user item
rating``, 0-based ids, ratings as grid levels); ``benchmarks/write_split_files.py`` writes the
split of a config, e.g. to check a round trip::

    python benchmarks/write_split_files.py --out /tmp/split dataset=ml-100k split.test_item=any \\
        evaluation.select_on=test
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ratings import Interactions, RatingData, Split

TEST_ITEMS = ("positive", "any")


@dataclass
class PresplitData(RatingData):
    """A dataset with a fixed test set (``dataset.split_files``): ``test_rows`` index the
    interactions that are held out (one per user), the others are the training file's."""

    test_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64),
                                  repr=False)


def split_ratings(data: RatingData, rng: np.random.Generator, positive_threshold: float = 0.8,
                  val_fraction: float = 0.1, feedback: str = "explicit",
                  test_item: str = "positive") -> Split:
    """One random positive per user for test (``test_item: any``: one random rating of any
    value); the rest into train and validation (a ``val_fraction`` of it, 0: no validation).

    With a :class:`PresplitData` the test ratings are its ``test_rows`` (``positive``: only a
    positive one counts; a user whose held-out rating is not positive has no test item and that
    rating is used nowhere), and validation is drawn from the other rows.
    """
    if test_item not in TEST_ITEMS:
        raise ValueError(f"test_item '{test_item}' is unknown; use one of {TEST_ITEMS}")
    inter = data.interactions
    n = len(inter)
    keys = rng.random(n)
    fixed = getattr(data, "test_rows", None)
    candidates = np.arange(n) if fixed is None else np.asarray(fixed, dtype=np.int64)
    if test_item == "positive":
        candidates = candidates[inter.ratings[candidates] >= positive_threshold - 1e-6]
    # Among each user's candidates, the one with the largest random key is the test rating.
    order = candidates[np.lexsort((-keys[candidates], inter.users[candidates]))]
    first_users, first_pos = np.unique(inter.users[order], return_index=True)
    test_rows = order[first_pos]
    test_items = np.full(data.n_users, -1, dtype=np.int64)
    test_ratings = np.zeros(data.n_users, dtype=np.float32)
    test_items[first_users] = inter.items[test_rows]
    test_ratings[first_users] = inter.ratings[test_rows]
    rest = np.ones(n, dtype=bool)
    rest[test_rows] = False
    if fixed is not None:
        rest[fixed] = False   # a test file's rows never train, counted or not
    rest_rows = np.flatnonzero(rest)
    perm = rng.permutation(len(rest_rows))
    n_val = int(round(val_fraction * len(rest_rows)))
    val_rows = np.sort(rest_rows[perm[:n_val]])
    train_rows = np.sort(rest_rows[perm[n_val:]])
    train, val = inter.subset(train_rows), inter.subset(val_rows)
    if feedback == "implicit":
        train = Interactions(train.users, train.items, np.ones(len(train)))
        val = Interactions(val.users, val.items, np.ones(len(val)))
    return Split(train, val, test_items, test_ratings, data.n_users, data.n_items,
                 data.scale, feedback)


def split_fake_rows(fake: Interactions, rng: np.random.Generator, val_fraction: float
                    ) -> tuple[Interactions, Interactions]:
    """The ``platform`` protocol (threat-model.md §1): a platform cannot tell fake accounts from
    real ones, so each fake user's rows go to validation in the proportion real users' do.

    Real users' validation rows are a ``val_fraction`` of their non-test rows; each fake user
    (who has no test item: fake users never count in metrics) gets ``val_fraction`` of its rows,
    rounded at random so the expected share is exact and every user is within one row of it,
    and keeps at least one training row. Returns ``(train rows, validation rows)``.
    """
    n = len(fake)
    if n == 0:
        return fake, fake
    n_users = int(fake.users.max()) + 1
    counts = np.bincount(fake.users, minlength=n_users)
    wanted = val_fraction * counts
    n_val = np.floor(wanted + rng.random(n_users)).astype(np.int64)
    n_val = np.minimum(n_val, np.maximum(counts - 1, 0))
    # A random order within each user; its first n_val[u] rows are validation.
    order = np.lexsort((rng.random(n), fake.users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[fake.users[order]]
    is_val = rank < n_val[fake.users]
    return fake.subset(~is_val), fake.subset(is_val)


def held_out_interactions(split: Split) -> Interactions:
    """The held-out test ratings as interactions (one per user with a test item): the data a
    model is selected on with ``evaluation.select_on: test`` (ratings 1 on implicit feedback)."""
    users = np.flatnonzero(split.test_items >= 0)
    ratings = (np.ones(len(users)) if split.feedback == "implicit"
               else split.test_ratings[users])
    return Interactions(users, split.test_items[users], ratings)


def write_split_files(split: Split, train_path: str | Path, test_path: str | Path) -> None:
    """Write ``split`` in the TCD authors' format: tab-separated ``user item rating`` lines,
    0-based ids, ratings as grid levels 1..steps (MovieLens 1–5, FilmTrust ×2: 1–8). The
    training file holds the training and validation rows (validation is drawn again when the
    files are read); the test file one row per user with a test item. Read them back with
    ``dataset.split_files`` (``max_rating`` = ``rating_steps`` = the steps)."""
    steps = split.scale.steps
    train = Interactions.concat(split.train, split.val)
    order = np.lexsort((train.items, train.users))
    test = held_out_interactions(split)

    def lines(inter: Interactions, rows) -> str:
        levels = np.round(inter.ratings[rows].astype(np.float64) * steps)
        return "".join(f"{u}\t{i}\t{r:.1f}\n" for u, i, r in
                       zip(inter.users[rows].tolist(), inter.items[rows].tolist(),
                           levels.tolist()))

    for path, text in ((train_path, lines(train, order)),
                       (test_path, lines(test, np.arange(len(test))))):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")



# ----------------------------------------------------------------------------- per-user ratio
@dataclass
class RatioSplit(Split):
    """A per-user ratio split (the implicit top-K protocol of LightGCN, VAT and PamaCF):
    ``test`` holds several held-out positives per user; ``test_items`` is -1 throughout (no
    leave-one-out item), so leave-one-out HR@K does not apply to it — Recall@K and NDCG@K do
    (``utils/topk_metrics.py``)."""

    test: Interactions = field(default_factory=lambda: Interactions(
        np.zeros(0), np.zeros(0), np.zeros(0)))


def ratio_counts(n: np.ndarray, test_fraction: float, val_fraction: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per user with ``n`` interactions: how many go to test and to validation.

    ⌊share · n⌋ each, training the rest; then, while the user keeps at least two training
    rows, an empty test share and then an empty validation share take one row from training —
    the sizes RecBole 1.x gives a ratio split grouped by user, so a user with 3 interactions
    keeps 1 for training, 1 for validation and 1 for test at 0.8/0.1/0.1."""
    n = np.asarray(n, dtype=np.int64)
    n_test = np.floor(test_fraction * n).astype(np.int64)
    n_val = np.floor(val_fraction * n).astype(np.int64)
    train = n - n_test - n_val
    bump = (train > 1) & (n_test == 0) & (test_fraction > 0)
    n_test += bump
    train -= bump
    bump = (train > 1) & (n_val == 0) & (val_fraction > 0)
    n_val += bump
    return n_test, n_val


def split_by_ratio(data: RatingData, rng: np.random.Generator, test_fraction: float = 0.2,
                   val_fraction: float = 0.1, feedback: str = "implicit") -> RatioSplit:
    """Every user's interactions in random order: the first ``ratio_counts`` go to test, the
    next to validation, the rest train (shares of each user's own rows, so light users keep
    most of theirs in training). Implicit feedback: every kept rating becomes 1 (all of a
    user's ratings count as interactions, whatever their value). Fixed by ``rng``."""
    inter = data.interactions
    n = len(inter)
    order = np.lexsort((rng.random(n), inter.users))      # by user, random within a user
    counts = np.bincount(inter.users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[inter.users[order]]
    n_test, n_val = ratio_counts(counts, test_fraction, val_fraction)
    u = inter.users
    is_test = rank < n_test[u]
    is_val = ~is_test & (rank < n_test[u] + n_val[u])
    parts = [inter.subset(np.flatnonzero(m)) for m in (~is_test & ~is_val, is_val, is_test)]
    if feedback == "implicit":
        parts = [Interactions(p.users, p.items, np.ones(len(p))) for p in parts]
    train, val, test = parts
    return RatioSplit(train, val, np.full(data.n_users, -1, dtype=np.int64),
                      np.zeros(data.n_users, dtype=np.float32), data.n_users, data.n_items,
                      data.scale, feedback, test=test)
