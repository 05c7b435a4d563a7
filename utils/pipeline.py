"""One experiment, end to end: dataset → split → targets → attack → poisoned training
data → defense trains a model → evaluator → one result row per cell.

A *cell* is one (dataset, model, repeat, target kind, attack, attack size, knowledge cost, swept
attack options, defense, swept defense options) combination. ``plan_cells`` crosses every
list-valued coordinate of the config and adds, once per (dataset, model, seed, target kind), the
clean "Origin" cell and, per attack setting, the undefended cell, so RI can always be computed.
Every cell of a repeat shares the split, the targets, the fake profiles of its attack setting
and the Origin model, so defenses are compared on identical inputs.

Execution is a small task graph: the Origin model of a (dataset, model, repeat) and the fake
profiles of an attack setting are prerequisite tasks, written to the content-keyed cache
(``dataset.cache_dir``), and cells run once their prerequisites are done. :func:`execute` is the
one function every executor calls (in this process, a local process pool or Ray; see
``utils/executors.py``); a cell's numbers depend only on the config and the seed, never on the
executor, the worker count or which cells ran before it in the same process (the global RNGs are
reseeded per stage and torch runs ``threads`` threads). The driver writes each finished cell
at once, atomically, under ``results/<experiment>/cells/<key>.json`` (+ ``<key>.npz`` with the
per-user rank shifts); rerunning skips finished cells, so a killed grid resumes and ends with
exactly the rows of an uninterrupted run. A cell that fails with a non-finite loss or out of
memory is recorded (``<key>.failed.json``, ``failed.csv``) and the grid goes on; failed cells
are retried on the next run.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import heapq
import itertools
import json
import logging
import random
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from attacks import ATTACKS
from attacks.poison_file import export_poison
from attacks.threat import (ThreatContext, filler_size_of, knowledge_view, n_fake_users,
                            select_targets)
from data import load_dataset, split_ratings
from data.split import split_fake_rows
from data.ratings import Interactions, RatingData, Split
from defenses import DEFENSES, TrainingData
from models import build_model
from models.trainer import NonFiniteLossError, resolve_device
from utils.atomic import atomic_write, atomic_write_text, load_npz
from utils.config import (ExperimentConfig, ModelConfig, as_list, for_dataset, option_sweeps,
                          to_dict)
from utils.metrics import Evaluator, detection_metrics, prediction_shift, rank_shift
from utils.seeding import content_key, derive_seed, numpy_rng, torch_generator

log = logging.getLogger(__name__)

ORIGIN = "none"       # attack name of the clean data
UNDEFENDED = "none"   # defense name of plain training
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Cell:
    dataset: str
    repeat: int
    target_kind: str
    attack: str
    attack_size: float
    knowledge_cost: float
    defense: str
    model: str = "mf"
    attack_params: tuple = ()    # swept attack options: sorted ((option, value), ...)
    defense_params: tuple = ()   # swept defense options

    @property
    def is_origin(self) -> bool:
        return self.attack == ORIGIN and self.defense == UNDEFENDED

    @property
    def attacked(self) -> bool:
        return self.attack != ORIGIN

    def label(self) -> str:
        attack = "clean" if not self.attacked else (
            f"{self.attack}{params_text(self.attack_params, ' ')}"
            f"({self.attack_size:g},c={self.knowledge_cost:g})")
        return (f"{self.dataset}/{self.model} r{self.repeat} {self.target_kind} {attack} "
                f"{self.defense}{params_text(self.defense_params, ' ')}")


def params_text(params: tuple, prefix: str = "") -> str:
    """Swept options as ``key=value,key=value`` (the runs.csv column and table labels)."""
    if not params:
        return ""
    return prefix + ",".join(f"{k}={v}" for k, v in params)


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def plan_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the config. Per (dataset, model, repeat, target kind): the Origin cell
    first; with ``attack: none`` listed, every defense on the clean data; then per attack
    setting the undefended cell followed by each defense (and each swept option value)."""
    names = _unique(as_list(cfg.attack.name))
    clean_defended = ORIGIN in names
    attacks = [a for a in names if a != ORIGIN]
    defenses = _unique([UNDEFENDED] + as_list(cfg.defense.name))
    cells = []
    for dataset, model, rep, kind in itertools.product(
            _unique(as_list(cfg.dataset.name)), _unique(as_list(cfg.model.name)),
            range(cfg.repeats), _unique(as_list(cfg.targets.kind))):
        dcfg = for_dataset(cfg, dataset)
        attack_sweeps = {a: option_sweeps(ATTACKS[a].Options, dcfg.attack.options.get(a),
                                          f"attack.options.{a}") for a in attacks}
        defense_sweeps = {d: option_sweeps(DEFENSES[d].Options, dcfg.defense.options.get(d),
                                           f"defense.options.{d}") for d in defenses}
        cells.append(Cell(dataset, rep, kind, ORIGIN, 0.0, 0.0, UNDEFENDED, model))
        if clean_defended:
            cells += [Cell(dataset, rep, kind, ORIGIN, 0.0, 0.0, d, model, (), dp)
                      for d in defenses[1:] for dp in defense_sweeps[d]]
        for attack, size, cost in itertools.product(
                attacks, _unique(as_list(cfg.attack.size)),
                _unique(as_list(cfg.attack.knowledge_cost))):
            for ap in attack_sweeps[attack]:
                cells += [Cell(dataset, rep, kind, attack, float(size), float(cost), d, model,
                               ap, dp) for d in defenses for dp in defense_sweeps[d]]
    return cells


