"""One experiment, end to end: dataset → split → targets → attack → poisoned training data →
defense trains a model → evaluator → one result row per cell.

A *cell* is one (dataset, repeat, target kind, attack, attack size, knowledge cost, defense)
combination. Every cell of a repeat shares the split, the targets, the fake profiles of its
attack setting and the clean "Origin" model, so defenses are compared on identical inputs.
Each finished cell is written at once (atomically) under ``results/<experiment>/cells/``,
named by a content key of everything that determines it; rerunning skips finished cells.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from attacks import ATTACKS
from attacks.threat import (ThreatContext, filler_size_of, knowledge_view, n_fake_users,
                            select_targets)
from data import load_dataset, split_ratings
from data.ratings import Interactions, RatingData, Split
from defenses import DEFENSES, TrainingData
from models.trainer import resolve_device
from utils.atomic import atomic_save_npz, atomic_write_text, load_npz
from utils.config import ExperimentConfig, as_list, to_dict
from utils.metrics import EvalResult, Evaluator, prediction_shift
from utils.seeding import content_key, derive_seed

log = logging.getLogger(__name__)

ORIGIN = "none"  # attack name of the clean data


@dataclass(frozen=True)
class Cell:
    dataset: str
    repeat: int
    target_kind: str
    attack: str
    attack_size: float
    knowledge_cost: float
    defense: str

    @property
    def is_origin(self) -> bool:
        return self.attack == ORIGIN


def plan_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the config, Origin first in each (dataset, repeat, target kind) block."""
    cells = []
    attacks = [a for a in as_list(cfg.attack.name) if a != ORIGIN]
    for dataset, rep, kind in itertools.product(as_list(cfg.dataset.name), range(cfg.repeats),
                                                as_list(cfg.targets.kind)):
        cells.append(Cell(dataset, rep, kind, ORIGIN, 0.0, 0.0, "none"))
        for attack, size, cost, defense in itertools.product(
                attacks, as_list(cfg.attack.size), as_list(cfg.attack.knowledge_cost),
                as_list(cfg.defense.name)):
            cells.append(Cell(dataset, rep, kind, attack, float(size), float(cost), defense))
    return cells


def cell_key(cfg: ExperimentConfig, cell: Cell) -> str:
    """Content key of everything that determines a cell's numbers."""
    c = to_dict(cfg)
    return content_key(asdict(cell), cfg.seed, c["dataset"], c["split"], c["targets"],
                       c["model"], c["evaluation"],
                       c["attack"]["filler_size"], c["attack"]["options"].get(cell.attack),
                       c["defense"]["options"].get(cell.defense))


