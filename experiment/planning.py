"""The grid and its keys: which cells a config holds (``plan_cells``), the content key of
each cell (``cell_key``: everything that determines its numbers, the sources included) and the
task graph that runs them (``plan_tasks``: a cell needs its split's Origin model and its attack
setting's fake profiles).

A *cell* is one (dataset, model, repeat, target kind, attack, attack size, knowledge cost, swept
attack options, defense, swept defense options) combination. ``plan_cells`` crosses every
list-valued coordinate of the config and adds, once per (dataset, model, seed, target kind), the
clean "Origin" cell and, per attack setting, the undefended cell, so RI can always be computed.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from attacks import ATTACKS
from defenses import DEFENSES
from models import MODELS
from data.sources import sha256_of
from utils.config import (FILE_DATASET_KEYS, ExperimentConfig, ModelConfig, as_list,
                          for_dataset, option_sweeps, to_dict)
from utils.seeding import content_key

ORIGIN = "none"       # attack name of the clean data
FILE_ATTACK = "file"  # fake profiles replayed from a poison file
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
    n_fake: int = 0              # attack.n_fake (0: from attack_size; a file: from the file)

    @property
    def is_origin(self) -> bool:
        return self.attack == ORIGIN and self.defense == UNDEFENDED

    @property
    def attacked(self) -> bool:
        return self.attack != ORIGIN

    def label(self) -> str:
        size = f"n={self.n_fake}" if self.n_fake else f"{self.attack_size:g}"
        attack = "clean" if not self.attacked else (
            f"{self.attack}{params_text(self.attack_params, ' ')}"
            f"({size},c={self.knowledge_cost:g})")
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
        if FILE_ATTACK in attack_sweeps:   # a poison file is a coordinate: tables name it
            path = (dcfg.attack.options.get(FILE_ATTACK) or {}).get("path")
            attack_sweeps[FILE_ATTACK] = [
                ap if any(k == "path" for k, _ in ap) or not path
                else tuple(sorted(ap + (("path", path),))) for ap in attack_sweeps[FILE_ATTACK]]
        defense_sweeps = {d: option_sweeps(DEFENSES[d].Options, dcfg.defense.options.get(d),
                                           f"defense.options.{d}") for d in defenses}
        cells.append(Cell(dataset, rep, kind, ORIGIN, 0.0, 0.0, UNDEFENDED, model))
        if clean_defended:
            cells += [Cell(dataset, rep, kind, ORIGIN, 0.0, 0.0, d, model, (), dp)
                      for d in defenses[1:] for dp in defense_sweeps[d]]
        for attack in attacks:
            for size, n_fake, cost in attack_settings(cfg, attack):
                for ap in attack_sweeps[attack]:
                    cells += [Cell(dataset, rep, kind, attack, size, cost, d, model, ap, dp,
                                   n_fake) for d in defenses for dp in defense_sweeps[d]]
    return cells


def attack_settings(cfg: ExperimentConfig, attack: str) -> list[tuple[float, int, float]]:
    """An attack's (size, n_fake, knowledge cost) coordinates. ``attack.n_fake`` replaces the
    sizes; a poison file has neither a size nor a knowledge cost of its own (its profiles are
    fixed; ``n_fake``, when given, is checked against the file)."""
    n_fakes = _unique(as_list(cfg.attack.n_fake)) if cfg.attack.n_fake is not None else []
    sizes = [(0.0, int(n)) for n in n_fakes] or [
        (float(s), 0) for s in _unique(as_list(cfg.attack.size))]
    if attack == FILE_ATTACK:
        return [(0.0, n, 0.0) for _, n in sizes] if n_fakes else [(0.0, 0, 0.0)]
    return [(size, n, float(cost)) for size, n in sizes
            for cost in _unique(as_list(cfg.attack.knowledge_cost))]


def cell_coordinates(cell: Cell) -> dict:
    """The cell's coordinates as keyed: ``n_fake`` only when set, so cells planned before it
    existed keep their keys."""
    coords = asdict(cell)
    if not coords["n_fake"]:
        del coords["n_fake"]
    return coords


def model_config(cfg: ExperimentConfig, name: str) -> ModelConfig:
    """The model section as model ``name`` trains with it: each key the section leaves at the
    package default takes the model's own default — ``model.defaults.<name>`` (which the config
    check fills with the model's ``paper_defaults``), else the class's ``paper_defaults`` — and
    any key set to another value wins. MF and NCF have no defaults of their own, so their
    resolved section (and their cells' keys) is the section itself. Under ``split.mode: ratio``
    every model keeps the epoch of highest validation Recall@``evaluation.test_k`` (unless
    ``model.select_recall_k`` says)."""
    base, package = cfg.model, ModelConfig()
    cls = MODELS.get(name)
    own = {**(cls.paper_defaults if cls is not None else {}), **base.defaults.get(name, {})}
    values = {key: value for key, value in own.items()
              if getattr(base, key) == getattr(package, key)}
    mcfg = dataclasses.replace(base, name=name, defaults={}, **values)
    if cfg.split.mode == "ratio" and mcfg.select_recall_k is None:
        mcfg = dataclasses.replace(mcfg, select_recall_k=cfg.evaluation.test_k)
    return mcfg


def model_key(mcfg: ModelConfig) -> dict:
    """A resolved model section as cell keys hash it: ``defaults`` (resolved, hence empty)
    always and ``select_recall_k`` when unset are left out, so the keys of cells planned
    before they existed stay."""
    out = {k: v for k, v in asdict(mcfg).items() if k != "defaults"}
    if out.get("select_recall_k") is None:
        out.pop("select_recall_k", None)
    return out


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
    files = dataset.pop("split_files", None) or {}
    if files.get("train"):  # a fixed split (dataset.split_files): how it is read, its contents
        dataset["split_files"] = {**files, "sha256": [dataset_file_digest(files["train"]),
                                                      dataset_file_digest(files["test"])]}
    elif cell.dataset == "file":  # your own file: its keys and its content
        dataset["sha256"] = dataset_file_digest(cfg.dataset.path)
    else:  # keys only `dataset: file` reads: the built-in datasets' cells keep their keys
        dataset = {k: v for k, v in dataset.items() if k not in FILE_DATASET_KEYS}
    targets = {k: v for k, v in c["targets"].items() if k != "kind"}
    attack_options = (component_options(cfg, "attack", cell.attack, cell.attack_params)
                      if cell.attacked else None)
    attack = ((non_default(attack_options), poison_file_digest(attack_options))
              if cell.attacked else None)
    defense = non_default(component_options(cfg, "defense", cell.defense, cell.defense_params))
    sources = cell_sources_digest(cell.attack if cell.attacked else None, cell.defense,
                                  attack_options)
    # One training (the default) keeps the keys of cells computed before ``retrains`` existed.
    ratio = cfg.split.mode == "ratio"
    evaluation = {k: v for k, v in c["evaluation"].items()
                  if not (k == "retrains" and v == 1)
                  and not (k == "select_on" and v == "validation")
                  and not (k == "tail" and v == {"head_share": 0.2})
                  and not (k == "test_k" and not ratio)}   # leave-one-out never reads it
    # Options added later are keyed only away from their defaults (earlier cells keep keys);
    # the ratio split's options only under it.
    split_cfg = {k: v for k, v in c["split"].items()
                 if not (k == "fake_rows" and v == "train")
                 and not (k == "test_item" and v == "positive")
                 and not (k in ("mode", "test_fraction") and not ratio)}
    # Added later, keyed only away from their defaults (earlier cells keep their keys).
    if not (cell.target_kind == "list" and targets.get("id_space") == "raw"):
        targets.pop("id_space", None)   # the old meaning: list cells held 0-based indices
    return content_key(cell_coordinates(cell), cfg.seed, dataset, split_cfg, targets,
                       model_key(model_config(cfg, cell.model)), evaluation,
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
# the knowledge view, the evaluator, the seeds, and the workspace, which derives every stage's
# seed from the cell's coordinates (e.g. a knowledge-cost sweep's shared draws) and hands each
# stage its data. The pipeline's bookkeeping (planning, execution, the results folder) and the
# reports are left out, so an edit there keeps finished cells.
COMMON_SOURCES = ("data", "models", "attacks/threat.py", "utils/metrics", "utils/seeding.py",
                  "experiment/workspace.py")
# Package folders whose modules can change a cell's numbers (experiment: only the file above).
# utils is followed too, as the numeric code imports it (the trainer's ranking helpers in
# utils/topk_metrics.py, PORE's certificate in utils/certification.py), except the modules that
# only read configs or write files: a config value that matters is in the key itself.
_NUMERIC_PACKAGES = ("data", "models", "attacks", "defenses", "utils")
_BOOKKEEPING_MODULES = ("utils.config", "utils.atomic")


# Packages whose __init__ is a registry: importing the registry (``from defenses import
# DEFENSES``) is a lookup by name, declared through ``Attack.components``, not a dependency on
# every registered module; other names they re-export resolve to their defining modules.
_REGISTRY_PACKAGES = ("attacks", "defenses")


@functools.lru_cache(maxsize=None)
def module_sources(module: str) -> tuple[str, ...]:
    """Repo-relative files of ``module`` and of every numeric package module it imports,
    transitively (imports inside functions included), found by parsing the sources. An import
    from a registry package follows the names it imports to their own modules; the registry
    itself is not followed (see ``cell_sources_digest``)."""
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
                todo += [a.name for a in node.names if a.name not in _REGISTRY_PACKAGES]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base in _REGISTRY_PACKAGES and name != base:
                    exports = _reexports(base)
                    todo += [exports[a.name] for a in node.names if a.name in exports]
                    todo += [f"{base}.{a.name}" for a in node.names]   # submodules
                    continue
                todo.append(base)
                todo += [f"{base}.{a.name}" for a in node.names]
    return tuple(sorted(str(p.relative_to(REPO)) for p in seen.values()))


@functools.lru_cache(maxsize=None)
def _reexports(package: str) -> dict[str, str]:
    """Name → defining module of the ``from .module import Name`` lines of a package's
    ``__init__`` (names defined in the ``__init__`` itself, such as the registry, are absent)."""
    path = REPO / package / "__init__.py"
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = f"{package}.{node.module}"
    return out


def _module_file(name: str) -> Path | None:
    if name.split(".")[0] not in _NUMERIC_PACKAGES or name in _BOOKKEEPING_MODULES:
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def attack_sources_digest(attack: str, options=None) -> str:
    """Digest of the sources an attack's fake profiles depend on (cached profiles' key)."""
    return cell_sources_digest(attack, None, options)


def cell_sources_digest(attack: str | None, defense: str | None, attack_options=None) -> str:
    """Digest of the sources a cell's numbers depend on: the common ones plus the modules of its
    attack (None: a clean-data cell), of the components the attack runs by name (``adaptive``'s
    base attack and the defense it is aimed at, ``gcoattack``'s defense; from its options,
    default ones when None) and of its defense (None: no training involved), with what they
    import."""
    parts = set(COMMON_SOURCES)
    todo = [("defense", defense)] if defense is not None else []
    if attack is not None:
        todo.append(("attack", attack))
    done = set()
    while todo:
        kind, name = todo.pop()
        if (kind, name) in done:
            continue
        done.add((kind, name))
        cls = (ATTACKS if kind == "attack" else DEFENSES)[name]
        parts.update(module_sources(cls.__module__))
        if kind == "attack":
            options = (attack_options if name == attack and attack_options is not None
                       else cls.Options())
            todo += [(c.kind, c.name) for c in cls.components(options)]
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


def dataset_file_digest(path: str | None) -> str | None:
    """SHA-256 of a ``dataset: file`` ratings file (None when it is missing: loading it then
    fails with its own message), hashed once per (path, mtime, size)."""
    file = Path(path).expanduser() if path else None
    if file is None or not file.is_file():
        return None
    stat = file.stat()
    return _file_sha256(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_of(path)



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

