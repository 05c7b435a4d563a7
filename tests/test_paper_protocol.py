"""The TCD authors' protocol as switches (issue 16): a fixed split from files
(``dataset.split_files``), ``split.test_item: any``, ``evaluation.select_on: test``,
``model.profile: tcd_authors``, and the two presets that use them."""
from __future__ import annotations

import json
import logging
import re
import shlex
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from data import DatasetError, load_dataset
from data.ratings import Interactions, RatingData, RatingScale
from data.sources import SplitFilesError
from data.split import (PresplitData, split_ratings, held_out_interactions, write_split_files)
from models import build_model
from models.optimizers import SparseRowAdadelta, make_optimizer
from models.trainer import Trainer
from utils.config import ConfigError, DatasetConfig, ModelConfig, SplitFilesConfig, for_dataset
from experiment.validation import config_from_dict, load_config
from experiment.planning import cell_key, plan_cells
from utils.seeding import torch_generator
from experiment.workspace import Workspace, run_cell

from conftest import DATA_ROOT, small_tree

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, rows, fmt="{u}\t{i}\t{r}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(fmt.format(u=u, i=i, r=r) for u, i, r in rows), encoding="utf-8")
    return path


def files_cfg(train: Path, test: Path, **keys) -> DatasetConfig:
    ids = keys.pop("ids", "index")
    return DatasetConfig(name=keys.pop("name", "file"),
                         split_files=SplitFilesConfig(str(train), str(test), ids), **keys)


def tiny_rows(seed: int = 0, n_users: int = 30, n_items: int = 25):
    """Every user rates 8 random items (1-5)."""
    rng = np.random.default_rng(seed)
    return [(u, int(i), int(rng.integers(1, 6))) for u in range(n_users)
            for i in rng.choice(n_items, size=8, replace=False)]


def tiny_data(rows, steps: int = 5) -> RatingData:
    users, items, ratings = map(np.asarray, zip(*rows))
    return RatingData("file", Interactions(users, items, ratings / steps), int(users.max()) + 1,
                      int(items.max()) + 1, RatingScale(float(steps), steps),
                      np.arange(int(items.max()) + 1))


def pairs(inter: Interactions, steps: int = 5) -> set:
    return {(int(u), int(i), int(round(float(r) * steps)))
            for u, i, r in zip(inter.users, inter.items, inter.ratings)}


# ----------------------------------------------------------------------------- split files

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


