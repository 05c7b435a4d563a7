"""The threat model's evaluation side (threat-model.md §1, §3, §4): the ``platform`` split of
fake users' rows, detection metrics on hand-computed cases, and the worst-case and detection
tables."""
from __future__ import annotations

import numpy as np
import pytest

from data.ratings import Interactions
from data.split import split_fake_rows
from tests.conftest import small_tree
from experiment import reporting
from utils.config import ConfigError
from experiment.validation import config_from_dict
from utils.metrics import detection_metrics
from experiment.planning import plan_cells
from experiment.workspace import Workspace, run_cell

VAL = 0.1


def _fake(n_users=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, n_users)
    users = np.repeat(np.arange(n_users), lengths)
    items = np.concatenate([rng.choice(500, n, replace=False) for n in lengths])
    return Interactions(users, items, rng.integers(1, 6, len(users)) / 5)


def test_fake_users_hold_validation_rows_in_the_real_users_proportion():
    fake = _fake()
    train, val = split_fake_rows(fake, np.random.default_rng(1), VAL)
    counts = np.bincount(fake.users)
    n_val = np.bincount(val.users, minlength=len(counts))
    n_train = np.bincount(train.users, minlength=len(counts))
    assert np.all(np.abs(n_val - VAL * counts) < 1 + 1e-9)      # ±1 row each
    assert np.all(n_train >= 1)                                   # at least one training row
    assert abs(n_val.sum() / counts.sum() - VAL) < 0.02
    # Nothing lost, nothing duplicated: train ∪ validation is the fake user's profile.
    both = Interactions.concat(train, val)
    key = lambda x: sorted(zip(x.users.tolist(), x.items.tolist(), x.ratings.tolist()))
    assert key(both) == key(fake)
    # The draw is the seed's.
    again = split_fake_rows(fake, np.random.default_rng(1), VAL)[1]
    assert np.array_equal(again.items, val.items)


def _platform_workspace(tmp_path, fake_rows):
    tree = small_tree(tmp_path, split={"fake_rows": fake_rows},
                      attack={"name": ["average"], "size": 0.05},
                      defense={"name": ["none", "share_no_adv"]})
    cfg = config_from_dict(tree)
    return cfg, Workspace(cfg)


def test_platform_split_keeps_the_train_protocols_rows_and_is_shared_by_every_defense(
        tmp_path):
    cfg, ws = _platform_workspace(tmp_path, "platform")
    _, ws_train = _platform_workspace(tmp_path, "train")
    cells = [c for c in plan_cells(cfg) if c.attacked]
    assert {c.defense for c in cells} == {"none", "share_no_adv"}
    split = ws.split(cells[0].dataset, 0)
    fake, _ = ws.fake_profiles(cells[0])
    data = [ws.training_data(split, fake, c) for c in cells]
    reference = ws_train.training_data(split, fake, cells[0])
    n_real = split.n_users
    # Every defense of the cell sees the same rows (and a fresh workspace draws them again).
    fresh = Workspace(cfg).training_data(split, fake, cells[1])
    for d in data[1:] + [fresh]:
        for part in ("train", "val"):
            assert np.array_equal(getattr(d, part).items, getattr(data[0], part).items)
            assert np.array_equal(getattr(d, part).users, getattr(data[0], part).users)
    d = data[0]
    # train ∪ validation under platform = the train protocol's rows; real users' rows unmoved.
    rows = lambda x: sorted(zip(x.users.tolist(), x.items.tolist()))
    assert rows(Interactions.concat(d.train, d.val)) == rows(
        Interactions.concat(reference.train, reference.val))
    assert np.all(reference.val.users < n_real)
    assert np.array_equal(d.val.users[d.val.users < n_real], split.val.users)
    fake_val = np.bincount(d.val.users[d.val.users >= n_real] - n_real,
                           minlength=int(fake.users.max()) + 1)
    assert fake_val.sum() > 0
    assert np.all(np.abs(fake_val - VAL * np.bincount(fake.users)) < 1 + 1e-9)


def test_fake_rows_option_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="split.fake_rows"):
        config_from_dict(small_tree(tmp_path, split={"fake_rows": "validation"}))


