"""data/split.py: ``split.test_item`` (positive vs any), also on split files (moved from
test_paper_protocol.py, issue 16)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import files_cfg, pairs, tiny_data, write

from data import load_dataset
from data.ratings import Interactions, RatingData
from data.split import split_ratings


def hand_built() -> RatingData:
    """User 0 rated nothing positive; user 1 one positive (item 3) among lows; user 2 only
    positives."""
    rows = [(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 0, 2), (1, 1, 1), (1, 2, 3), (1, 3, 5),
            (2, 0, 4), (2, 1, 5), (2, 4, 4)]
    return tiny_data(rows)


def test_test_item_positive_vs_any():
    data = hand_built()
    held_low = set()
    for seed in range(40):
        pos = split_ratings(data, np.random.default_rng(seed), val_fraction=0.2)
        assert pos.test_items[0] == -1 and pos.test_items[1] == 3  # the only positive
        assert pos.test_ratings[2] >= 0.8 - 1e-6
        any_ = split_ratings(data, np.random.default_rng(seed), val_fraction=0.2,
                             test_item="any")
        assert (any_.test_items >= 0).all()          # every user holds one rating out
        for split in (pos, any_):                    # the held-out rating never trains
            seen = pairs(Interactions.concat(split.train, split.val))
            for u, i in enumerate(split.test_items):
                assert i < 0 or not any(p[:2] == (u, i) for p in seen)
            assert len(seen) + int((split.test_items >= 0).sum()) == data.n_ratings
        held_low |= {(u, int(i)) for u, i in enumerate(any_.test_items)
                     if any_.test_ratings[u] < 0.8 - 1e-6}
    assert {u for u, _ in held_low} == {0, 1}       # any: low ratings are held out too
    with pytest.raises(ValueError, match="test_item 'some'"):
        split_ratings(data, np.random.default_rng(0), test_item="some")


def test_test_item_positive_on_split_files_drops_low_test_rows(tmp_path):
    train = write(tmp_path / "d.train.rating", [(0, 0, 4), (0, 1, 2), (1, 0, 3), (1, 2, 1)])
    test = write(tmp_path / "d.test.rating", [(0, 3, 5), (1, 1, 2)])
    data = load_dataset(files_cfg(train, test))
    pos = split_ratings(data, np.random.default_rng(0), val_fraction=0.0)
    assert pos.test_items.tolist() == [3, -1]       # user 1's held-out 2 is not positive…
    assert (1, 1, 2) not in pairs(pos.train)        # …and is used nowhere
    any_ = split_ratings(data, np.random.default_rng(0), val_fraction=0.0, test_item="any")
    assert any_.test_items.tolist() == [3, 1]
    assert len(pos.train) == len(any_.train) == 4