@pytest.mark.parametrize("keys, message", [
    ({"dataset": {"name": "file", "split_files": {"train": "a"}}},
     r"dataset.split_files.test: split_files.train is set; a fixed split needs both files"),
    ({"dataset": {"name": "file", "path": "x", "split_files": {"train": "a", "test": "b"}}},
     r"dataset.path: dataset.split_files replaces it"),
    ({"dataset": {"name": "ml-100k", "min_user_ratings": 2,
                  "split_files": {"train": "a", "test": "b"}}},
     r"dataset.min_user_ratings: a filter would change the fixed split"),
    ({"dataset": {"name": "synthetic", "split_files": {"train": "a", "test": "b"}}},
     r"dataset.split_files: the synthetic dataset is generated"),
    ({"dataset": {"name": "file", "split_files": {"train": "a", "test": "b", "ids": "one"}}},
     r"dataset.split_files.ids: unknown name 'one'.*valid: index, raw"),
    ({"dataset": {"name": "ml-100k", "split_files": {"train": "a", "test": "b", "sep": ","}}},
     r"dataset.split_files.sep: unknown key"),
    ({"split": {"test_item": "positve"}}, r"split.test_item: unknown name 'positve' \(did you "
                                          r"mean 'positive'\?\); valid: positive, any"),
    ({"evaluation": {"select_on": "train"}}, r"evaluation.select_on: unknown name 'train'"),
    ({"evaluation": {"select_on": "test"}, "split": {"fake_rows": "platform"}},
     r"split.fake_rows: 'platform' puts fake rows in validation"),
])
def test_config_errors(keys, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(keys)


# ----------------------------------------------------------------------------- test_item

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


# ----------------------------------------------------------------------------- select_on

def test_select_on_test_picks_the_epoch_of_smallest_test_mse(tmp_path, caplog):
    cfg = config_from_dict(small_tree(tmp_path, evaluation={"k": 10, "select_on": "test"},
                                      split={"test_item": "any"},
                                      model={"dim": 8, "epochs": 12, "batch_size": 256,
                                             "lr": 0.02}))
    with caplog.at_level(logging.WARNING):
        ws = Workspace(cfg)
    assert "select_on: test" in caplog.text and "reproduction only" in caplog.text
    split = ws.split("synthetic", 0)
    assert len(split.val) == 0                       # no validation split at all
    test = held_out_interactions(split)
    assert len(test) == int((split.test_items >= 0).sum()) > 0
    data = ws.training_data(split, None)
    assert pairs(data.val) == pairs(test) and len(data.train) == len(split.train)
    assert data.val_known is False    # test rows: scored for selection, never known ratings
    model = build_model(cfg.model, data.n_users, data.n_items, torch_generator(1, "init"))
    trainer = Trainer(model, cfg.model, data.scale, torch_generator(1, "shuffle"))
    result = trainer.fit(data.train, data.val)
    # the history holds each epoch's test MSE; the kept epoch is the smallest one
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert len(set(np.round(losses, 8))) > 3        # the choice is not trivial
    with torch.no_grad():
        pred = model(torch.as_tensor(test.users), torch.as_tensor(test.items))
    mse = float((pred - torch.as_tensor(test.ratings)).pow(2).mean())
    assert mse == pytest.approx(min(losses), rel=1e-4)  # the restored model is that epoch's


def test_select_on_test_through_a_cell(tmp_path):
    tree = small_tree(tmp_path, evaluation={"k": 10, "select_on": "test"},
                      model={"dim": 8, "epochs": 6, "batch_size": 256})
    cfg = config_from_dict(tree)
    plain = config_from_dict(small_tree(tmp_path, model={"dim": 8, "epochs": 6,
                                                         "batch_size": 256}))
    cell = [c for c in plan_cells(cfg) if c.attacked][0]
    assert cell_key(cfg, cell) != cell_key(plain, cell)
    ws = Workspace(cfg)
    row, _ = run_cell(ws, cell)
    assert json.loads(row["defense_info"])["selected_on"] == "test"
    split = ws.split(cell.dataset, cell.repeat)
    model, info, _ = ws.train("none", (), "mf", ws.training_data(split, None), 5)
    test = held_out_interactions(split)
    with torch.no_grad():
        pred = model(torch.as_tensor(test.users), torch.as_tensor(test.items))
    assert info["best_val"] == pytest.approx(
        float((pred - torch.as_tensor(test.ratings)).pow(2).mean()), rel=1e-4)
    row, _ = run_cell(Workspace(plain), cell)
    assert "selected_on" not in json.loads(row["defense_info"])


def test_select_on_last_keeps_every_model_at_its_last_epoch(tmp_path):
    tree = small_tree(tmp_path, evaluation={"k": 10, "select_on": "last"},
                      split={"test_item": "any"},
                      model={"dim": 8, "epochs": 5, "batch_size": 256, "lr": 0.02})
    cfg = config_from_dict(tree)
    ws = Workspace(cfg)
    split = ws.split("synthetic", 0)
    assert len(split.val) == 0                       # no validation rows: all non-test train
    data = ws.training_data(split, None)
    assert len(data.val) == 0
    model = build_model(cfg.model, data.n_users, data.n_items, torch_generator(1, "init"))
    trainer = Trainer(model, cfg.model, data.scale, torch_generator(1, "shuffle"))
    result = trainer.fit(data.train, data.val)
    assert result.best_epoch == 5
    # the kept model is the last epoch's: the same as five epochs without any selection
    again = build_model(cfg.model, data.n_users, data.n_items, torch_generator(1, "init"))
    plain = Trainer(again, cfg.model, data.scale, torch_generator(1, "shuffle"))
    for _ in range(5):
        plain.train_epoch(data.train)
    assert torch.equal(model.user_emb, again.user_emb)
    # through cells: undefended, TCD (its own epoch loop) and AT all keep their last epoch
    for defense in ("none", "tcd", "at"):
        cell = [c for c in plan_cells(config_from_dict({**tree, "defense": {"name": defense}}))
                if c.attacked][0]
        row, _ = run_cell(ws, cell)
        assert row["best_epoch"] == 5, defense
        info = json.loads(row["defense_info"])
        assert info["selected_on"] == "last" and info["best_val"] is None
    with pytest.raises(ConfigError, match="select_on: last has no validation"):
        config_from_dict(small_tree(tmp_path, evaluation={"select_on": "last"},
                                    split={"fake_rows": "platform"}))


def test_new_keys_at_their_defaults_keep_cell_keys(tmp_path):
    base = small_tree(tmp_path)
    cfg = config_from_dict(base)
    cell = plan_cells(cfg)[1]
    same = config_from_dict({**base, "split": {"test_item": "positive"},
                             "evaluation": {"k": 10, "select_on": "validation"}})
    assert cell_key(same, cell) == cell_key(cfg, cell)
    assert cell_key(config_from_dict({**base, "split": {"test_item": "any"}}), cell) \
        != cell_key(cfg, cell)


# ----------------------------------------------------------------------------- profile

def test_profile_sets_the_authors_optimizer_lr_and_l2():
    cfg = load_config(None, ["model.profile=tcd_authors"])
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.reg) == ("adadelta_sparse", 20.0, 1e-4)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg.model)
    assert isinstance(opt, SparseRowAdadelta)
    assert (opt.defaults["lr"], opt.defaults["rho"], opt.defaults["eps"]) == (20.0, 0.95, 1e-8)
    assert load_config(None, []).model.optimizer == "adam"       # not the default
    with pytest.raises(ConfigError, match=r"model.profile: unknown name 'tcd_author' \(did "
                                          r"you mean 'tcd_authors'\?\)"):
        load_config(None, ["model.profile=tcd_author"])
    with pytest.raises(ConfigError, match=r"model.profile: profile 'tcd_authors' sets "
                                          r"optimizer, lr, reg; remove model.lr"):
        load_config(None, ["model.profile=tcd_authors", "model.lr=0.5"])
    with pytest.raises(ConfigError, match=r"model.profil: unknown key; did you mean 'profile'"):
        load_config(None, ["model.profil=tcd_authors"])
    layered = load_config(None, ["dataset=[ml-100k,filmtrust]",
                                 "by_dataset={filmtrust: {model: {profile: tcd_authors}}}"])
    assert for_dataset(layered, "filmtrust").model.lr == 20.0
    assert for_dataset(layered, "ml-100k").model.lr == 1e-3