def model_config(cfg: ExperimentConfig, name: str) -> ModelConfig:
    return dataclasses.replace(cfg.model, name=name)


def component_options(cfg: ExperimentConfig, kind: str, name: str, params: tuple):
    """The parsed options of attack or defense ``name`` with the cell's swept values."""
    section, registry = (cfg.attack, ATTACKS) if kind == "attack" else (cfg.defense, DEFENSES)
    raw = section.options.get(name)
    if params:
        raw = {**(raw or {}), **dict(params)}
    return registry[name].parse_options(raw, f"{kind}.options.{name}")


def cell_key(cfg: ExperimentConfig, cell: Cell) -> str:
    """Content key of everything that determines a cell's numbers (and nothing else: where the
    files live, the execution settings and the other grid coordinates do not change it, so a
    grid can be extended and still reuse its finished cells). The sources that compute a cell's
    numbers are part of the key — only the cell's own attack and defense and what they import,
    so editing one algorithm reruns its cells and no others. Options are keyed by the values
    that differ from their defaults (the defaults are in the sources), so a new option whose
    default keeps the old behaviour does not rerun anything. The config is the cell's
    dataset's (``by_dataset`` applied)."""
    cfg = for_dataset(cfg, cell.dataset)
    c = to_dict(cfg)
    dataset = {k: v for k, v in c["dataset"].items() if k not in ("name", "root", "cache_dir")}
    targets = {k: v for k, v in c["targets"].items() if k != "kind"}
    attack_options = (component_options(cfg, "attack", cell.attack, cell.attack_params)
                      if cell.attacked else None)
    attack = ((non_default(attack_options), poison_file_digest(attack_options))
              if cell.attacked else None)
    defense = non_default(component_options(cfg, "defense", cell.defense, cell.defense_params))
    sources = cell_sources_digest(cell.attack if cell.attacked else None, cell.defense)
    # One training (the default) keeps the keys of cells computed before ``retrains`` existed.
    evaluation = {k: v for k, v in c["evaluation"].items()
                  if not (k == "retrains" and v == 1)}
    # Options added later are keyed only away from their defaults (earlier cells keep keys).
    split_cfg = {k: v for k, v in c["split"].items()
                 if not (k == "fake_rows" and v == "train")}
    return content_key(asdict(cell), cfg.seed, dataset, split_cfg, targets,
                       asdict(model_config(cfg, cell.model)), evaluation,
                       c["attack"]["filler_size"], attack, defense, sources)


def non_default(options) -> dict:
    """The fields of an options dataclass whose values differ from their defaults."""
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = value
    return out


