"""Datasets: registry of loaders by name, splits and rating containers.

``load_dataset(cfg.dataset, seed)`` returns a :class:`RatingData`; ``DATASETS`` maps each
config name to its loader.
"""
from __future__ import annotations

from typing import Callable

from .loaders import load_file, load_filmtrust, load_ml100k, load_ml1m
from .ratings import Interactions, RatingData, RatingScale, Split
from .sources import DatasetError, locate
from .split import split_ratings
from . import synthetic


def _from_file(name: str, parse: Callable) -> Callable:
    def load(cfg, seed: int) -> RatingData:
        return parse(locate(name, cfg.root, cfg.cache_dir))
    return load


def _synthetic(cfg, seed: int) -> RatingData:
    from utils.seeding import numpy_rng
    s = cfg.synthetic
    return synthetic.generate(s.n_users, s.n_items, s.density, s.rank, s.noise, s.max_rating,
                              numpy_rng(seed, "synthetic-data"))


def _file(cfg, seed: int) -> RatingData:
    return load_file(cfg)  # your own ratings file: dataset.path, dataset.sep, dataset.columns…


DATASETS: dict[str, Callable] = {
    "filmtrust": _from_file("filmtrust", load_filmtrust),
    "ml-100k": _from_file("ml-100k", load_ml100k),
    "ml-1m": _from_file("ml-1m", load_ml1m),
    "synthetic": _synthetic,
    "file": _file,
}


def load_dataset(cfg, seed: int = 0, name: str | None = None) -> RatingData:
    """Load dataset ``name`` (default ``cfg.name``) with the options of config section ``cfg``
    (with ``cfg.split_files``: its fixed train / test split, ``data/loaders.py``)."""
    split_files = getattr(cfg, "split_files", None)
    if split_files is not None and split_files.train:
        from .loaders import load_split_files
        return load_split_files(cfg, name or cfg.name)
    return DATASETS[name or cfg.name](cfg, seed)


__all__ = ["DATASETS", "DatasetError", "Interactions", "RatingData", "RatingScale", "Split",
           "load_dataset", "split_ratings"]