def test_sparse_adadelta_updates_only_the_rows_in_the_batch():
    """TensorFlow 1 applies Adadelta to an embedding lookup's IndexedSlices: rows outside the
    batch keep their value and both accumulators. Rows in the batch, and dense parameters,
    follow torch's (dense) Adadelta exactly."""
    torch.manual_seed(0)
    table0, dense0 = torch.randn(4, 3), torch.randn(2, 3)
    table, dense = (torch.nn.Parameter(t.clone()) for t in (table0, dense0))
    ref_t, ref_d = (torch.nn.Parameter(t.clone()) for t in (table0, dense0))
    cfg = types.SimpleNamespace(optimizer="adadelta_sparse", lr=20.0)
    opt = make_optimizer([table, dense], cfg, lookup_tables=[table])
    ref = torch.optim.Adadelta([ref_t, ref_d], lr=20.0, rho=0.95, eps=1e-8)
    grads = [torch.randn(4, 3) for _ in range(3)]
    grads[1][2] = 0.0   # row 2 is not in the second batch
    dense_grads = [torch.randn(2, 3) for _ in range(3)]
    dense_grads[1][0] = 0.0   # a dense row with a zero gradient still decays (TF's dense op)
    for step in range(2):
        for p, g in ((table, grads[step]), (dense, dense_grads[step])):
            p.grad = g.clone()
        opt.step()
        for p, g in ((ref_t, grads[step]), (ref_d, dense_grads[step])):
            p.grad = g.clone()
        ref.step()
    # Step 1 was dense for every row; in step 2 row 2 had no gradient.
    state, ref_state = opt.state[table], ref.state[ref_t]
    assert torch.equal(table[[0, 1, 3]], ref_t[[0, 1, 3]])
    assert torch.equal(table[2], ref_t[2])   # no gradient: not moved by either
    rho = 0.95
    assert torch.allclose(ref_state["square_avg"][2], state["square_avg"][2] * rho)
    assert torch.equal(state["square_avg"][2], (1 - rho) * grads[0][2] ** 2)
    assert torch.equal(state["acc_delta"][[0, 1, 3]], ref_state["acc_delta"][[0, 1, 3]])
    assert not torch.equal(state["acc_delta"][2], ref_state["acc_delta"][2])
    assert torch.equal(opt.state[dense]["square_avg"], ref.state[ref_d]["square_avg"])
    assert torch.equal(dense, ref_d)
    # Step 3: row 2 resumes from its kept accumulators, so it moves further than under the
    # dense form, whose accumulators decayed once more.
    table.grad, ref_t.grad = grads[2].clone(), grads[2].clone()
    before = table[2].clone()
    opt.step()
    ref.step()
    hand_sq = rho * (1 - rho) * grads[0][2] ** 2 + (1 - rho) * grads[2][2] ** 2
    assert torch.allclose(opt.state[table]["square_avg"][2], hand_sq)
    assert not torch.equal(table[2] - before, ref_t[2] - before)


