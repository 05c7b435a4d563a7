"""What the cells of a grid share and how one cell is computed.

:class:`Workspace` is a per-process memo of datasets, splits, targets, evaluators and Origin
models (the models and the fake profiles also live in the content-keyed disk cache,
``dataset.cache_dir``, so other processes reuse them). :func:`run_cell` computes one cell:
dataset → split → targets → attack → poisoned training data → defense trains a model →
evaluator → one result row. Every cell of a repeat shares the split, the targets, the fake
profiles of its attack setting and the Origin model, so defenses are compared on identical
inputs. The global RNGs are reseeded per stage, so a cell's numbers never depend on what ran
before it in the same process.
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from attacks import ATTACKS
from attacks.poison_file import export_poison
from attacks.threat import (AttackError, ThreatContext, filler_size_of, knowledge_view,
                            n_fake_users, select_targets)
from data import load_dataset, split_ratings
from data.split import held_out_interactions, split_by_ratio, split_fake_rows
from data.ratings import Interactions, RatingData, Split, TrainingData
from defenses import DEFENSES
from models import build_model
from models.trainer import resolve_device
from utils.atomic import atomic_write, load_npz
from utils.config import ExperimentConfig, as_list
from utils.metrics import (Evaluator, combine_outcomes, detection_metrics, prediction_shift,
                           rank_shift)
from experiment.planning import (FILE_ATTACK, ORIGIN, UNDEFENDED, Cell, attack_sources_digest,
                                 cell_sources_digest, component_options, model_config, model_key,
                                 non_default,
                                 params_text, poison_file_digest)
from utils.seeding import content_key, derive_seed, numpy_rng, torch_generator


def seed_globals(seed: int) -> None:
    """Reseed the global RNGs before each stage: a component that (wrongly) draws from them
    still gets the same numbers whatever ran before in the process."""
    seed = seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- workspace

class Workspace:
    """Per-process memo of what cells share: datasets, splits, targets, evaluators and the
    Origin models (also kept in the disk cache, so other processes reuse them)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.cache = Path(cfg.dataset.cache_dir)
        self._data: dict = {}
        self._splits: dict = {}
        self._targets: dict = {}
        self._evaluators: dict = {}
        self._origin_model: dict = {}
        self._origin_eval: dict = {}
        if cfg.evaluation.select_on == "test":
            logging.getLogger(__name__).warning(
                "evaluation.select_on: test — every model keeps the epoch of smallest TEST MSE "
                "(the TCD authors' code), which biases the test metrics upwards: for "
                "reproduction only, never for conclusions")

    def repeat_seed(self, repeat: int) -> int:
        return derive_seed(self.cfg.seed, "repeat", repeat)

    def data(self, name: str) -> RatingData:
        if name not in self._data:
            self._data[name] = load_dataset(self.cfg.dataset, self.cfg.seed, name)
        return self._data[name]

    def split(self, name: str, repeat: int) -> Split:
        key = (name, repeat)
        if key not in self._splits:
            s = self.cfg.split
            # Selection on the test set or none (the last epoch): no validation rows, every
            # non-test row trains. With no rows to validate on, every epoch's validation loss
            # is NaN and each fit keeps its last epoch.
            val_fraction = 0.0 if self.cfg.evaluation.select_on != "validation" else \
                s.val_fraction
            if s.mode == "ratio":   # the implicit top-K protocol: a share of each user's rows
                self._splits[key] = split_by_ratio(
                    self.data(name), numpy_rng(self.repeat_seed(repeat), "split", name),
                    s.test_fraction, val_fraction, self.cfg.dataset.feedback)
                return self._splits[key]
            self._splits[key] = split_ratings(
                self.data(name), numpy_rng(self.repeat_seed(repeat), "split", name),
                s.positive_threshold, val_fraction, self.cfg.dataset.feedback, s.test_item)
        return self._splits[key]

    def targets(self, name: str, repeat: int, kind: str) -> np.ndarray:
        key = (name, repeat, kind)
        if key not in self._targets:
            t = self.cfg.targets
            items = t.items
            if kind == "list" and t.id_space == "raw":
                try:
                    items = list_target_indices(t.items, self.data(name).raw_item_ids, name)
                except ValueError as exc:
                    raise AttackError(str(exc)) from None
            self._targets[key] = select_targets(
                _with_test_rows(self.split(name, repeat)), kind, t.count,
                numpy_rng(self.repeat_seed(repeat), "targets", name, kind), items,
                t.unpopular_below)
        return self._targets[key]

    def evaluator(self, name: str, repeat: int, kind: str) -> Evaluator:
        key = (name, repeat, kind)
        if key not in self._evaluators:
            ev = self.cfg.evaluation
            self._evaluators[key] = Evaluator(self.split(name, repeat),
                                              self.targets(name, repeat, kind), ev.k,
                                              ev.batch_users, self.device,
                                              head_share=ev.tail.head_share,
                                              protocol=self.cfg.split.mode, test_k=ev.test_k)
        return self._evaluators[key]

    def training_data(self, split: Split, fake: Interactions | None,
                      cell: Cell | None = None) -> TrainingData:
        """The data a defense sees: the real users' split plus the fake rows, appended after
        the real users. ``split.fake_rows: train`` puts every fake row in training;
        ``platform`` splits each fake user's rows like a real user's, by a draw fixed per
        attack setting (every defense of a cell sees the same rows)."""
        train, val, n_users = split.train, split.val, split.n_users
        if self.cfg.evaluation.select_on == "test":
            val = held_out_interactions(split)   # the defense selects its epoch on the test set
        if fake is not None and len(fake):
            shifted = Interactions(fake.users + split.n_users, fake.items, fake.ratings)
            if self.cfg.split.fake_rows == "platform":
                rng = numpy_rng(self.repeat_seed(cell.repeat), "fake-rows", cell.dataset,
                                cell.target_kind, cell.attack, cell.attack_size,
                                cell.knowledge_cost, cell.attack_params, *_n_fake_part(cell))
                fake_train, fake_val = split_fake_rows(shifted, rng, self.cfg.split.val_fraction)
                train = Interactions.concat(train, fake_train)
                val = Interactions.concat(val, fake_val)
            else:
                train = Interactions.concat(train, shifted)
            n_users = split.n_users + int(fake.users.max()) + 1
        return TrainingData(train, val, n_users, split.n_items, split.scale, split.feedback,
                            val_known=self.cfg.evaluation.select_on != "test")

    def train(self, defense: str, params: tuple, model: str, data: TrainingData, seed: int):
        options = component_options(self.cfg, "defense", defense, params)
        impl = DEFENSES[defense](options, model_config(self.cfg, model), self.device, seed,
                                 self.cfg.progress)
        seed_globals(derive_seed(seed, "globals"))
        model, info = impl.fit(data)
        return model, info, impl

    def origin_seed(self, name: str, repeat: int) -> int:
        return derive_seed(self.repeat_seed(repeat), "train", name, ORIGIN, UNDEFENDED)

    def origin_model(self, name: str, model: str, repeat: int) -> tuple:
        """The clean model of a split: memo, else the disk cache, else trained and cached.
        Returns ``(model, info, seconds it took to train)``."""
        key = (name, model, repeat)
        if key in self._origin_model:
            return self._origin_model[key]
        split = self.split(name, repeat)
        mcfg = model_config(self.cfg, model)
        seed = self.origin_seed(name, repeat)
        data = self.training_data(split, None)
        ckey = content_key("origin", split.train.users, split.train.items, split.train.ratings,
                           data.val.users, data.val.items, data.val.ratings, split.n_users,
                           split.n_items, repr(split.scale), split.feedback, model_key(mcfg), seed,
                           cell_sources_digest(None, UNDEFENDED))
        path = self.cache / "models" / f"origin-{model}-{ckey}.npz"
        cached = load_npz(path)
        net = None
        if cached is not None and {"__info__", "__seconds__"} <= set(cached):
            net = build_model(mcfg, data.n_users, data.n_items, torch_generator(seed, "skeleton"),
                              data.feedback, interactions=data.train)
            state = {k: torch.from_numpy(v) for k, v in cached.items() if not k.startswith("__")}
            try:
                net.load_state_dict(state)
                net.to(self.device)
                info = json.loads(str(cached["__info__"]))
                seconds = float(cached["__seconds__"])
            except (RuntimeError, ValueError):
                net = None  # a damaged or foreign entry is retrained, never trusted
        if net is None:
            start = time.perf_counter()
            net, info, _ = self.train(UNDEFENDED, (), model, data, seed)
            seconds = time.perf_counter() - start
            arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            arrays["__info__"] = np.array(json.dumps(info, sort_keys=True, default=jsonable))
            arrays["__seconds__"] = np.array(seconds)
            save_npz(path, arrays)
        self._origin_model[key] = (net, info, seconds)
        return self._origin_model[key]

    def origin(self, name: str, model: str, repeat: int, kind: str) -> tuple:
        """The Origin model's evaluation on one target set, its info and training seconds."""
        net, info, seconds = self.origin_model(name, model, repeat)
        key = (name, model, repeat, kind)
        if key not in self._origin_eval:
            self._origin_eval[key] = self.evaluator(name, repeat, kind).evaluate(net)
        return self._origin_eval[key], info, seconds

    def fake_profiles(self, cell: Cell) -> tuple[Interactions, dict]:
        """Generate (or load from the cache) the fake profiles of a cell's attack setting;
        ``info["seconds"]`` is the time their generation took."""
        cfg = self.cfg
        split = self.split(cell.dataset, cell.repeat)
        targets = self.targets(cell.dataset, cell.repeat, cell.target_kind)
        seed = derive_seed(self.repeat_seed(cell.repeat), "attack", cell.dataset,
                           cell.target_kind, cell.attack, cell.attack_size, _seed_cost(cell),
                           *_n_fake_part(cell))
        seen = split.observed()
        # A poison file has no knowledge cost of its own (its view is unused).
        visible = knowledge_view(seen, split.n_users, targets, cell.knowledge_cost or 1.0,
                                 numpy_rng(seed, "view"))
        keep = np.zeros(split.n_users, dtype=bool)
        keep[visible] = True
        view = seen.subset(keep[seen.users])
        # attack.n_fake, else the share of real users; 0 lets a poison file bring its own count.
        n_fake = cell.n_fake or (0 if cell.attack == FILE_ATTACK
                                 else n_fake_users(split.n_users, cell.attack_size))
        filler = cfg.attack.filler_size or filler_size_of(view, len(visible), len(targets))
        options = component_options(cfg, "attack", cell.attack, cell.attack_params)
        mcfg = model_config(cfg, cell.model)
        info = {"n_fake": n_fake, "filler_size": filler, "visible_users": len(visible)}
        key = content_key("profiles", cell.dataset, split.n_users, split.n_items, seen.users,
                          seen.items, seen.ratings, targets, cell.attack, non_default(options),
                          n_fake, filler, cell.knowledge_cost, seed, cfg.dataset.feedback,
                          model_key(mcfg), attack_sources_digest(cell.attack, options),
                          poison_file_digest(options))
        path = self.cache / "profiles" / f"{cell.attack}-{key}.npz"
        cached = load_npz(path)
        if cached is not None and {"users", "items", "ratings"} <= set(cached):
            info["cached"] = True
            info["seconds"] = float(cached["seconds"]) if "seconds" in cached else 0.0
            fake = Interactions(cached["users"], cached["items"], cached["ratings"])
            info["n_fake"] = n_fake or _count_users(fake)
            return fake, info
        ctx = ThreatContext(view=view, visible_users=visible, n_users=split.n_users,
                            n_items=split.n_items, scale=split.scale, targets=targets,
                            n_fake=n_fake, filler_size=filler, feedback=cfg.dataset.feedback,
                            model_cfg=mcfg, device=str(self.device), seed=seed,
                            progress=cfg.progress,
                            extra={"raw_item_ids": self.data(cell.dataset).raw_item_ids},
                            attacks=ATTACKS, defenses=DEFENSES)
        start = time.perf_counter()
        seed_globals(derive_seed(seed, "globals"))
        fake = ATTACKS[cell.attack](options).generate(ctx)
        info["seconds"] = time.perf_counter() - start
        save_npz(path, {"users": fake.users, "items": fake.items, "ratings": fake.ratings,
                         "seconds": np.array(info["seconds"])})
        info["cached"] = False
        info["n_fake"] = n_fake or _count_users(fake)
        return fake, info

    def export_profiles(self, cell: Cell, fake: Interactions) -> None:
        """Write a cell's fake profiles to ``results/<experiment>/poison/`` in the formats of
        ``attack.export`` (one file stem per attack setting and repeat)."""
        formats = self.cfg.attack.export
        if not formats:
            return
        split = self.split(cell.dataset, cell.repeat)
        stem = "_".join([cell.dataset, cell.model, f"r{cell.repeat}", cell.target_kind,
                         cell.attack, f"size{cell.attack_size:g}", f"kc{cell.knowledge_cost:g}"]
                        + [f"{k}{Path(str(v)).stem}" if k == "path" else f"{k}{v}"
                           for k, v in sorted(dict(cell.attack_params).items())])
        export_poison(fake, Path(self.cfg.results_dir) / self.cfg.experiment / "poison", stem,
                      self.data(cell.dataset).raw_item_ids, split.scale, split.n_items, formats)


