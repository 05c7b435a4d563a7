"""Bring your own poison (``attack: file``) and export generated poison, so fake profiles can be
shared and compared across papers and packages (issue 3, attacks.md §1).

Two formats:

* CSV / TSV: one ``user,item,rating`` line per fake rating (an optional header line is
  skipped; a field holding the separator is quoted, as the csv module writes it). Users are
  the file's own fake-user ids (any integers or tokens; renumbered 0.. in ascending order,
  numeric when all are integers), items are the dataset's raw item ids (numbers, or tokens
  such as ``tt0000016`` with ``dataset: file``), ratings are on the dataset's original scale
  (1–5 on MovieLens, 0.5–4 on FilmTrust). Ratings off the grid are rounded onto it.
* NumPy ``.npy``: a dense float array of shape (n_fake, n_items) of normalized ratings in
  [0, 1], 0 = not rated, whose columns are the dataset's items in ascending raw-id order — the
  layout of the TCD authors' poison files (``greensun0830/TCD`` ``temp/*/full/*.npy``).

Loading validates the shape, the item ids, the rating range and that every target is rated,
and fails with one line naming the problem (:class:`AttackError`). The CSV loader needs the
dataset's raw item ids, which the pipeline passes as ``ctx.extra["raw_item_ids"]``.
"""
from __future__ import annotations

import csv
import io
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
        fake = self.read(ctx.n_items, ctx.scale, ctx.targets, ctx.extra.get("raw_item_ids"),
                         ctx.n_fake)
        if ctx.feedback == "implicit":
            fake = Interactions(fake.users, fake.items, np.ones(len(fake)))
        return fake

    def read(self, n_items: int, scale: RatingScale, targets: np.ndarray,
             raw_item_ids: np.ndarray | None, n_fake: int = 0) -> Interactions:
        """The file's profiles, validated against the dataset, the targets and ``n_fake`` (0:
        every profile of the file); the pipeline also calls it before the results folder is
        made, so a bad file stops a run before anything is written."""
        opt = self.options
        fake = load_poison(opt.path, n_items, scale, targets, raw_item_ids, opt.format)
        n_file = int(fake.users.max()) + 1
        # n_fake 0: every profile of the file (the pipeline's default for a file attack);
        # attack.n_fake, when given, is checked against the file.
        if n_fake and n_file != n_fake:
            if opt.strict_size or n_file < n_fake:
                raise AttackError(
                    f"poison file {opt.path}: {n_file} fake profiles, but attack.n_fake is "
                    f"{n_fake}; set attack.n_fake: {n_file} or leave it out (a file brings "
                    "its own count)"
                    + ("" if n_file < n_fake else
                       ", or set attack.options.file.strict_size: false to use the first "
                       "profiles"))
            fake = fake.subset(fake.users < n_fake)
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
                          f"{', '.join(str(t) for t in shown)}; it was made for other "
                          "targets (check targets.kind / targets.items)")
    return fake


def _not_dense(path: Path, n_items: int) -> AttackError:
    # numpy's own messages are not shown: for a pickle or a random file they suggest loading
    # it unsafely (allow_pickle), which a poison file must never be.
    return AttackError(f"poison file {path}: not a numeric .npy array of shape n_fake × "
                       f"{n_items} (one column per item of the dataset); accepted: .npy of "
                       "normalized ratings in [0, 1], or .csv/.tsv of user,item,rating lines")


def _load_dense(path: Path, n_items: int, scale: RatingScale) -> Interactions:
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise AttackError(f"poison file {path}: cannot read it ({exc.strerror}); check the file "
                          "and attack.options.file.path") from None
    with handle:
        try:
            dense = np.load(handle, allow_pickle=False)  # never unpickles
        except (ValueError, EOFError, OSError, SyntaxError):
            raise _not_dense(path, n_items) from None
        if not isinstance(dense, np.ndarray):  # an .npz archive
            dense.close()
            raise _not_dense(path, n_items)
    if dense.dtype.kind not in "iuf":
        raise _not_dense(path, n_items)
    if dense.ndim != 2 or dense.shape[1] != n_items:
        raise AttackError(f"poison file {path}: shape {dense.shape}, expected (n_fake, {n_items})"
                          " — one column per dataset item in raw-id order")
    if dense.shape[0] == 0:
        raise AttackError(f"poison file {path}: holds no profiles")
    if not np.isfinite(dense).all():
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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AttackError(f"poison file {path}: not UTF-8 text (byte {exc.start}); a .csv/.tsv "
                          "poison file holds user,item,rating lines in UTF-8") from None
    except OSError as exc:
        raise AttackError(f"poison file {path}: cannot read it ({exc.strerror}); check the file "
                          "and attack.options.file.path") from None


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _integer(token: str) -> int | None:
    value = _number(token)
    return int(value) if value is not None and value == round(value) else None