def test_sparse_adadelta_fast_path_equals_the_autograd_step():
    """The hand-derived MF gradient leaves exact zeros in the rows outside a batch, so the
    fast path and autograd's lookups update the same rows with the same numbers."""
    cfg = ModelConfig(name="mf", dim=8, optimizer="adadelta_sparse", lr=20.0, reg=1e-4,
                      batch_size=64, epochs=2)
    gen = torch.Generator().manual_seed(3)
    n_users, n_items = 60, 90
    users = torch.randint(n_users, (400,), generator=gen)
    items = torch.randint(n_items, (400,), generator=gen)
    ratings = torch.randint(1, 6, (400,), generator=gen).float() / 5

    class Autograd(Trainer):
        def train_step(self, users, items, ratings):
            return super().train_step(users, items, ratings)

    models = []
    for cls in (Trainer, Autograd):
        model = build_model(cfg, n_users, n_items, torch_generator(0, "m"))
        trainer = cls(model, cfg, RatingScale(5, 5), torch_generator(0, "t"))
        assert trainer.uses_fast_path() == (cls is Trainer)
        for _ in range(2):
            trainer.train_epoch((users, items, ratings))
        models.append(model)
    fast, auto = models
    torch.testing.assert_close(fast.user_emb, auto.user_emb, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.item_emb, auto.item_emb, rtol=1e-4, atol=1e-6)
    untouched = torch.ones(n_items, dtype=torch.bool)
    untouched[items] = False
    assert untouched.any()
    init = build_model(cfg, n_users, n_items, torch_generator(0, "m"))
    assert torch.equal(fast.item_emb[untouched], init.item_emb[untouched])


def test_profile_trains_with_adadelta_on_the_fast_path(tmp_path):
    cfg = config_from_dict(small_tree(tmp_path, model={"profile": "tcd_authors", "dim": 8,
                                                      "epochs": 3, "batch_size": 256}))
    ws = Workspace(cfg)
    data = ws.training_data(ws.split("synthetic", 0), None)
    model, info, impl = ws.train("none", (), "mf", data, 1)
    assert np.isfinite(info["best_val"])


# ----------------------------------------------------------------------------- presets

def header_commands(preset: str) -> list[list[str]]:
    text = (REPO / "configs" / preset).read_text(encoding="utf-8")
    text = re.sub(r"\\\n#\s*", " ", text)    # continued lines
    lines = re.findall(rf"^#\s+python main\.py --config configs/{preset}(.*)$", text, re.M)
    return [shlex.split(line, comments=True) for line in lines]