def _with_test_rows(split: Split) -> Split:
    """The split as target selection reads it: its popularity counts cover all of the real
    data, so a ratio split's held-out rows (``RatioSplit.test``) count as ratings too (a
    leave-one-out split's test item is counted by ``select_targets`` itself)."""
    test = getattr(split, "test", None)
    if test is None or not len(test):
        return split
    return Split(Interactions.concat(split.train, test), split.val, split.test_items,
                 split.test_ratings, split.n_users, split.n_items, split.scale, split.feedback)


def _n_fake_part(cell: Cell) -> tuple:
    """``attack.n_fake`` in a seed's derivation, only when set (earlier cells keep theirs)."""
    return (cell.n_fake,) if cell.n_fake else ()


def _count_users(fake: Interactions) -> int:
    return int(fake.users.max()) + 1 if len(fake) else 0


def list_target_indices(items: list, raw_item_ids: np.ndarray, dataset: str) -> list[int]:
    """0-based indices of the dataset's own item ids (``targets.items``); an id the dataset does
    not hold is a ValueError naming it."""
    index = {str(raw): n for n, raw in enumerate(np.asarray(raw_item_ids).tolist())}
    unknown = [item for item in items if str(item) not in index]
    if unknown:
        raise ValueError(
            f"targets.items: item {unknown[0]!r} is not an item id of {dataset} (its ids run "
            f"{raw_item_ids[0]}…{raw_item_ids[-1]}); give the dataset's own item ids, or set "
            "targets.id_space: index for 0-based indices")
    return [index[str(item)] for item in items]


