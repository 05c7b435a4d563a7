"""Shared fixtures: a small synthetic experiment config and the raw-data folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks import ATTACKS
from attacks.threat import (ThreatContext, filler_size_of, knowledge_view, n_fake_users,
                            select_targets)
from data import load_dataset, split_ratings
from data.ratings import Interactions, RatingData, RatingScale
from utils.config import DatasetConfig, SplitFilesConfig
from defenses import DEFENSES
from experiment.validation import config_from_dict
from utils.seeding import numpy_rng

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_ROOT = REPO.parent / "shared" / "datasets"
DATA_ROOT = Path(os.environ.get("ROBUSTREC_DATA", _DEFAULT_ROOT))


def small_tree(tmp_path: Path, **sections) -> dict:
    """A synthetic-data config that trains in about a second."""
    tree = {
        "experiment": "t", "seed": 3, "progress": False,
        "results_dir": str(tmp_path / "results"),
        "dataset": {"name": "synthetic", "cache_dir": str(tmp_path / "cache")},
        "targets": {"kind": "unpopular", "count": 3},
        "attack": {"name": ["random"], "size": 0.05},
        "model": {"dim": 32, "epochs": 30, "batch_size": 256},
        "evaluation": {"k": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return tree


@pytest.fixture
def small_config(tmp_path):
    def make(**sections):
        return config_from_dict(small_tree(tmp_path, **sections))
    return make


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests compare numbers across runs; a fixed thread count keeps reductions identical.
    torch.set_num_threads(1)


def require_real_data(*relative: str) -> Path:
    for rel in relative:
        path = DATA_ROOT / rel
        assert path.is_file(), (f"{path} missing: set ROBUSTREC_DATA to a folder with the raw "
                                "dataset files (CI uses ../shared/datasets)")
    return DATA_ROOT


# The attack tests' shared setting: synthetic data with 500 items (a long tail of unpopular
# items at ~40 ratings per user), its split and 5 unpopular targets.
@pytest.fixture(scope="module")
def setting():
    cfg = config_from_dict({"dataset": {"name": "synthetic", "synthetic": {"n_items": 500}},
                            "progress": False,
                            "model": {"epochs": 30, "batch_size": 256, "dim": 32}})
    data = load_dataset(cfg.dataset, 0)
    split = split_ratings(data, numpy_rng(0, "split"))
    targets = select_targets(split, "unpopular", 5, numpy_rng(1, "targets"))
    return cfg, split, targets


def make_context(setting, seed: int = 1, feedback: str = "explicit",
                 size: float = 0.1) -> ThreatContext:
    cfg, split, targets = setting
    seen = split.observed()
    visible = knowledge_view(seen, split.n_users, targets, 0.4, numpy_rng(seed, "view"))
    keep = np.zeros(split.n_users, dtype=bool)
    keep[visible] = True
    view = seen.subset(keep[seen.users])
    if feedback == "implicit":
        view = Interactions(view.users, view.items, np.ones(len(view)))
    return ThreatContext(view=view, visible_users=visible, n_users=split.n_users,
                         n_items=split.n_items, scale=split.scale, targets=targets,
                         n_fake=n_fake_users(split.n_users, size),
                         filler_size=filler_size_of(view, len(visible), len(targets)),
                         feedback=feedback, model_cfg=cfg.model, seed=seed,
                         attacks=ATTACKS, defenses=DEFENSES)


def victim_target_hr(setting, fake: Interactions | None, k: int = 10) -> float:
    """Target HR@k of a plain MF victim trained on the synthetic setting plus ``fake``."""
    from defenses import DEFENSES, TrainingData
    from utils.metrics import Evaluator

    cfg, split, targets = setting
    train, n_users = split.train, split.n_users
    if fake is not None:
        train = Interactions.concat(train, Interactions(fake.users + n_users, fake.items,
                                                        fake.ratings))
        n_users += int(fake.users.max()) + 1
    model, _ = DEFENSES["none"](None, cfg.model, "cpu", 7).fit(
        TrainingData(train, split.val, n_users, split.n_items, split.scale))
    return Evaluator(split, targets, k).evaluate(model).metrics[f"target_hr@{k}"]


# Split-file helpers shared by test_loaders, test_split, test_trainer (from issue 16's tests)

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