class Workspace:
    """Per-process memo of what cells share: datasets, splits, targets, Origin evaluations."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self._data: dict = {}
        self._splits: dict = {}
        self._targets: dict = {}
        self._origin_model: dict = {}
        self._evaluators: dict = {}
        self._origin_eval: dict = {}

    def repeat_seed(self, repeat: int) -> int:
        return derive_seed(self.cfg.seed, "repeat", repeat)

    def data(self, name: str) -> RatingData:
        if name not in self._data:
            self._data[name] = load_dataset(self.cfg.dataset, self.cfg.seed, name)
        return self._data[name]

    def split(self, name: str, repeat: int) -> Split:
        key = (name, repeat)
        if key not in self._splits:
            from utils.seeding import numpy_rng
            s = self.cfg.split
            self._splits[key] = split_ratings(
                self.data(name), numpy_rng(self.repeat_seed(repeat), "split", name),
                s.positive_threshold, s.val_fraction, self.cfg.dataset.feedback)
        return self._splits[key]

    def targets(self, name: str, repeat: int, kind: str) -> np.ndarray:
        key = (name, repeat, kind)
        if key not in self._targets:
            from utils.seeding import numpy_rng
            t = self.cfg.targets
            self._targets[key] = select_targets(
                self.split(name, repeat), kind, t.count,
                numpy_rng(self.repeat_seed(repeat), "targets", name, kind), t.items,
                t.unpopular_below)
        return self._targets[key]

    def evaluator(self, name: str, repeat: int, kind: str) -> Evaluator:
        key = (name, repeat, kind)
        if key not in self._evaluators:
            ev = self.cfg.evaluation
            self._evaluators[key] = Evaluator(self.split(name, repeat),
                                              self.targets(name, repeat, kind), ev.k,
                                              ev.batch_users, self.device)
        return self._evaluators[key]

    def training_data(self, split: Split, fake: Interactions | None) -> TrainingData:
        train, n_users = split.train, split.n_users
        if fake is not None and len(fake):
            shifted = Interactions(fake.users + split.n_users, fake.items, fake.ratings)
            train = Interactions.concat(train, shifted)
            n_users = split.n_users + int(fake.users.max()) + 1
        return TrainingData(train, split.val, n_users, split.n_items, split.scale,
                            split.feedback)

    def train(self, defense: str, data: TrainingData, seed: int):
        cls = DEFENSES[defense]
        options = cls.parse_options(self.cfg.defense.options.get(defense),
                                    f"defense.options.{defense}")
        impl = cls(options, self.cfg.model, self.device, seed, self.cfg.progress)
        return impl.fit(data)

    def origin(self, name: str, repeat: int, kind: str) -> tuple[EvalResult, dict, float]:
        """The clean model (trained once per split) evaluated on this target set."""
        key = (name, repeat)
        train_seconds = 0.0
        if key not in self._origin_model:
            start = time.perf_counter()
            seed = derive_seed(self.repeat_seed(repeat), "train", name, ORIGIN, "none")
            model, info = self.train("none", self.training_data(self.split(name, repeat), None),
                                     seed)
            train_seconds = time.perf_counter() - start
            self._origin_model[key] = (model, info)
        model, info = self._origin_model[key]
        ekey = (name, repeat, kind)
        if ekey not in self._origin_eval:
            self._origin_eval[ekey] = self.evaluator(name, repeat, kind).evaluate(model)
        return self._origin_eval[ekey], info, train_seconds

    def fake_profiles(self, cell: Cell) -> tuple[Interactions, dict]:
        """Generate (or load from the cache) the fake profiles of a cell's attack setting."""
        cfg = self.cfg
        split = self.split(cell.dataset, cell.repeat)
        targets = self.targets(cell.dataset, cell.repeat, cell.target_kind)
        seed = derive_seed(self.repeat_seed(cell.repeat), "attack", cell.dataset,
                           cell.target_kind, cell.attack, cell.attack_size, cell.knowledge_cost)
        seen = split.observed()
        from utils.seeding import numpy_rng
        visible = knowledge_view(seen, split.n_users, targets, cell.knowledge_cost,
                                 numpy_rng(seed, "view"))
        keep = np.zeros(split.n_users, dtype=bool)
        keep[visible] = True
        view = seen.subset(keep[seen.users])
        n_fake = n_fake_users(split.n_users, cell.attack_size)
        filler = cfg.attack.filler_size or filler_size_of(view, len(visible), len(targets))
        cls = ATTACKS[cell.attack]
        options = cls.parse_options(cfg.attack.options.get(cell.attack),
                                    f"attack.options.{cell.attack}")
        info = {"n_fake": n_fake, "filler_size": filler, "visible_users": len(visible)}
        key = content_key("profiles", cell.dataset, split.n_users, split.n_items, seen.users,
                          seen.items, seen.ratings, targets, cell.attack, repr(options), n_fake,
                          filler, cell.knowledge_cost, seed, cfg.dataset.feedback,
                          to_dict(cfg.model))
        path = Path(cfg.dataset.cache_dir) / "profiles" / f"{cell.attack}-{key}.npz"
        cached = load_npz(path)
        if cached is not None and {"users", "items", "ratings"} <= set(cached):
            info["cached"] = True
            return Interactions(cached["users"], cached["items"], cached["ratings"]), info
        ctx = ThreatContext(view=view, visible_users=visible, n_users=split.n_users,
                            n_items=split.n_items, scale=split.scale, targets=targets,
                            n_fake=n_fake, filler_size=filler, feedback=cfg.dataset.feedback,
                            model_cfg=cfg.model, device=str(self.device), seed=seed,
                            progress=cfg.progress)
        fake = cls(options).generate(ctx)
        atomic_save_npz(path, users=fake.users, items=fake.items, ratings=fake.ratings)
        info["cached"] = False
        return fake, info