def test_paper_protocol_preset():
    cfg = load_config(REPO / "configs" / "tcd_paper_protocol.yaml")
    assert cfg.split.test_item == "any" and cfg.evaluation.select_on == "test"
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.reg) == ("adadelta_sparse", 20.0, 1e-4)
    assert cfg.attack.name == ["average", "random", "aush", "pga", "tna"]
    from defenses import DEFENSES
    for name in ("ml-100k", "filmtrust"):
        d = for_dataset(cfg, name)
        assert DEFENSES["at"].parse_options(d.defense.options["at"]).eps == 0.05
        assert DEFENSES["rat"].parse_options(d.defense.options["rat"]).eps == 0.05
        tcd = DEFENSES["tcd"].parse_options(d.defense.options["tcd"])
        assert (tcd.projection, tcd.t_pre) == ("round", 4 if name == "ml-100k" else 1)
    cells = plan_cells(cfg)
    # 2 datasets × 3 seeds × 2 target kinds × (Origin + 5 attacks × 4 defenses)
    assert len(cells) == 252
    commands = header_commands("tcd_paper_protocol.yaml")
    assert len(commands) == 6 and commands[0] == []
    # the files: FilmTrust only; K 40; the authors' FilmTrust "random" list: one kind, 21
    # cells; the last epoch (Table 3 as the authors' code measures it); T_pre as the flag
    for args, n_cells in zip(commands[1:], (126, 252, 63, 252, 252)):
        other = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", args)
        assert len(plan_cells(other)) == n_cells and other.experiment != cfg.experiment
    files = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", commands[1])
    ft = for_dataset(files, "filmtrust").dataset
    assert ft.split_files.train.endswith("filmtrust.train.rating")
    assert (ft.max_rating, ft.rating_steps) == (8, 8)
    assert not for_dataset(files, "ml-100k").dataset.split_files.train
    listed = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", commands[3])
    assert (listed.targets.kind, listed.targets.id_space) == ("list", "index")
    assert listed.targets.items == [539, 117, 1600, 1326, 208]
    assert load_config(REPO / "configs" / "tcd_paper_protocol.yaml",
                       commands[4]).evaluation.select_on == "last"
    flag = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", commands[5])
    assert flag.evaluation.select_on == "last"
    for name, t_pre in (("ml-100k", 5), ("filmtrust", 2)):
        options = for_dataset(flag, name).defense.options["tcd"]
        assert DEFENSES["tcd"].parse_options(options).t_pre == t_pre


def test_deviation_preset_switches_one_choice_at_a_time():
    path = REPO / "configs" / "tcd_protocol_deviation.yaml"
    ours = load_config(path)
    cells = plan_cells(ours)
    variants = {(c.defense, c.defense_params) for c in cells}
    assert variants == {("none", ()), ("at", (("eps", 0.03),)), ("at", (("eps", 0.05),)),
                        ("rat", (("eps", 0.03),)), ("rat", (("eps", 0.05),)),
                        ("tcd", (("projection", "clip"),)), ("tcd", (("projection", "round"),))}
    assert len(cells) == 216 and ours.dataset.name == "ml-100k"
    commands = header_commands("tcd_protocol_deviation.yaml")
    assert len(commands) == 4 and commands[0] == []
    switched = {}
    for args in commands[1:]:
        cfg = load_config(path, args)
        assert len(plan_cells(cfg)) == 126
        diff = {k for k in ("split.test_item", "evaluation.select_on", "model.optimizer",
                            "model.lr", "model.reg")
                if _get(cfg, k) != _get(ours, k)}
        switched[cfg.experiment] = diff
        assert cfg.defense.options == {"at": {"eps": 0.03}, "rat": {"eps": 0.03},
                                       "tcd": {"t_pre": 4, "pseudo_rate": 1.0,
                                               "projection": "clip"}}
    assert switched == {"tcd_protocol_deviation_test_item": {"split.test_item"},
                        "tcd_protocol_deviation_select_on": {"evaluation.select_on"},
                        "tcd_protocol_deviation_optimizer": {"model.optimizer", "model.lr",
                                                             "model.reg"}}


