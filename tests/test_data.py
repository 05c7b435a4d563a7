"""Datasets: real-file counts, preprocessing, split, and every bad data input."""
from __future__ import annotations

import hashlib
import os
import shutil
import zipfile

import numpy as np
import pytest

import data.sources as sources
from data import DatasetError, load_dataset, split_ratings
from data.loaders import load_filmtrust, load_ml100k
from data.sources import RawSource, locate, safe_extract
from tests.conftest import require_real_data
from utils.config import DatasetConfig


def test_filmtrust_preprocessing_matches_the_tcd_table():
    root = require_real_data("filmtrust/ratings.txt")
    data = load_dataset(DatasetConfig(name="filmtrust", root=str(root)))
    assert (data.n_users, data.n_items, data.n_ratings) == (796, 2011, 30880)
    grid = np.unique(np.round(data.interactions.ratings * 8))
    assert grid.tolist() == list(range(1, 9))


def test_ml100k_counts_and_item_ids():
    root = require_real_data("ml-100k/u.data")
    data = load_dataset(DatasetConfig(name="ml-100k", root=str(root)))
    assert (data.n_users, data.n_items, data.n_ratings) == (943, 1682, 100000)
    assert np.array_equal(data.raw_item_ids, np.arange(1, 1683))  # item k → k − 1
    assert sorted(np.unique(np.round(data.interactions.ratings * 5))) == [1, 2, 3, 4, 5]


def test_split_is_seeded_disjoint_and_holds_one_positive_per_user(small_config):
    cfg = small_config()
    data = load_dataset(cfg.dataset, 0)
    a = split_ratings(data, np.random.default_rng(7))
    b = split_ratings(data, np.random.default_rng(7))
    c = split_ratings(data, np.random.default_rng(8))
    assert np.array_equal(a.test_items, b.test_items) and np.array_equal(a.val.users, b.val.users)
    assert not np.array_equal(a.test_items, c.test_items)
    inter = data.interactions
    positives = np.bincount(inter.users[inter.ratings >= 0.8 - 1e-6], minlength=data.n_users)
    assert np.array_equal(a.test_items >= 0, positives > 0)
    assert np.all(a.test_ratings[a.test_items >= 0] >= 0.8 - 1e-6)
    keys = lambda x: set(zip(x.users.tolist(), x.items.tolist()))
    test = {(u, i) for u, i in enumerate(a.test_items.tolist()) if i >= 0}
    assert not keys(a.train) & keys(a.val) and not (keys(a.train) | keys(a.val)) & test
    assert len(a.train) + len(a.val) + len(test) == data.n_ratings
    assert abs(len(a.val) / (len(a.train) + len(a.val)) - 0.1) < 0.01


def fake_source(tmp_path, content: bytes, name="u.data") -> RawSource:
    return RawSource("toy", name, hashlib.sha256(content).hexdigest(),
                     (tmp_path / "toy.zip").as_uri(), None)


def test_missing_file_names_file_url_and_place(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset(DatasetConfig(name="ml-100k", root=str(tmp_path)))
    msg = str(info.value)
    assert "u.data" in msg and "files.grouplens.org" in msg and str(tmp_path) in msg


def test_checksum_mismatch_and_truncated_file(tmp_path):
    root = require_real_data("ml-100k/u.data")
    (tmp_path / "ml-100k").mkdir()
    original = (root / "ml-100k" / "u.data").read_bytes()
    (tmp_path / "ml-100k" / "u.data").write_bytes(original[: len(original) // 2])
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        load_dataset(DatasetConfig(name="ml-100k", root=str(tmp_path)))
    (tmp_path / "ml-100k" / "u.data").write_bytes(original.replace(b"\t5\t", b"\t4\t", 1))
    with pytest.raises(DatasetError, match="ml-100k.zip"):
        load_dataset(DatasetConfig(name="ml-100k", root=str(tmp_path)))


def test_garbage_rating_file_is_a_clear_parse_error(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t4\n1\tabc\t3\t5\n")
    with pytest.raises(DatasetError, match="line 2 has a non-numeric item"):
        load_ml100k(path)
    path.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(DatasetError):
        load_ml100k(path)


def test_empty_dataset_after_filtering(tmp_path):
    path = tmp_path / "ratings.txt"
    path.write_text("1 1 2\n1 2 3\n2 1 4\n")  # nobody has 15 ratings
    with pytest.raises(DatasetError, match="no ratings left"):
        load_filmtrust(path)


def test_archive_with_escaping_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(DatasetError, match="escapes the extraction folder"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_download_verifies_extracts_and_caches(tmp_path, monkeypatch):
    content = b"1\t1\t5\t0\n1\t2\t3\t0\n2\t1\t4\t0\n"
    with zipfile.ZipFile(tmp_path / "toy.zip", "w") as zf:
        zf.writestr("toy/u.data", content)
    src = fake_source(tmp_path, content)
    monkeypatch.setitem(sources.SOURCES, "toy", src)
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    cache = tmp_path / "cache"
    previous = os.umask(0o022)
    try:
        path = locate("toy", None, str(cache))
    finally:
        os.umask(previous)
    assert path.read_bytes() == content and path.parent == cache / "datasets" / "toy"
    archives = list((cache / "datasets" / "toy").glob("*.zip"))
    assert archives and all(a.stat().st_mode & 0o777 == 0o644 for a in archives)  # the umask
    (tmp_path / "toy.zip").unlink()  # a second call needs no network
    shutil.rmtree(cache / "datasets" / "toy" / "toy.zip", ignore_errors=True)
    assert locate("toy", None, str(cache)) == path
    assert not list((cache / "datasets" / "toy").glob(".extract.*"))


def test_download_with_wrong_archive_checksum_keeps_nothing(tmp_path, monkeypatch):
    with zipfile.ZipFile(tmp_path / "toy.zip", "w") as zf:
        zf.writestr("u.data", "1\t1\t5\t0\n")
    src = RawSource("toy", "u.data", "0" * 64, (tmp_path / "toy.zip").as_uri(), "f" * 64)
    monkeypatch.setitem(sources.SOURCES, "toy", src)
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    with pytest.raises(DatasetError, match="SHA-256"):
        locate("toy", None, str(tmp_path / "cache"))
    leftovers = list((tmp_path / "cache").rglob("*"))
    assert all(p.is_dir() for p in leftovers)