def run_cell(ws: Workspace, cell: Cell) -> dict:
    """Compute one cell and return its result row."""
    cfg = ws.cfg
    split = ws.split(cell.dataset, cell.repeat)
    targets = ws.targets(cell.dataset, cell.repeat, cell.target_kind)
    origin_eval, origin_info, origin_seconds = ws.origin(cell.dataset, cell.repeat,
                                                         cell.target_kind)
    row = {
        "experiment": cfg.experiment, "dataset": cell.dataset, "model": cfg.model.name,
        "feedback": cfg.dataset.feedback, "target_kind": cell.target_kind,
        "targets": " ".join(str(t) for t in targets), "attack": cell.attack,
        "attack_size": cell.attack_size, "knowledge_cost": cell.knowledge_cost,
        "defense": cell.defense, "repeat": cell.repeat, "seed": ws.repeat_seed(cell.repeat),
    }
    timings = {"seconds_attack": 0.0, "seconds_train": 0.0, "seconds_eval": 0.0}
    if cell.is_origin:
        result, info = origin_eval, dict(origin_info)
        row.update({"n_fake": 0, "filler_size": 0})
        timings["seconds_train"] = origin_seconds
    else:
        start = time.perf_counter()
        fake, attack_info = ws.fake_profiles(cell)
        timings["seconds_attack"] = time.perf_counter() - start
        row.update({"n_fake": attack_info["n_fake"], "filler_size": attack_info["filler_size"]})
        start = time.perf_counter()
        seed = derive_seed(ws.repeat_seed(cell.repeat), "train", cell.dataset, cell.target_kind,
                           cell.attack, cell.attack_size, cell.knowledge_cost, cell.defense)
        model, info = ws.train(cell.defense, ws.training_data(split, fake), seed)
        timings["seconds_train"] = time.perf_counter() - start
        start = time.perf_counter()
        result = ws.evaluator(cell.dataset, cell.repeat, cell.target_kind).evaluate(model)
        timings["seconds_eval"] = time.perf_counter() - start
    row.update(result.metrics)
    row["prediction_shift"] = prediction_shift(result, origin_eval, split.scale.max_rating)
    row["best_epoch"] = info.get("best_epoch")
    row["defense_info"] = json.dumps({k: v for k, v in info.items()
                                      if k not in ("best_epoch",)}, sort_keys=True,
                                     default=float)
    row.update(timings)
    return row


def run_experiment(cfg: ExperimentConfig, argv: list[str] | None = None) -> Path:
    """Run every cell of ``cfg`` (skipping finished ones) and write the result files."""
    from utils import reporting

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(cfg.results_dir) / cfg.experiment
    cells_dir = out / "cells"
    started = time.time()
    ws = Workspace(cfg)
    plan = plan_cells(cfg)
    rows, stage_seconds = [], {"seconds_attack": 0.0, "seconds_train": 0.0, "seconds_eval": 0.0}
    bar = tqdm(plan, desc="cells", unit="cell", disable=not cfg.progress)
    for cell in bar:
        bar.set_postfix_str(f"{cell.dataset} r{cell.repeat} {cell.target_kind} "
                            f"{cell.attack}/{cell.defense}")
        path = cells_dir / f"{cell_key(cfg, cell)}.json"
        row = None
        if path.is_file():
            try:
                row = json.loads(path.read_text())
            except (OSError, ValueError):
                row = None  # a damaged entry is recomputed, never trusted
        if row is None:
            row = run_cell(ws, cell)
            atomic_write_text(path, json.dumps(row, sort_keys=True))
            for key in stage_seconds:
                stage_seconds[key] += row[key]
        rows.append(row)
    reporting.write_all(out, cfg, rows, stage_seconds, time.time() - started, argv,
                        [ws.repeat_seed(r) for r in range(cfg.repeats)])
    return out
