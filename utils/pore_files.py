"""Readers for the PORE authors' published outputs (``../shared/datasets/pore-100k/``, from
``liu00222/PORE-Provably-Robust-Recommender-Systems-against-Data-Poisoning-Attacks``, MIT), so the
package's certificate (``utils/certification.py``) can be checked against their numbers.

* ``*_frequency_aggregation_1.txt``: line u (1-based user id) lists ``(item,count)`` pairs
  separated by ``;``, optionally inside ``[...]``: how many of their T base recommenders
  recommended each raw item id to that user.
* ``*_test_1.csv``: ``userID,itemID,rating,timestamp`` with raw MovieLens ids, their test split;
  the training data is ``u.data`` minus these rows.

Users and items are raw MovieLens ids 1..n; the arrays here index them from 0 (id − 1), the
package's order for ML-100K.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

_PAIR = re.compile(r"\((\d+),(\d+)\)")


def read_frequencies(path: str | Path, n_items: int) -> sp.csr_matrix:
    """The (users × items) count matrix of a frequency-aggregation file (row u = line u)."""
    rows, cols, vals = [], [], []
    with open(path, encoding="utf-8") as handle:
        for u, line in enumerate(handle):
            pairs = np.array(_PAIR.findall(line), dtype=np.int64).reshape(-1, 2)
            rows.append(np.full(len(pairs), u))
            cols.append(pairs[:, 0] - 1)
            vals.append(pairs[:, 1])
    n_users = len(rows)
    rows, cols, vals = (np.concatenate(x) if x else np.zeros(0, np.int64)
                        for x in (rows, cols, vals))
    if len(cols) and (cols.min() < 0 or cols.max() >= n_items):
        raise ValueError(f"{path}: item ids outside 1..{n_items}")
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_users, n_items), dtype=np.int64)


def read_pairs(path: str | Path, sep: str = ",", header: bool = True) -> np.ndarray:
    """(user, item) raw-id pairs of a ratings file (the authors' test CSV, or ``u.data`` with
    ``sep='\\t', header=False``), shape (rows, 2)."""
    data = np.loadtxt(path, delimiter=sep, skiprows=1 if header else 0, usecols=(0, 1),
                      dtype=np.float64, ndmin=2)
    return data.astype(np.int64)


def pair_matrix(pairs: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Boolean (users × items) matrix of raw 1-based (user, item) pairs."""
    m = sp.csr_matrix((np.ones(len(pairs), dtype=bool), (pairs[:, 0] - 1, pairs[:, 1] - 1)),
                      shape=(n_users, n_items), dtype=bool)
    m.sum_duplicates()
    return m


def load_authors_run(folder: str | Path, base: str, ratings_path: str | Path,
                     n_items: int = 1682) -> dict:
    """One of the authors' runs: ``counts`` (users × items, sparse), ``test`` and ``train``
    (bool sparse; train = all ratings minus the test rows)."""
    folder = Path(folder)
    counts = read_frequencies(folder / f"{base}_frequency_aggregation_1.txt", n_items)
    n_users = counts.shape[0]
    test = pair_matrix(read_pairs(folder / f"{base}_test_1.csv"), n_users, n_items)
    every = pair_matrix(read_pairs(ratings_path, sep="\t", header=False), n_users, n_items)
    train = (every.astype(np.int8) - test.astype(np.int8)) > 0
    return {"counts": counts, "test": test, "train": sp.csr_matrix(train)}