def test_detection_metrics_on_a_hand_computed_case():
    # Users 0-2 real, 3-4 fake; rows:    u0 u0 u1 u2 u3 u3 u4 u4 ; items 7 is the target.
    users = np.array([0, 0, 1, 2, 3, 3, 4, 4])
    items = np.array([1, 2, 1, 7, 7, 5, 7, 6])
    rows = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    out = detection_metrics(rows, None, users, 3, items, np.array([7]))
    assert out["detect_precision"] == pytest.approx(3 / 4)
    assert out["detect_recall"] == pytest.approx(3 / 4)
    assert out["detect_fpr"] == pytest.approx(1 / 4)
    assert out["detect_payload_recall"] == pytest.approx(2 / 2)
    assert "detect_user_precision" not in out
    flagged = np.array([0, 1, 0, 1, 0], dtype=bool)
    out = detection_metrics(rows, flagged, users, 3)
    assert out["detect_user_precision"] == pytest.approx(1 / 2)
    assert out["detect_user_recall"] == pytest.approx(1 / 2)
    assert out["detect_user_fpr"] == pytest.approx(1 / 3)
    # Nothing distrusted: precision is undefined, not zero.
    assert np.isnan(detection_metrics(np.zeros(8, bool), None, users, 3)["detect_precision"])


def test_defenses_that_distrust_rows_get_detection_columns(tmp_path):
    cfg, ws = _platform_workspace(tmp_path, "platform")
    cells = [c for c in plan_cells(cfg) if c.attacked]
    share = next(c for c in cells if c.defense == "share_no_adv")
    none = next(c for c in cells if c.defense == "none")
    row, _ = run_cell(ws, share)
    assert 0 <= row["detect_fpr"] < 0.5 and row["detect_rows"] > 0
    assert 0 <= row["detect_precision"] <= 1 and 0 <= row["detect_recall"] <= 1
    assert "detect_fpr" not in run_cell(ws, none)[0]


def _runs():
    rows = []
    levels = {("none", "average"): 0.40, ("none", "clone"): 0.90, ("share", "average"): 0.05,
              ("share", "clone"): 0.30}
    for rep in range(3):
        rows.append(dict(_coords("none", "none", rep), **{"target_hr@50": 0.0}))
        for (defense, attack), level in levels.items():
            extra = ({"detect_precision": 0.5, "detect_recall": 0.25, "detect_fpr": 0.01}
                     if defense == "share" else {})
            rows.append(dict(_coords(attack, defense, rep), **{"target_hr@50": level + rep / 100},
                             **extra))
    return reporting.add_relative_metrics(reporting.runs_frame(rows), 50)


def _coords(attack, defense, rep):
    return {"experiment": "e", "cell": f"{attack}-{defense}-{rep}", "dataset": "ml-100k",
            "model": "mf", "feedback": "explicit", "target_kind": "unpopular", "targets": "1",
            "attack": attack, "attack_size": 0.0 if attack == "none" else 0.03,
            "knowledge_cost": 0.0 if attack == "none" else 0.4, "attack_params": "",
            "defense": defense, "defense_params": "", "repeat": rep, "seed": rep,
            "hr@50": 0.3, "defense_info": "{}"}


def test_worst_case_table_names_the_worst_attack_per_defense():
    summary = reporting.summarize(_runs(), 50)
    tables = {t.title.split(" · ")[0]: t for t in reporting.build_tables(summary, 50)}
    worst = tables["Worst case"]
    by_defense = {r[1]: r[2:] for r in worst.rows}
    # The rows are defenses: the undefended one is named as such, not "Attack".
    mean, top, share, tail_share, tail_hr = by_defense["none (undefended)"]
    assert mean.mean == pytest.approx((0.41 + 0.91) / 2)
    assert top.mean == pytest.approx(0.91) and top.note == "clone"
    assert tail_share is None and tail_hr is None   # no tail metrics in these runs
    mean, top, share, _, _ = by_defense["SHARE"]
    assert top.mean == pytest.approx(0.31) and top.note == "clone"
    assert share.mean == pytest.approx(0.31 / 0.91)
    # Attacks that tie at the top are not singled out.
    flat = _runs()
    flat.loc[flat.defense == "share", "target_hr@50"] = 0.0
    ties = {t.title.split(" · ")[0]: t for t in reporting.build_tables(
        reporting.summarize(flat, 50), 50)}["Worst case"]
    assert {r[1]: r[3] for r in ties.rows}["SHARE"].note == "every attack"
    text = reporting.render_markdown("e", [worst], None, 3)
    # t interval over 3 seeds (no per-user outcomes): 0.91 ± t(2, .975)·0.01/√3
    assert "0.9100 [0.8852, 0.9348] (clone)" in text
    detection = tables["Detection"]
    assert [r[2] for r in detection.rows] == ["SHARE", "SHARE"]
    assert detection.rows[0][3].mean == pytest.approx(0.5)