def _load_table(path: Path, sep: str, raw_item_ids: np.ndarray, scale: RatingScale
                ) -> Interactions:
    text = _read_text(path)
    what = "a tab" if sep == "\t" else "commas"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    # Raw item ids are numbers (every built-in dataset) or tokens (`dataset: file`).
    numeric_ids = raw_item_ids.dtype.kind in "iu"
    index = None if numeric_ids else {str(raw): n for n, raw in enumerate(raw_item_ids.tolist())}
    lowest, highest = ((raw_item_ids.min(), raw_item_ids.max()) if numeric_ids else
                       (raw_item_ids[0], raw_item_ids[-1]))  # tokens: ascending already
    users, items, ratings, rows = [], [], [], []
    first = True
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise AttackError(f"poison file {path}: line {reader.line_num} cannot be read "
                              f"({exc}); expected user, item, rating separated by {what}"
                              ) from None
        line_no = reader.line_num
        fields = [f.strip() for f in fields]
        if not any(fields):
            continue
        header_allowed, first = first, False
        if len(fields) != 3:
            raise AttackError(f"poison file {path}: line {line_no} has {len(fields)} fields; "
                              f"expected user, item, rating separated by {what}")
        user, item, rating_text = fields
        for name, token in (("user", user), ("item", item)):
            if not token:
                raise AttackError(f"poison file {path}: line {line_no} has an empty {name} id; "
                                  "fix the line")
        rating = _number(rating_text)
        if rating is None:
            if header_allowed and _integer(user) is None:  # the first line may name the columns
                continue
            raise AttackError(f"poison file {path}: line {line_no} has a non-numeric rating "
                              f"{rating_text!r}; expected user, item, rating separated by {what}")
        if numeric_ids:  # the raw id, looked up below (vectorized)
            found = _integer(item)
            if found is None and _number(item) is not None:
                raise AttackError(f"poison file {path}: line {line_no} has a non-integer item "
                                  f"id {item}")
            if found is not None and not lowest <= found <= highest:
                found = None
        else:            # the dense id
            found = index.get(item)
        if found is None:
            raise AttackError(f"poison file {path}: line {line_no} names item {item}, which is "
                              f"not in the dataset (raw ids span {lowest}..{highest})")
        users.append(user)
        items.append(found)
        ratings.append(rating)
        rows.append(line_no)
    if not ratings:
        raise AttackError(f"poison file {path}: holds no ratings")
    line_of = np.asarray(rows)
    if numeric_ids:
        raw_items = np.asarray(items, dtype=np.int64)
        order = np.argsort(raw_item_ids)
        at = np.searchsorted(raw_item_ids, raw_items, sorter=order).clip(max=len(order) - 1)
        dense_items = order[at]
        unknown = np.flatnonzero(raw_item_ids[dense_items] != raw_items)
        if len(unknown):
            raise AttackError(f"poison file {path}: line {line_of[unknown[0]]} names item "
                              f"{raw_items[unknown[0]]}, which is not in the dataset (raw ids "
                              f"span {lowest}..{highest})")
    else:
        dense_items = np.asarray(items, dtype=np.int64)
    rating = np.asarray(ratings, dtype=np.float64)
    top = scale.max_rating
    bad = np.flatnonzero((rating <= 0) | (rating > top + 1e-6))
    if len(bad):
        raise AttackError(f"poison file {path}: line {line_of[bad[0]]} has rating "
                          f"{rating[bad[0]]:g}; ratings are on the dataset's scale (0, {top:g}]")
    # Fake users renumbered 0.. in ascending order of their ids (as numbers when all are).
    as_int = [_integer(u) for u in users]
    keys_of = as_int if None not in as_int else users
    _, fake_users = np.unique(np.asarray(keys_of), return_inverse=True)
    keys = fake_users * len(raw_item_ids) + dense_items
    uniq, first_at = np.unique(keys, return_index=True)
    if len(uniq) != len(keys):
        dup = np.setdiff1d(np.arange(len(keys)), first_at)[0]
        raise AttackError(f"poison file {path}: line {line_of[dup]} repeats a (user, item) pair")
    return Interactions(fake_users, dense_items, scale.project(rating / top))


# ----------------------------------------------------------------------------- export

def export_table(fake: Interactions, path: str | Path, raw_item_ids: np.ndarray,
                 scale: RatingScale, sep: str = ",") -> Path:
    """``user,item,rating`` lines: fake ids 0.., raw item ids, ratings on the original scale."""
    raw = np.asarray(raw_item_ids)[fake.items]
    values = np.round(fake.ratings.astype(np.float64) * scale.max_rating, 6)
    order = np.lexsort((fake.items, fake.users))
    text = io.StringIO()
    writer = csv.writer(text, delimiter=sep, lineterminator="\n")  # quotes an id holding sep
    writer.writerow(["user", "item", "rating"])
    writer.writerows((u, i, f"{r:g}") for u, i, r in
                     zip(fake.users[order], raw[order], values[order]))
    return atomic_write_text(path, text.getvalue())


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
