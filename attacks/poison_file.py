"""Bring your own poison (``attack: file``) and export generated poison, so fake profiles can be
shared and compared across papers and packages (issue 3, attacks.md §1).

Two formats:

* CSV / TSV: one ``user,item,rating`` line per fake rating (an optional header line is
  skipped). Users are the file's own fake-user ids (any integers; renumbered 0.. in ascending
  order), items are the dataset's raw item ids, ratings are on the dataset's original scale
  (1–5 on MovieLens, 0.5–4 on FilmTrust). Ratings off the grid are rounded onto it.
* NumPy ``.npy``: a dense float array of shape (n_fake, n_items) of normalized ratings in
  [0, 1], 0 = not rated, whose columns are the dataset's items in ascending raw-id order — the
  layout of the TCD authors' poison files (``greensun0830/TCD`` ``temp/*/full/*.npy``).

Loading validates the shape, the item ids, the rating range and that every target is rated,
and fails with one line naming the problem (:class:`AttackError`). The CSV loader needs the
dataset's raw item ids, which the pipeline passes as ``ctx.extra["raw_item_ids"]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.ratings import Interactions, RatingScale
from utils.atomic import atomic_write, atomic_write_text

from .base import Attack
from .threat import AttackError, ThreatContext

FORMATS = ("csv", "tsv", "npy")


@dataclass
class FileOptions:
    path: str = ""               # the poison file
    format: str = "auto"         # auto (from the extension) | csv | tsv | npy
    strict_size: bool = True     # the file must hold exactly the attack's n_fake profiles;
                                 # false: use its first n_fake profiles


class FileAttack(Attack):
    """Fake profiles read from a file instead of generated."""

    name = "file"
    Options = FileOptions

    def generate(self, ctx: ThreatContext) -> Interactions:
        opt = self.options
        fake = load_poison(opt.path, ctx.n_items, ctx.scale, ctx.targets,
                           ctx.extra.get("raw_item_ids"), opt.format)
        n_file = int(fake.users.max()) + 1
        # n_fake 0: every profile of the file (the pipeline's default for a file attack);
        # attack.n_fake, when given, is checked against the file.
        if ctx.n_fake and n_file != ctx.n_fake:
            if opt.strict_size or n_file < ctx.n_fake:
                raise AttackError(
                    f"poison file {opt.path}: {n_file} fake profiles, but attack.n_fake is "
                    f"{ctx.n_fake}; set attack.n_fake: {n_file} or leave it out (a file brings "
                    "its own count)"
                    + ("" if n_file < ctx.n_fake else
                       ", or set attack.options.file.strict_size: false to use the first "
                       "profiles"))
            fake = fake.subset(fake.users < ctx.n_fake)
        if ctx.feedback == "implicit":
            fake = Interactions(fake.users, fake.items, np.ones(len(fake)))
        return fake


def poison_format(path: str | Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise AttackError(f"poison format '{fmt}' is unknown; use auto, "
                              + ", ".join(FORMATS))
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise AttackError(f"poison file {path}: cannot tell the format from the extension; "
                      "name it .csv, .tsv or .npy or set attack.options.file.format")


def load_poison(path: str | Path, n_items: int, scale: RatingScale, targets: np.ndarray,
                raw_item_ids: np.ndarray | None = None, fmt: str = "auto") -> Interactions:
    """Validated fake profiles (fake ids 0..n−1, dense item ids, normalized grid ratings)."""
    if not str(path):
        raise AttackError("attack.options.file.path: give the poison file to load")
    path = Path(path)
    if not path.is_file():
        raise AttackError(f"poison file {path} not found; check attack.options.file.path")
    fmt = poison_format(path, fmt)
    if fmt == "npy":
        fake = _load_dense(path, n_items, scale)
    else:
        if raw_item_ids is None:
            raise AttackError(f"poison file {path}: a CSV/TSV file names raw item ids, but the "
                              "dataset's raw ids were not passed (ctx.extra['raw_item_ids'])")
        fake = _load_table(path, "\t" if fmt == "tsv" else ",", np.asarray(raw_item_ids),
                           scale)
    missing = np.setdiff1d(np.asarray(targets), fake.items)
    if len(missing):
        shown = (np.asarray(raw_item_ids)[missing] if raw_item_ids is not None else missing)
        kind = "raw id" if raw_item_ids is not None else "item id"
        raise AttackError(f"poison file {path}: no profile rates target {kind}(s) "
                          f"{', '.join(str(int(t)) for t in shown)}; it was made for other "
                          "targets (check targets.kind / targets.items)")
    return fake


def _load_dense(path: Path, n_items: int, scale: RatingScale) -> Interactions:
    try:
        dense = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise AttackError(f"poison file {path}: not a readable .npy array ({exc})") from None
    if dense.ndim != 2 or dense.shape[1] != n_items:
        raise AttackError(f"poison file {path}: shape {dense.shape}, expected (n_fake, {n_items})"
                          " — one column per dataset item in raw-id order")
    if dense.shape[0] == 0:
        raise AttackError(f"poison file {path}: holds no profiles")
    if not np.issubdtype(dense.dtype, np.number) or not np.isfinite(dense).all():
        raise AttackError(f"poison file {path}: ratings must be finite numbers")
    if dense.min() < 0 or dense.max() > 1 + 1e-6:
        raise AttackError(f"poison file {path}: ratings span [{dense.min():g}, {dense.max():g}];"
                          " a dense file holds normalized ratings in [0, 1] (0 = not rated)"
                          f" — divide raw ratings by {scale.max_rating:g}")
    empty = np.flatnonzero((dense > 0).sum(1) == 0)
    if len(empty):
        raise AttackError(f"poison file {path}: profile (row) {int(empty[0])} rates nothing")
    users, items = np.nonzero(dense > 0)
    ratings = scale.project(dense[users, items].astype(np.float64))
    return Interactions(users, items, ratings)


def _load_table(path: Path, sep: str, raw_item_ids: np.ndarray, scale: RatingScale
                ) -> Interactions:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows, numbers = [], []
    first = True
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        header_allowed, first = first, False
        fields = [f.strip() for f in line.split(sep)]
        if len(fields) != 3:
            raise AttackError(f"poison file {path}: line {line_no} has {len(fields)} fields; "
                              "expected user, item, rating separated by "
                              + ("a tab" if sep == "\t" else "commas"))
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if header_allowed:  # the first line may name the columns
                continue
            raise AttackError(f"poison file {path}: line {line_no} is not numeric: "
                              f"{line.strip()!r}") from None
        numbers.append(values)
        rows.append(line_no)
    if not numbers:
        raise AttackError(f"poison file {path}: holds no ratings")
    table = np.asarray(numbers, dtype=np.float64)
    line_of = np.asarray(rows)
    for col, what in ((0, "user"), (1, "item")):
        bad = np.flatnonzero(table[:, col] != np.round(table[:, col]))
        if len(bad):
            raise AttackError(f"poison file {path}: line {line_of[bad[0]]} has a non-integer "
                              f"{what} id {table[bad[0], col]:g}")
    raw_items = table[:, 1].astype(np.int64)
    order = np.argsort(raw_item_ids)
    at = np.searchsorted(raw_item_ids, raw_items, sorter=order).clip(max=len(order) - 1)
    dense_items = order[at]
    unknown = np.flatnonzero(raw_item_ids[dense_items] != raw_items)
    if len(unknown):
        raise AttackError(f"poison file {path}: line {line_of[unknown[0]]} names item "
                          f"{raw_items[unknown[0]]}, which is not in the dataset (raw ids span "
                          f"{int(raw_item_ids.min())}..{int(raw_item_ids.max())})")
    rating = table[:, 2]
    top = scale.max_rating
    bad = np.flatnonzero((rating <= 0) | (rating > top + 1e-6) | ~np.isfinite(rating))
    if len(bad):
        raise AttackError(f"poison file {path}: line {line_of[bad[0]]} has rating "
                          f"{rating[bad[0]]:g}; ratings are on the dataset's scale (0, {top:g}]")
    _, users = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    keys = users * len(raw_item_ids) + dense_items
    uniq, first = np.unique(keys, return_index=True)
    if len(uniq) != len(keys):
        dup = np.setdiff1d(np.arange(len(keys)), first)[0]
        raise AttackError(f"poison file {path}: line {line_of[dup]} repeats a (user, item) pair")
    return Interactions(users, dense_items, scale.project(rating / top))


# ----------------------------------------------------------------------------- export

def export_table(fake: Interactions, path: str | Path, raw_item_ids: np.ndarray,
                 scale: RatingScale, sep: str = ",") -> Path:
    """``user,item,rating`` lines: fake ids 0.., raw item ids, ratings on the original scale."""
    raw = np.asarray(raw_item_ids)[fake.items]
    values = np.round(fake.ratings.astype(np.float64) * scale.max_rating, 6)
    order = np.lexsort((fake.items, fake.users))
    body = "\n".join(f"{u}{sep}{i}{sep}{r:g}" for u, i, r in
                     zip(fake.users[order], raw[order], values[order]))
    return atomic_write_text(path, f"user{sep}item{sep}rating\n{body}\n")


def export_dense(fake: Interactions, path: str | Path, n_items: int) -> Path:
    """A dense (n_fake, n_items) float32 array of normalized ratings, columns in raw-id order."""
    n_fake = int(fake.users.max()) + 1 if len(fake) else 0
    dense = np.zeros((n_fake, n_items), dtype=np.float32)
    dense[fake.users, fake.items] = fake.ratings

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to a name
            np.save(handle, dense, allow_pickle=False)

    return atomic_write(path, write)


def export_poison(fake: Interactions, directory: str | Path, stem: str,
                  raw_item_ids: np.ndarray, scale: RatingScale, n_items: int,
                  formats: list[str] | tuple[str, ...] = ("csv", "npy")) -> list[Path]:
    """Write ``fake`` as ``<directory>/<stem>.<format>`` for each format; returns the paths.
    Any file written here loads back with ``attack: file`` to the same profiles."""
    paths = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise AttackError(f"poison export format '{fmt}' is unknown; use "
                              + ", ".join(FORMATS))
        path = Path(directory) / f"{stem}.{fmt}"
        if fmt == "npy":
            paths.append(export_dense(fake, path, n_items))
        else:
            paths.append(export_table(fake, path, raw_item_ids, scale,
                                      "\t" if fmt == "tsv" else ","))
    return paths
