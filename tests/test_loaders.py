"""Fixed splits read from files (``dataset.split_files``; data/sources.py, data/loaders.py):
round trip, formats and ids, the authors' FilmTrust files, one-line errors (moved from
test_paper_protocol.py, issue 16)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import DATA_ROOT, files_cfg, pairs, tiny_data, tiny_rows, write

import main
from data import DatasetError, load_dataset
from data.ratings import Interactions
from data.sources import SplitFilesError
from data.split import PresplitData, split_ratings, write_split_files
from utils.config import ConfigError, DatasetConfig


def test_split_files_round_trip(tmp_path):
    data = tiny_data(tiny_rows())
    split = split_ratings(data, np.random.default_rng(4), test_item="any")
    write_split_files(split, tmp_path / "d.train.rating", tmp_path / "d.test.rating")
    first = (tmp_path / "d.train.rating").read_text().splitlines()[0]
    assert re.fullmatch(r"\d+\t\d+\t[1-5]\.0", first)  # the authors' format
    for name in ("file", "ml-100k"):   # ml-100k: ids are indices into its 943 × 1682 tables
        back = load_dataset(files_cfg(tmp_path / "d.train.rating", tmp_path / "d.test.rating",
                                      name=name))
        assert isinstance(back, PresplitData) and back.name == name
        assert back.n_users == (30 if name == "file" else 943)
        assert back.n_items == (25 if name == "file" else 1682)
        assert back.scale.steps == 5 and back.scale.max_rating == 5
        # the test rows come back as the test items, every other row as training data
        again = split_ratings(back, np.random.default_rng(0), val_fraction=0.0,
                              test_item="any")
        assert np.array_equal(again.test_items[:30], split.test_items)
        assert np.allclose(again.test_ratings[:30], split.test_ratings)
        assert pairs(again.train) == pairs(Interactions.concat(split.train, split.val))
        assert len(again.val) == 0
        # validation is drawn from the training file as usual
        drawn = split_ratings(back, np.random.default_rng(0), val_fraction=0.1, test_item="any")
        assert len(drawn.val) == round(0.1 * len(again.train))
        assert pairs(Interactions.concat(drawn.train, drawn.val)) == pairs(again.train)
        assert np.array_equal(drawn.test_items, again.test_items)


def test_split_files_any_delimited_format_with_raw_ids(tmp_path):
    train = write(tmp_path / "tr.csv", [("u1", "m5", 4), ("u1", "m7", 2), ("u2", "m5", 5)],
                  "{u},{i},x,{r}\n")
    test = write(tmp_path / "te.csv", [("u1", "m9", 1), ("u2", "m7", 3)], "{u},{i},x,{r}\n")
    data = load_dataset(files_cfg(train, test, ids="raw", sep=",",
                                  columns=["user", "item", "note", "rating"]))
    assert (data.n_users, data.n_items) == (2, 3)
    assert data.raw_item_ids.tolist() == ["m5", "m7", "m9"]
    split = split_ratings(data, np.random.default_rng(0), val_fraction=0.0, test_item="any")
    assert split.test_items.tolist() == [2, 1] and np.allclose(split.test_ratings, [0.2, 0.6])


@pytest.mark.skipif(not (DATA_ROOT / "filmtrust-tcd" / "filmtrust.test.rating").is_file()
                    or not (DATA_ROOT / "filmtrust" / "ratings.txt").is_file(),
                    reason="the TCD authors' FilmTrust files are not here")
def test_the_authors_filmtrust_files_index_our_filmtrust():
    """Their files (ratings ×2, CRLF lines) hold exactly our preprocessed FilmTrust, same ids."""
    folder = DATA_ROOT / "filmtrust-tcd"
    theirs = load_dataset(files_cfg(folder / "filmtrust.train.rating",
                                    folder / "filmtrust.test.rating", name="filmtrust",
                                    max_rating=8, rating_steps=8))
    ours = load_dataset(DatasetConfig(name="filmtrust", root=str(DATA_ROOT)))
    assert (theirs.n_users, theirs.n_items, theirs.n_ratings) == (796, 2011, 30880)
    assert len(theirs.test_rows) == 796
    assert (theirs.scale.max_rating, theirs.scale.steps) == (4.0, 8)  # FilmTrust's own scale
    assert pairs(theirs.interactions, 8) == pairs(ours.interactions, 8)


ERRORS = [
    # (train rows, test rows, keys, the file the message names, message)
    ([(0, 1, 4), (1, 2, 3)], [(0, 3, 5), (1, -1, 2)], {}, "test",
     r"line 2 has item id -1, out of range: 0-based item ids lie in ≥ 0"),
    ([(0, 1, 4), (943, 2, 3)], [(0, 3, 5), (943, 4, 2)], {"name": "ml-100k"}, "train",
     r"line 2 has user id 943, out of range: 0-based user ids lie in 0\.\.942 \(ml-100k has "
     r"943 users\); 1-based or raw ids: set dataset.split_files.ids: raw"),
    ([(0, 1, 4), ("u1", 2, 3)], [(0, 3, 5)], {}, "train",
     r"line 2 has user id 'u1', not a 0-based index; set dataset.split_files.ids: raw"),
    ([(0, 1, 4), (1, 2, 3), (1, 3, 5)], [(0, 3, 5), (1, 2, 2)], {}, None,
     r"user 1 rates item 2 in both \S+train\.rating \(line 2\) and \S+test\.rating \(line 2\); "
     r"a held-out rating must not be in training"),
    ([(0, 1, 4), (1, 2, 3), (2, 2, 3)], [(0, 3, 5), (2, 4, 1)], {}, "test",
     r"user 1 has no test row \(its first training row is line 2 of \S+train\.rating\); every "
     r"user of the training file needs its held-out rating"),
    ([(0, 1, 4), (1, 2, 3)], [(0, 3, 5), (1, 4, 2), (0, 5, 1)], {}, "test",
     r"user 0 has two test rows \(lines 1 and 3\); the split holds one held-out rating per user"),
    ([(0, 1, 4), (1, 2, 3), (0, 1, 2)], [(0, 3, 5), (1, 4, 2)], {}, "train",
     r"user 0 rates item 1 twice \(lines 1 and 3\)"),
    ([(0, 1, 4), (1, 2, 9)], [(0, 3, 5), (1, 4, 2)], {}, "train",
     r"line 2 has rating 9, outside \(0, 5\]; fix the line or set dataset.max_rating"),
    ([(0, 1, 4)], [(0, 3, 8)], {"name": "filmtrust"}, None,
     r"dataset.rating_steps: filmtrust has 8 rating levels but its split files are read with 5 "
     r".*set dataset.max_rating: 8 and dataset.rating_steps: 8"),
]


@pytest.mark.parametrize("train, test, keys, names, message", ERRORS)
def test_split_file_errors_are_one_line_config_errors(tmp_path, train, test, keys, names,
                                                      message):
    paths = {"train": write(tmp_path / "d.train.rating", train),
             "test": write(tmp_path / "d.test.rating", test)}
    with pytest.raises(SplitFilesError, match=message) as info:
        load_dataset(files_cfg(paths["train"], paths["test"], **keys))
    text = str(info.value)
    assert "\n" not in text
    assert isinstance(info.value, ConfigError) and isinstance(info.value, DatasetError)
    if names:
        assert text.startswith(str(paths[names]))


def test_split_file_error_exits_2_before_any_work(tmp_path, capsys):
    train = write(tmp_path / "d.train.rating", [(0, 1, 4), (1, 2, 3)])
    test = write(tmp_path / "d.test.rating", [(0, 3, 5)])
    rc = main.main(["dataset=file", f"dataset.split_files.train={train}",
                    f"dataset.split_files.test={test}", f"results_dir={tmp_path / 'r'}",
                    f"dataset.cache_dir={tmp_path / 'c'}", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("config error: ") and "user 1 has no test row" in err
    assert len(err.splitlines()) == 1
    assert not list((tmp_path / "r").glob("*/cells/*.json"))