@functools.lru_cache(maxsize=None)
def source_fingerprint(*parts: str) -> str:
    """Digest of the package sources that compute a cached artefact, so an edited algorithm
    never reuses stale cache entries."""
    digest = hashlib.sha256()
    for part in parts:
        path = REPO / part
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# Sources every cell depends on: datasets and splits, models and trainer, target selection and
# the knowledge view, the evaluator and the seeds. The pipeline's bookkeeping and the reports
# are left out, so an edit there keeps finished cells; an edit to how the pipeline combines the
# stages needs a new experiment name.
COMMON_SOURCES = ("data", "models", "attacks/threat.py", "utils/metrics.py", "utils/seeding.py")
# Package folders whose modules can change a cell's numbers (utils: only the two above).
_NUMERIC_PACKAGES = ("data", "models", "attacks", "defenses")


@functools.lru_cache(maxsize=None)
def module_sources(module: str) -> tuple[str, ...]:
    """Repo-relative files of ``module`` and of every numeric package module it imports,
    transitively (imports inside functions included), found by parsing the sources."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                todo.append(base)
                todo += [f"{base}.{a.name}" for a in node.names]
    return tuple(sorted(str(p.relative_to(REPO)) for p in seen.values()))


def _module_file(name: str) -> Path | None:
    if name.split(".")[0] not in _NUMERIC_PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def attack_sources_digest(attack: str) -> str:
    """Digest of the sources an attack's fake profiles depend on (cached profiles' key)."""
    return cell_sources_digest(attack, None)


def cell_sources_digest(attack: str | None, defense: str | None) -> str:
    """Digest of the sources a cell's numbers depend on: the common ones plus the modules of its
    attack (None: a clean-data cell) and of its defense (None: no training involved), with what
    they import."""
    parts = set(COMMON_SOURCES)
    for name, registry in ((attack, ATTACKS), (defense, DEFENSES)):
        if name is not None:
            parts.update(module_sources(registry[name].__module__))
    return source_fingerprint(*sorted(parts))


def poison_file_digest(options) -> str | None:
    """SHA-256 of the poison file an ``attack: file`` cell reads (None for other attacks), so
    profiles cached from a file are never reused after the file changes."""
    path = getattr(options, "path", None)
    if not isinstance(path, str) or not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            self._splits[key] = split_ratings(
                self.data(name), numpy_rng(self.repeat_seed(repeat), "split", name),
                s.positive_threshold, s.val_fraction, self.cfg.dataset.feedback)
        return self._splits[key]

    def targets(self, name: str, repeat: int, kind: str) -> np.ndarray:
        key = (name, repeat, kind)
        if key not in self._targets:
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

    def training_data(self, split: Split, fake: Interactions | None,
                      cell: Cell | None = None) -> TrainingData:
        """The data a defense sees: the real users' split plus the fake rows, appended after
        the real users. ``split.fake_rows: train`` puts every fake row in training;
        ``platform`` splits each fake user's rows like a real user's, by a draw fixed per
        attack setting (every defense of a cell sees the same rows)."""
        train, val, n_users = split.train, split.val, split.n_users
        if fake is not None and len(fake):
            shifted = Interactions(fake.users + split.n_users, fake.items, fake.ratings)
            if self.cfg.split.fake_rows == "platform":
                rng = numpy_rng(self.repeat_seed(cell.repeat), "fake-rows", cell.dataset,
                                cell.target_kind, cell.attack, cell.attack_size,
                                cell.knowledge_cost, cell.attack_params)
                fake_train, fake_val = split_fake_rows(shifted, rng, self.cfg.split.val_fraction)
                train = Interactions.concat(train, fake_train)
                val = Interactions.concat(val, fake_val)
            else:
                train = Interactions.concat(train, shifted)
            n_users = split.n_users + int(fake.users.max()) + 1
        return TrainingData(train, val, n_users, split.n_items, split.scale, split.feedback)

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
                           split.val.users, split.val.items, split.val.ratings, split.n_users,
                           split.n_items, repr(split.scale), split.feedback, asdict(mcfg), seed,
                           cell_sources_digest(None, UNDEFENDED))
        path = self.cache / "models" / f"origin-{model}-{ckey}.npz"
        cached = load_npz(path)
        net = None
        if cached is not None and {"__info__", "__seconds__"} <= set(cached):
            net = build_model(mcfg, data.n_users, data.n_items, torch_generator(seed, "skeleton"),
                              data.feedback)
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
            arrays["__info__"] = np.array(json.dumps(info, sort_keys=True, default=_jsonable))
            arrays["__seconds__"] = np.array(seconds)
            _save_npz(path, arrays)
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
                           cell.target_kind, cell.attack, cell.attack_size, cell.knowledge_cost)
        seen = split.observed()
        visible = knowledge_view(seen, split.n_users, targets, cell.knowledge_cost,
                                 numpy_rng(seed, "view"))
        keep = np.zeros(split.n_users, dtype=bool)
        keep[visible] = True
        view = seen.subset(keep[seen.users])
        n_fake = n_fake_users(split.n_users, cell.attack_size)
        filler = cfg.attack.filler_size or filler_size_of(view, len(visible), len(targets))
        options = component_options(cfg, "attack", cell.attack, cell.attack_params)
        mcfg = model_config(cfg, cell.model)
        info = {"n_fake": n_fake, "filler_size": filler, "visible_users": len(visible)}
        key = content_key("profiles", cell.dataset, split.n_users, split.n_items, seen.users,
                          seen.items, seen.ratings, targets, cell.attack, non_default(options),
                          n_fake, filler, cell.knowledge_cost, seed, cfg.dataset.feedback,
                          asdict(mcfg), attack_sources_digest(cell.attack),
                          poison_file_digest(options))
        path = self.cache / "profiles" / f"{cell.attack}-{key}.npz"
        cached = load_npz(path)
        if cached is not None and {"users", "items", "ratings"} <= set(cached):
            info["cached"] = True
            info["seconds"] = float(cached["seconds"]) if "seconds" in cached else 0.0
            return Interactions(cached["users"], cached["items"], cached["ratings"]), info
        ctx = ThreatContext(view=view, visible_users=visible, n_users=split.n_users,
                            n_items=split.n_items, scale=split.scale, targets=targets,
                            n_fake=n_fake, filler_size=filler, feedback=cfg.dataset.feedback,
                            model_cfg=mcfg, device=str(self.device), seed=seed,
                            progress=cfg.progress,
                            extra={"raw_item_ids": self.data(cell.dataset).raw_item_ids})
        start = time.perf_counter()
        seed_globals(derive_seed(seed, "globals"))
        fake = ATTACKS[cell.attack](options).generate(ctx)
        info["seconds"] = time.perf_counter() - start
        _save_npz(path, {"users": fake.users, "items": fake.items, "ratings": fake.ratings,
                         "seconds": np.array(info["seconds"])})
        info["cached"] = False
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
                        + [f"{k}{v}" for k, v in sorted(dict(cell.attack_params).items())])
        export_poison(fake, Path(self.cfg.results_dir) / self.cfg.experiment / "poison", stem,
                      self.data(cell.dataset).raw_item_ids, split.scale, split.n_items, formats)


def _jsonable(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _save_npz(path: Path, arrays: dict, compressed: bool = False) -> None:
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to a name
            save(handle, **arrays)

    atomic_write(path, write)


# ----------------------------------------------------------------------------- one cell

Stage = Callable[[str], None]


def run_cell(ws: Workspace, cell: Cell, stage: Stage | None = None
             ) -> tuple[dict, dict[str, np.ndarray]]:
    """Compute one cell: its result row and its arrays (the per-user rank shifts of the
    targets, rank before − rank after the attack, over eligible (user, target) pairs)."""
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
        "targets": " ".join(str(t) for t in targets), "attack": cell.attack,
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
        stage("train")
        start = time.perf_counter()
        seed = derive_seed(ws.repeat_seed(cell.repeat), "train", cell.dataset, cell.target_kind,
                           cell.attack, cell.attack_size, cell.knowledge_cost, cell.defense)
        data = ws.training_data(split, fake, cell)
        model, info, defense = ws.train(cell.defense, cell.defense_params, cell.model, data,
                                        seed)
        timings["seconds_train"] = time.perf_counter() - start
        stage("evaluate")
        start = time.perf_counter()
        result = evaluator.evaluate(model)
        detections.append(_detection(defense, data, split.n_users, targets))
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
    row["defense_info"] = json.dumps({k: v for k, v in info.items() if k != "best_epoch"},
                                     sort_keys=True, default=_jsonable)
    row.update(timings)
    return row, arrays


def _detection(defense, data: TrainingData, n_real_users: int, targets: np.ndarray) -> dict:
    """Precision, recall and false positives of what the defense distrusted (the evaluation
    side knows the fake users and the targets; the defense never does). Empty for defenses
    that judge no data."""
    distrust = defense.distrusted()
    if distrust is None:
        return {}
    return detection_metrics(distrust.rows, distrust.users, data.train.users, n_real_users,
                             data.train.items, targets)


# ----------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class Task:
    kind: str   # "origin" (the clean model of a split), "profiles" (an attack setting), "cell"
    key: str
    cell: Cell

    def label(self) -> str:
        return self.cell.label() if self.kind == "cell" else f"{self.kind}: {self.cell.label()}"


def plan_tasks(cells: list[Cell], keys: dict[Cell, str]) -> tuple[list[Task], dict]:
    """The cells to run and their prerequisites; ``deps[task.key]`` = prerequisite keys."""
    tasks: dict[str, Task] = {}
    deps: dict[str, set[str]] = {}
    for cell in cells:
        origin_cell = Cell(cell.dataset, cell.repeat, cell.target_kind, ORIGIN, 0.0, 0.0,
                           UNDEFENDED, cell.model)
        need = [Task("origin", f"origin/{cell.dataset}/{cell.model}/{cell.repeat}", origin_cell)]
        if cell.attacked:
            setting = dataclasses.replace(cell, defense=UNDEFENDED, defense_params=())
            need.append(Task("profiles", "profiles/" + content_key(asdict(setting)), setting))
        for task in need:
            tasks.setdefault(task.key, task)
            deps.setdefault(task.key, set())
        task = Task("cell", keys[cell], cell)
        tasks[task.key] = task
        deps[task.key] = {t.key for t in need}
    return list(tasks.values()), deps


def is_cell_failure(exc: BaseException) -> bool:
    """Failures recorded per cell (the grid goes on): a non-finite loss, out of memory."""
    if isinstance(exc, (NonFiniteLossError, MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


_PROCESS = {"token": None, "workspace": None, "bars": True, "position": None}


def configure_process(bars: bool, position: int | None = None) -> None:
    """Per-cell progress bars of this process: on/off and the terminal row they use."""
    _PROCESS.update(bars=bars, position=position)


def release_workspace() -> None:
    _PROCESS.update(token=None, workspace=None)


def _workspace(cfg: ExperimentConfig, token: str) -> Workspace:
    if _PROCESS["token"] != token:
        _PROCESS.update(token=token, workspace=Workspace(cfg))
    return _PROCESS["workspace"]


def execute(cfg: ExperimentConfig, task: Task, token: str) -> dict:
    """Run one task in this process; every executor calls this. Returns an outcome dict:
    ``status`` "ok" (with ``row`` and ``arrays`` for a cell) or "failed" (with ``error``);
    ``stages`` holds the seconds spent per stage. Other exceptions propagate."""
    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    cfg = for_dataset(cfg, task.cell.dataset)
    ws = _workspace(cfg, f"{token}/{task.cell.dataset}")
    stages: dict[str, float] = {}
    clock = {"name": None, "start": time.perf_counter()}
    bar = tqdm(total=None, desc=task.label()[:70], leave=False, position=_PROCESS["position"],
               disable=not (cfg.progress and _PROCESS["bars"]),
               bar_format="{desc}{postfix}")

    def stage(name: str | None) -> None:
        now = time.perf_counter()
        if clock["name"] is not None:
            stages[clock["name"]] = stages.get(clock["name"], 0.0) + now - clock["start"]
        clock.update(name=name, start=now)
        if name is not None:
            bar.set_postfix_str(name)

    try:
        if task.kind == "origin":
            stage("train")
            ws.origin_model(task.cell.dataset, task.cell.model, task.cell.repeat)
            outcome = {"status": "ok"}
        elif task.kind == "profiles":
            stage("attack")
            fake, _ = ws.fake_profiles(task.cell)
            ws.export_profiles(task.cell, fake)  # once per attack setting, not per defense
            outcome = {"status": "ok"}
        else:
            row, arrays = run_cell(ws, task.cell, stage)
            row["cell"] = task.key
            outcome = {"status": "ok", "row": row, "arrays": arrays}
    except Exception as exc:  # noqa: BLE001 - only recordable failures are kept, see below
        if not is_cell_failure(exc):
            raise
        log.debug("task %s failed", task.label(), exc_info=True)
        outcome = {"status": "failed", "error": describe(exc)}
    finally:
        stage(None)
        bar.close()
        torch.set_num_threads(previous_threads)
    outcome["stages"] = stages
    return outcome


def execute_guarded(cfg: ExperimentConfig, task: Task, token: str) -> dict:
    """:func:`execute` for worker processes: an unexpected exception comes back as a
    ``crash`` outcome (with the exception when it pickles) for the driver to raise."""
    try:
        return execute(cfg, task, token)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the grid
        import pickle
        try:
            pickle.dumps(exc)
            carried = exc
        except Exception:  # noqa: BLE001
            carried = None
        return {"status": "crash", "error": describe(exc), "exception": carried,
                "traceback": traceback.format_exc(), "stages": {}}


# ----------------------------------------------------------------------------- the driver

class GridFailure(RuntimeError):
    """A task raised an unexpected error; finished cells are saved, the grid stopped."""


def _read_row(path: Path) -> dict | None:
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: recomputed, never trusted
    return row if isinstance(row, dict) and "cell" in row else None


def _save_cell(cells_dir: Path, key: str, row: dict, arrays: dict) -> dict:
    if arrays:
        _save_npz(cells_dir / f"{key}.npz", arrays, compressed=True)
    text = json.dumps(row, sort_keys=True, default=_jsonable)
    atomic_write_text(cells_dir / f"{key}.json", text)  # last: its presence marks the cell done
    (cells_dir / f"{key}.failed.json").unlink(missing_ok=True)
    return json.loads(text)  # the row exactly as a resumed run will read it


def _failure_record(cell: Cell, key: str, error: str, cfg: ExperimentConfig) -> dict:
    return {"dataset": cell.dataset, "model": cell.model, "feedback": cfg.dataset.feedback,
            "target_kind": cell.target_kind, "attack": cell.attack,
            "attack_size": cell.attack_size, "knowledge_cost": cell.knowledge_cost,
            "attack_params": params_text(cell.attack_params), "defense": cell.defense,
            "defense_params": params_text(cell.defense_params), "repeat": cell.repeat,
            "cell": key, "error": error}


def run_experiment(cfg: ExperimentConfig, argv: list[str] | None = None) -> Path:
    """Run every cell of ``cfg`` (skipping finished ones) and write the result files."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from utils import reporting
    from utils.executors import make_executor

    started = time.time()
    out = Path(cfg.results_dir) / cfg.experiment
    cells_dir = out / "cells"
    plan = plan_cells(cfg)
    keys = {cell: cell_key(cfg, cell) for cell in plan}
    for stale in cells_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)  # left by a run killed mid-write
    rows: dict[Cell, dict] = {}
    for cell in plan:
        row = _read_row(cells_dir / f"{keys[cell]}.json")
        if row is not None:
            rows[cell] = row
    todo = [cell for cell in plan if cell not in rows]
    tasks, deps = plan_tasks(todo, keys)
    log.info("%s: %d cells, %d finished earlier, %d to run (%s, %d worker%s)", cfg.experiment,
             len(plan), len(rows), len(todo), cfg.executor, cfg.workers,
             "" if cfg.workers == 1 else "s")
    failures: dict[Cell, dict] = {}
    stage_seconds: dict[str, float] = {}
    computed = 0
    dependents: dict[str, list[str]] = {}
    for key, needs in deps.items():
        for need in needs:
            dependents.setdefault(need, []).append(key)
    by_key = {task.key: task for task in tasks}
    order = {task.key: (("origin", "profiles", "cell").index(task.kind), n)
             for n, task in enumerate(tasks)}
    waiting = {key: set(needs) for key, needs in deps.items()}
    ready = [order[key] + (key,) for key, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    remaining = len(tasks)

    def fail_dependents(key: str, error: str) -> int:
        lost = 0
        for dep in dependents.get(key, []):
            if dep in waiting:
                task = by_key[dep]
                del waiting[dep]
                record_failure(task, f"not run, its {by_key[key].kind} prerequisite "
                                     f"failed: {error}")
                lost += 1 + fail_dependents(dep, error)
        return lost

    def record_failure(task: Task, error: str) -> None:
        if task.kind != "cell":
            return
        record = _failure_record(task.cell, task.key, error, cfg)
        atomic_write_text(cells_dir / f"{task.key}.failed.json", json.dumps(record))
        failures[task.cell] = record
        bar.update(1)
        bar.set_postfix_str(f"failed {len(failures)}")
        log.warning("cell failed: %s: %s", task.cell.label(), error)

    progress = cfg.progress
    bar = tqdm(total=len(plan), initial=len(rows), desc="cells", unit="cell",
               disable=not progress, dynamic_ncols=True)
    token = content_key(str(out.resolve()), started)
    try:
        with (logging_redirect_tqdm() if progress else _nothing()), \
                (make_executor(cfg, token) if remaining else _nothing()) as executor:
            while remaining:
                while ready and executor.has_capacity():
                    *_, key = heapq.heappop(ready)
                    executor.submit(by_key[key])
                for task, outcome in executor.wait():
                    remaining -= 1
                    waiting.pop(task.key, None)
                    for name, seconds in outcome.get("stages", {}).items():
                        stage_seconds[name] = stage_seconds.get(name, 0.0) + seconds
                    status = outcome["status"]
                    if status == "crash":
                        worker_trace = outcome.get("traceback", "")
                        exc = outcome.get("exception")
                        if exc is None:
                            exc = GridFailure(f"{task.label()}: {outcome['error']}")
                        exc.add_note(f"raised in a worker running {task.label()}:\n"
                                     f"{worker_trace}")
                        raise exc
                    if status == "failed":
                        record_failure(task, outcome["error"])
                        remaining -= fail_dependents(task.key, outcome["error"])
                        continue
                    if task.kind == "cell":
                        rows[task.cell] = _save_cell(cells_dir, task.key, outcome["row"],
                                                     outcome.get("arrays") or {})
                        computed += 1
                        bar.update(1)
                    for dep in dependents.get(task.key, []):
                        if dep in waiting:
                            waiting[dep].discard(task.key)
                            if not waiting[dep]:
                                heapq.heappush(ready, order[dep] + (dep,))
    finally:
        bar.close()
    if failures:
        log.warning("%d cell%s failed (listed in %s)", len(failures),
                    "" if len(failures) == 1 else "s", out / "failed.csv")
    reporting.write_all(
        out, cfg, [rows[c] for c in plan if c in rows],
        [failures[c] for c in plan if c in failures], stage_seconds, time.time() - started,
        argv, [derive_seed(cfg.seed, "repeat", r) for r in range(cfg.repeats)],
        {"executor": cfg.executor, "workers": cfg.workers, "threads": cfg.threads,
         "ray_address": cfg.ray_address, "cells_planned": len(plan),
         "cells_computed": computed, "cells_reused": len(plan) - len(todo),
         "cells_failed": len(failures)})
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None