def jsonable(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def save_npz(path: Path, arrays: dict, compressed: bool = False) -> None:
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to a name
            save(handle, **arrays)

    atomic_write(path, write)


# ----------------------------------------------------------------------------- one cell

Stage = Callable[[str], None]


def run_cell(ws: Workspace, cell: Cell, stage: Stage | None = None
             ) -> tuple[dict, dict[str, np.ndarray]]:
    """Compute one cell: its result row and its arrays: the per-user rank shifts of the
    targets (rank before − rank after the attack, over eligible (user, target) pairs; attacked
    cells) and the per-user outcomes of the metrics with an interval (``test_hit``,
    ``target_hit``, ``mrr``, …; every cell)."""
    stage = stage or (lambda name: None)
    cfg = ws.cfg
    split = ws.split(cell.dataset, cell.repeat)
    targets = ws.targets(cell.dataset, cell.repeat, cell.target_kind)
    stage("origin")
    origin_eval, origin_info, origin_seconds = ws.origin(cell.dataset, cell.model, cell.repeat,
                                                         cell.target_kind)
    row = {
        "experiment": cfg.experiment, "dataset": cell.dataset, "model": cell.model,
        "feedback": cfg.dataset.feedback, "target_kind": cell.target_kind,
        # The dataset's own item ids (what a user gives in targets.items).
        "targets": " ".join(str(t) for t in ws.data(cell.dataset).raw_item_ids[targets]),
        "attack": cell.attack,
        "attack_size": cell.attack_size, "knowledge_cost": cell.knowledge_cost,
        "attack_params": params_text(cell.attack_params), "defense": cell.defense,
        "defense_params": params_text(cell.defense_params), "repeat": cell.repeat,
        "seed": ws.repeat_seed(cell.repeat), "n_fake": 0, "filler_size": 0,
    }
    timings = {"seconds_attack": 0.0, "seconds_train": 0.0, "seconds_eval": 0.0}
    arrays: dict[str, np.ndarray] = {}
    detections: list[dict] = []   # per training of a defense that distrusts rows or users
    evaluator = ws.evaluator(cell.dataset, cell.repeat, cell.target_kind)
    if cell.is_origin:
        result, info = origin_eval, dict(origin_info)
        timings["seconds_train"] = origin_seconds
        seed = ws.origin_seed(cell.dataset, cell.repeat)
        data = ws.training_data(split, None)
    else:
        fake = None
        if cell.attacked:
            stage("attack")
            fake, attack_info = ws.fake_profiles(cell)
            timings["seconds_attack"] = attack_info["seconds"]
            row.update(n_fake=attack_info["n_fake"], filler_size=attack_info["filler_size"])
            if not cell.attack_size:   # attack.n_fake or a poison file: the size it amounts to
                row["attack_size"] = round(attack_info["n_fake"] / split.n_users, 6)
        stage("train")
        start = time.perf_counter()
        seed = derive_seed(ws.repeat_seed(cell.repeat), "train", cell.dataset, cell.target_kind,
                           cell.attack, cell.attack_size, _seed_cost(cell), cell.defense,
                           *_n_fake_part(cell))
        data = ws.training_data(split, fake, cell)
        model, info, defense = ws.train(cell.defense, cell.defense_params, cell.model, data,
                                        seed)
        timings["seconds_train"] = time.perf_counter() - start
        stage("evaluate")
        start = time.perf_counter()
        result = evaluator.evaluate(model)
        detections.append(_detection(defense, data, split.n_users, targets))
        if hasattr(defense, "certificate"):   # certified defenses (pore): columns per e
            row.update(defense.certificate(model, split, evaluator,
                                           grid_fake_counts(cfg, split.n_users, row["n_fake"])))
        timings["seconds_eval"] = time.perf_counter() - start
        arrays["rank_shift"] = rank_shift(result, origin_eval).astype(np.int32)
    results = [result]
    for r in range(1, cfg.evaluation.retrains):
        # The same data, a new initialization and batch order per retraining.
        stage("retrain")
        start = time.perf_counter()
        again, _, defense = ws.train(cell.defense, cell.defense_params, cell.model, data,
                                     derive_seed(seed, "retrain", r))
        timings["seconds_train"] += time.perf_counter() - start
        start = time.perf_counter()
        results.append(evaluator.evaluate(again))
        detections.append(_detection(defense, data, split.n_users, targets))
        timings["seconds_eval"] += time.perf_counter() - start
    row.update({name: float(np.mean([res.metrics[name] for res in results]))
                for name in result.metrics})
    # Per-user outcomes (combined over retrainings) for the intervals of utils/uncertainty.py.
    arrays.update(combine_outcomes(results))
    detections = [d for d in detections if d]
    if detections:
        row.update({name: float(np.mean([d[name] for d in detections]))
                    for name in detections[0]})
    row["prediction_shift"] = float(np.mean(
        [prediction_shift(res, origin_eval, split.scale.max_rating) for res in results]))
    if len(results) > 1:
        k = cfg.evaluation.k
        row["retrains"] = len(results)
        row[f"target_hr@{k}_per_retrain"] = " ".join(
            f"{res.metrics[f'target_hr@{k}']:.6g}" for res in results)
    row["best_epoch"] = info.get("best_epoch")
    if cfg.evaluation.select_on != "validation":
        # Marks the cell as selected on the test set, or kept at its last epoch.
        info = {**info, "selected_on": cfg.evaluation.select_on}
    # No validation rows (select_on: last) leave best_val NaN: written as null, valid JSON.
    row["defense_info"] = json.dumps({k: (None if isinstance(v, float) and v != v else v)
                                      for k, v in info.items() if k != "best_epoch"},
                                     sort_keys=True, default=jsonable)
    row.update(timings)
    return row, arrays


SWEEP_SEED_COST = 0.4   # the papers' knowledge cost, whose cells keep their earlier seeds


def _seed_cost(cell: Cell) -> float:
    """The knowledge cost the attack's and the victim's seeds are derived from: the same for
    every cost of a sweep (common random numbers), so that Table 2's columns differ only in
    what the attacker sees — its knowledge view, item statistics and filler size — and not in
    which fillers, ratings and initialization were drawn. With independent draws per cost, the
    draw alone moves one unpopular-target cell by about ±0.17 target HR and buries the trend
    (issue 19). 0.4 keeps the seeds of the cells computed before; clean cells keep theirs."""
    return SWEEP_SEED_COST if cell.attacked and cell.knowledge_cost else cell.knowledge_cost


def _detection(defense, data: TrainingData, n_real_users: int, targets: np.ndarray) -> dict:
    """Precision, recall and false positives of what the defense distrusted (the evaluation
    side knows the fake users and the targets; the defense never does). Empty for defenses
    that judge no data."""
    distrust = defense.distrusted()
    if distrust is None:
        return {}
    return detection_metrics(distrust.rows, distrust.users, data.train.users, n_real_users,
                             data.train.items, targets)


def grid_fake_counts(cfg: ExperimentConfig, n_real: int, n_fake: int) -> list[int]:
    """The numbers of fake users a certified defense certifies against (``certify_e``'s
    ``n_fake``): the cell's own on an attacked cell, else every attack setting's of the grid
    (``attack.n_fake`` or the sizes' share of the real users)."""
    if n_fake:
        return [int(n_fake)]
    if cfg.attack.n_fake is not None:
        return sorted({int(v) for v in as_list(cfg.attack.n_fake)})
    return sorted({n_fake_users(n_real, float(size)) for size in as_list(cfg.attack.size)})