def _get(cfg, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def test_split_files_end_to_end_with_select_on_test(tmp_path):
    data = tiny_data(tiny_rows(seed=1, n_users=60, n_items=40))
    split = split_ratings(data, np.random.default_rng(2), test_item="any")
    train, test = tmp_path / "x.train.rating", tmp_path / "x.test.rating"
    write_split_files(split, train, test)
    results = tmp_path / "results"
    rc = main.main(["dataset=file", f"dataset.split_files.train={train}",
                    f"dataset.split_files.test={test}", "split.test_item=any",
                    "evaluation.select_on=test", "model.profile=tcd_authors",
                    f"results_dir={results}", f"dataset.cache_dir={tmp_path / 'cache'}",
                    "evaluation.k=10", "model.epochs=3", "model.dim=8", "attack=random",
                    "targets.kind=random", "--quiet"])
    assert rc == 0
    import pandas as pd
    runs = pd.read_csv(next(results.glob("*/runs.csv")))
    assert len(runs) == 2
    assert all(json.loads(info)["selected_on"] == "test" for info in runs["defense_info"])


def _load_benchmark(name: str):
    """A script of benchmarks/ as a module (its ``import common`` needs the folder on the path)."""
    import importlib.util
    import sys
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


@pytest.mark.skipif(not (DATA_ROOT / "ml-100k" / "u.data").is_file(), reason="no ML-100K here")
def test_write_split_files_script_round_trips_ml100k(tmp_path, capsys):
    script = _load_benchmark("write_split_files")
    keys = [f"dataset.root={DATA_ROOT}", f"dataset.cache_dir={tmp_path / 'c'}",
            "split.test_item=any", "evaluation.select_on=test"]
    assert script.main(["--out", str(tmp_path / "s"), "dataset=ml-100k", *keys]) == 0
    assert "943 users, 1682 items, 99057 training and 943 test ratings" in capsys.readouterr().out
    ours = Workspace(load_config(None, ["dataset=ml-100k", *keys])).split("ml-100k", 0)
    back = load_config(None, ["dataset=ml-100k", *keys,
                              f"dataset.split_files.train={tmp_path / 's' / 'ml-100k.train.rating'}",
                              f"dataset.split_files.test={tmp_path / 's' / 'ml-100k.test.rating'}"])
    theirs = Workspace(back).split("ml-100k", 0)
    assert np.array_equal(theirs.test_items, ours.test_items)
    assert pairs(theirs.train) == pairs(ours.train) and len(theirs.val) == 0
    assert theirs.scale == ours.scale
    assert script.main(["--out", str(tmp_path / "s"), "dataset=ml-10k"]) == 2



def test_protocol_deviation_table_filters_options_and_averages_attacks_per_seed():
    import pandas as pd
    script = _load_benchmark("protocol_deviation")
    rows = []
    for repeat, shift in ((0, 0.0), (1, 0.02)):
        def add(attack, defense, params, hr, target):
            rows.append({"dataset": "ml-100k", "target_kind": "random", "attack": attack,
                         "defense": defense, "defense_params": params, "repeat": repeat,
                         "hr@50": hr + shift, "target_hr_all@50": target + shift})
        add("none", "none", "", 0.30, 0.00)
        for attack, target in (("aush", 0.20), ("tna", 0.40)):
            add(attack, "none", "", 0.29, target)
            add(attack, "at", "eps=0.03", 0.28, target - 0.10)
            add(attack, "at", "eps=0.05", 0.27, target - 0.15)
            add(attack, "tcd", "projection=clip", 0.33, target / 4)
            add(attack, "tcd", "projection=round", 0.35, target / 2)
    cells = pd.DataFrame(rows)
    clip = script.summarize(cells, {"eps": "0.03", "projection": "clip"}, 50)
    assert clip[("random", "origin test HR")][:1] == pytest.approx((0.31,))
    assert clip[("random", "attack")][0] == pytest.approx(0.31)      # (0.2 + 0.4) / 2 + 0.01
    assert clip[("random", "AT")][0] == pytest.approx(0.21)           # only the ε 0.03 cells
    assert clip[("random", "TCD")][0] == pytest.approx(0.085)         # 0.075 and 0.095
    assert clip[("random", "TCD")][1] == pytest.approx(0.02 / 2 ** 0.5)  # std over the seeds
    assert clip[("random", "TCD test HR")][0] == pytest.approx(0.34)
    assert ("unpopular", "TCD") not in clip and ("random", "RAT") not in clip
    round_ = script.summarize(cells, {"eps": "0.05", "projection": "round"}, 50)
    assert round_[("random", "AT")][0] == pytest.approx(0.16)
    assert round_[("random", "TCD")][0] == pytest.approx(0.16)
    text = script.render([("ours", clip), ("theirs", round_)], 50)
    assert "| theirs | 2 |" in text and "0.160 ± 0.014 (+0.075)" in text
    assert script.parse_row("Π round=res/x:eps=0.03,projection=round") == (
        "Π round", Path("res/x"), {"eps": "0.03", "projection": "round"})
    with pytest.raises(SystemExit, match="label=folder"):
        script.parse_row("res/x")
