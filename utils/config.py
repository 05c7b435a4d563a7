"""Typed, layered experiment configuration.

Layers, later wins: the dataclass defaults below, the YAML file (``config.yaml`` or
``--config FILE``), then ``key=value`` overrides from the command line (values parsed as YAML).
Everything is validated before any work starts: an empty file, a key given twice (in the file or
on the command line), an unknown key (with the closest valid one), a wrong type, an unknown
component name (with the valid list) or an out-of-range value raises :class:`ConfigError` with
one line naming the problem and the fix. This module checks the schema and imports nothing of the
package above it; names and options of datasets, models, attacks and defenses are checked against
their registries by ``experiment/validation.py`` (``load_config``).

A section may be given as a bare string, which sets its ``name`` (``attack: aush``,
``dataset=ml-1m`` on the command line). Fields typed ``X | list[X]`` are grid coordinates: a list
runs each value in turn on identical splits and targets.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A configuration problem; its message is one line naming the problem and the fix."""


def bounds(lo=None, hi=None, lo_open=False, hi_open=False, doc=""):
    """Field metadata bounding a number: ``field(default=3, metadata=bounds(0, 50))``;
    :func:`build` rejects a value outside ``[lo, hi]`` (``lo_open``/``hi_open``: exclusive)."""
    return {"range": (lo, hi, lo_open, hi_open), "doc": doc}


@dataclass
class SyntheticConfig:
    n_users: int = field(default=300, metadata=bounds(2))
    n_items: int = field(default=200, metadata=bounds(2))
    density: float = field(default=0.08, metadata=bounds(0, 1, lo_open=True))
    rank: int = field(default=4, metadata=bounds(1))
    noise: float = field(default=0.3, metadata=bounds(0))
    max_rating: int = field(default=5, metadata=bounds(2, 10))


@dataclass
class SplitFilesConfig:
    """``dataset.split_files``: a fixed train / test split read from two files, as the TCD
    authors ran it (``greensun0830/TCD`` ``Data/<ds>.train.rating`` / ``.test.rating``: tab-
    separated ``user item rating``, 0-based ids, FilmTrust ratings ×2 — read those with
    ``dataset.max_rating: 8, dataset.rating_steps: 8``). Parsed like ``dataset: file`` (its
    sep / columns / header / max_rating / rating_steps / duplicates keys); works with a built-in
    dataset name (ids below its table sizes; tables keep the name) or ``file``. One test row
    per user of the training file; validation is drawn from the training file as usual (none
    with ``evaluation.select_on: test``). Not the default: a fixed split has no per-seed split
    variance and holds out ratings of any value (protocol.md §2)."""
    train: str | None = None
    test: str | None = None
    ids: str = "index"  # index: 0-based indices, kept | raw: re-indexed from 0 over both files


@dataclass
class DatasetConfig:
    name: str | list[str] = "ml-100k"
    root: str | None = None  # folder of raw files; else $ROBUSTREC_DATA; else download
    cache_dir: str = ".cache"
    feedback: str = "explicit"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # `dataset: file` — your own delimited ratings file (data/loaders.py load_file). Columns
    # named user, item, rating, timestamp are read, any other name is skipped; without a rating
    # column every row counts as the top rating (implicit feedback).
    path: str | None = None
    sep: str = "\t"  # a literal backslash-t ("\\t" from YAML or the shell) means a tab
    columns: list[str] = field(default_factory=lambda: ["user", "item", "rating"])
    header: bool = False  # true: the first line names the columns and is skipped
    max_rating: float = field(default=5.0, metadata=bounds(0, lo_open=True))
    # Ratings lie on max_rating/steps · {1..steps}; None: steps = max_rating (1, 2, …, 5).
    rating_steps: int | None = field(default=None, metadata=bounds(1, 1000))
    # Applied once, users first then items (a user may drop below its minimum afterwards).
    min_user_ratings: int = field(default=1, metadata=bounds(1))
    min_item_ratings: int = field(default=1, metadata=bounds(1))
    duplicates: str = "error"  # a user–item pair given twice: error | first | last (file order)
    # A fixed train / test split from two files (SplitFilesConfig above; data/loaders.py).
    split_files: SplitFilesConfig = field(default_factory=SplitFilesConfig)


@dataclass
class SplitConfig:
    positive_threshold: float = field(default=0.8, metadata=bounds(0, 1))
    val_fraction: float = field(default=0.1, metadata=bounds(0, 1, lo_open=True, hi_open=True))
    # Where fake users' rows go: "train" (the papers' protocol: training data only) or
    # "platform" (split into training and validation like a real user's; threat-model.md §1).
    fake_rows: str = "train"
    # The held-out test rating of each user: "positive" (protocol.md §2: HR@K asks whether a
    # liked item is ranked, so users without a positive rating have no test item) or "any"
    # (one rating of any value: the TCD authors' leave-one-out files, for reproduction).
    test_item: str = "positive"
    # The evaluation protocol: "loo" (leave-one-out: one held-out positive per user, HR@K,
    # NDCG@K, MRR, test MSE; the papers' protocol) or "ratio" (the implicit top-K protocol of
    # LightGCN, VAT and PamaCF: a ``test_fraction`` of each user's interactions held out,
    # Recall@test_k and NDCG@test_k, model selection on validation Recall@test_k; implicit
    # feedback only; docs/victim-models.md "The implicit top-K protocol").
    mode: str = "loo"
    # split.mode ratio: each user's share of interactions held out for test (validation:
    # val_fraction); ignored by loo.
    test_fraction: float = field(default=0.2, metadata=bounds(0, 1, lo_open=True, hi_open=True))


@dataclass
class TargetsConfig:
    kind: str | list[str] = "unpopular"  # random | unpopular | list
    count: int = field(default=5, metadata=bounds(1, 100))
    # Targets of kind "list": the dataset's own item ids (MovieLens item 50 is 50), or 0-based
    # internal indices with id_space "index".
    items: list[int | str] | None = None
    id_space: str = "raw"
    unpopular_below: int = field(default=5, metadata=bounds(1))


@dataclass
class AttackConfig:
    name: str | list[str] = "random"
    size: float | list[float] = field(default=0.03, metadata=bounds(0, 0.5, lo_open=True))
    # Number of fake users instead of a share of the real users (replaces size when given).
    n_fake: int | list[int] | None = field(default=None, metadata=bounds(1))
    knowledge_cost: float | list[float] = field(default=0.4, metadata=bounds(0, 1, lo_open=True))
    filler_size: int | None = field(default=None, metadata=bounds(1))
    options: dict = field(default_factory=dict)  # per-attack options: {aush: {epochs: 150}}
    # Also write each cell's fake profiles to results/<experiment>/poison/ in these formats
    # (csv, tsv: raw item ids and ratings; npy: dense fake-users × items), loadable by
    # `attack: file`. Never changes a cell's numbers.
    export: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    name: str | list[str] = "mf"
    dim: int = field(default=128, metadata=bounds(1))
    epochs: int = field(default=40, metadata=bounds(1))
    batch_size: int = field(default=2048, metadata=bounds(1))
    lr: float = field(default=1e-3, metadata=bounds(0, lo_open=True))
    reg: float = field(default=0.005, metadata=bounds(0))
    optimizer: str = "adam"
    # The training loss: auto (mse on explicit ratings, bce with sampled negatives on implicit
    # feedback; LightGCN: bpr) | mse | bce | bpr (one sampled negative per positive, implicit
    # feedback only; models/bpr.py). A model rejects a loss it does not support.
    loss: str = "auto"
    # Propagation steps of graph models (LightGCN's K; the paper's 3); other models ignore it.
    layers: int = field(default=3, metadata=bounds(0))
    # Implicit feedback: keep the epoch of highest validation Recall@K (per user, full ranking,
    # training items masked) instead of the validation HR@10 of each held-out positive.
    # None: the protocol's rule — split.mode ratio sets evaluation.test_k, loo leaves HR@10.
    select_recall_k: int | None = field(default=None, metadata=bounds(1))
    # Per model, the values it takes for the keys above that this section leaves at the package
    # default ({lightgcn: {dim: 64, lr: 0.001, reg: 0.0001}}): a value set here or a key set
    # above to another value wins. The config check fills in each model's paper defaults
    # (``Recommender.paper_defaults``), so a stored config records the values used.
    defaults: dict = field(default_factory=dict)
    # ``model.profile: <name>`` is not a field: it sets optimizer, lr and reg to the named
    # profile's values (MODEL_PROFILES below) while the config is built, so the resolved
    # config records the values; one of the three set to another value beside it is an error.


# Named (optimizer, lr, reg) sets for ``model.profile``. ``tcd_authors``: the TCD authors' last
# code (greensun0830/TCD, models/pure_SVD.py): tf.train.AdadeltaOptimizer(20.) (TensorFlow 1's
# rho 0.95 and epsilon 1e-8) applied, as TensorFlow applies it to embedding lookups, only to the
# rows in each batch (models/optimizers.py: adadelta_sparse), and L2 1e-4 per element.
# Not the default: the paper's text says Adam (1e-3) and 0.005 (protocol.md §3).
MODEL_PROFILES = {
    "tcd_authors": {"optimizer": "adadelta_sparse", "lr": 20.0, "reg": 1e-4},
    # LightGCN's paper (He et al., SIGIR 2020, §4.1.2): Adam 1e-3, L2 1e-4 (d 64 is model.dim).
    "lightgcn_paper": {"optimizer": "adam", "lr": 1e-3, "reg": 1e-4},
}
PROFILE_KEYS = ("optimizer", "lr", "reg")


@dataclass
class DefenseConfig:
    name: str | list[str] = "none"
    options: dict = field(default_factory=dict)  # per-defense options: {at: {eps: 0.03}}


@dataclass
class TailConfig:
    """The long tail of the tail metrics (``utils/metrics/tail.py``): the head is the most-rated
    items (real users' training ratings) making up at most this share of the catalogue (a tie
    group at the boundary goes to the tail); every other item is long tail."""
    head_share: float = field(default=0.2, metadata=bounds(0, 1, hi_open=True))


@dataclass
class EvaluationConfig:
    k: int = field(default=50, metadata=bounds(1))
    batch_users: int = field(default=1024, metadata=bounds(1))
    # Train each cell's model this many times on the same (poisoned) data, with seeds derived
    # from the cell's, and report the mean of each metric: the NDSS protocol retrains its
    # victim 30 times, because one NeuMF's target HR@10 at 1% varies ~10× across inits.
    retrains: int = field(default=1, metadata=bounds(1, 1000))
    # Which data picks each model's best epoch: "validation" (protocol.md §2) or "test" — the
    # TCD authors' code keeps the epoch of smallest *test* MSE (greensun0830/TCD,
    # models/pure_SVD.py). Reproduction only: selecting on the test set biases every test
    # metric upwards, so the run logs a warning, cells record "selected_on": "test" in their
    # defense_info and the split has no validation rows (all non-test rows train).
    # "last": no selection, every model is the one after its last epoch — the model whose
    # target HR the TCD authors report (run_main.py ranks with the final weights; only the
    # test HR they print as "best" is at the smallest test MSE). No validation rows either.
    select_on: str = "validation"
    # split.mode ratio: K of Recall@K and NDCG@K on the held-out test set (LightGCN's 20) and of
    # the validation Recall that selects each model's epoch; the target metrics keep K = k.
    test_k: int = field(default=20, metadata=bounds(1))
    tail: TailConfig = field(default_factory=TailConfig)


@dataclass
class ReportConfig:
    """How the tables state uncertainty (``utils/uncertainty.py``, ``experiment/summary.py``); not
    part of any cell's key: change it and rebuild (``python main.py --rebuild``)."""
    level: float = field(default=0.95, metadata=bounds(0, 1, lo_open=True, hi_open=True))
    bootstrap: int = field(default=1000, metadata=bounds(100, 100000))
    # RI and success reduction are shown only where the attack's gain over Origin (target HR)
    # is at least this and its interval excludes 0.
    min_gain: float = field(default=0.01, metadata=bounds(0, 1))
    # Tail-suppression mark ‡: a defense whose clean tail_share@K is below this share of the
    # undefended model's gets ‡ on every robustness ratio (RI, success reduction, worst case).
    tail_floor: float = field(default=0.5, metadata=bounds(0, 1))


@dataclass
class ExperimentConfig:
    experiment: str = "default"
    seed: int = field(default=0, metadata=bounds(0))
    repeats: int = field(default=1, metadata=bounds(1, 1000))
    device: str = "auto"
    progress: bool = True
    results_dir: str = "results"
    # Execution (never changes a cell's numbers): cells run on `workers` local processes or on
    # Ray (`executor: ray`, at `ray_address` or on a local instance), `threads` torch threads each.
    executor: str = "local"
    workers: int = field(default=1, metadata=bounds(1, 1024))
    threads: int = field(default=1, metadata=bounds(1, 256))
    ray_address: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Per-dataset layers over the rest of the config, for settings the papers fix per dataset
    # (``by_dataset: {filmtrust: {defense: {options: {tcd: {t_pre: 1}}}}}``); the sections
    # that define the grid itself (experiment, seed, repeats, dataset.name) cannot vary.
    by_dataset: dict = field(default_factory=dict)


FIXED_ACROSS_DATASETS = ("experiment", "seed", "repeats", "results_dir", "by_dataset", "report")


def for_dataset(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config that cells of dataset ``name`` run with (``by_dataset`` applied)."""
    layer = cfg.by_dataset.get(name)
    if not layer:
        return cfg
    model = layer.get("model")
    if isinstance(model, dict) and "profile" in model:  # before the merge adds lr and reg
        layer = {**layer, "model": expand_model_profile(model, f"by_dataset.{name}.model.")}
    tree = _merge(to_dict(cfg), layer)
    tree["by_dataset"] = {}
    tree["dataset"]["name"] = cfg.dataset.name
    return build(ExperimentConfig, tree)


# ----------------------------------------------------------------------------- parsing

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{where}[{n}]") for n, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 (PyYAML) reads 1e-4 (an exponent without a dot) as a string.
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
        if value is None:
            return {}
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _check_range(value: Any, meta: dict, where: str) -> None:
    if "range" not in meta or value is None:
        return
    lo, hi, lo_open, hi_open = meta["range"]
    for v in value if isinstance(value, list) else [value]:
        bad = (lo is not None and (v < lo or (lo_open and v == lo))) or (
            hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
            raise ConfigError(f"{where}: {v!r} is out of range; use a value in {span}")


def unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
    return ConfigError(f"{where}{key}: unknown key; {hint}")


def expand_model_profile(data: dict, prefix: str = "model.") -> dict:
    """A ``model`` mapping with its ``profile`` replaced by the profile's optimizer, lr and
    reg. An unknown profile, or a profile given with one of those keys at a value that is
    neither its default (as ``config.yaml`` spells them out) nor the profile's, is a
    ConfigError."""
    data = dict(data)
    name = data.pop("profile")
    if name is None:
        return data
    check_name(str(name), sorted(MODEL_PROFILES), f"{prefix}profile")
    defaults = ModelConfig()
    given = [key for key in PROFILE_KEYS if key in data and data[key] not in (
        getattr(defaults, key), MODEL_PROFILES[name][key])]
    if given:
        raise ConfigError(f"{prefix}profile: profile '{name}' sets {', '.join(PROFILE_KEYS)}; "
                          f"remove {prefix}{given[0]}, or drop the profile and set the three "
                          "keys yourself")
    return {**data, **MODEL_PROFILES[name]}


def parse_model_defaults(value: Any, prefix: str = "model.") -> dict:
    """``model.defaults``: a mapping of model names to mappings of this section's keys, each
    value checked (type and range) like the key itself; model names are checked one floor up."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}defaults: expected a mapping of model names to keys, e.g. "
                          "{lightgcn: {dim: 64}}")
    out = {}
    for name, keys in value.items():
        where = f"{prefix}defaults.{name}"
        if not isinstance(keys, dict):
            raise ConfigError(f"{where}: expected a mapping of model keys, e.g. {{dim: 64}}")
        for key in keys:
            if key in ("name", "defaults", "profile"):
                raise ConfigError(f"{where}.{key}: not a per-model default; give dim, lr, reg …")
        built = build(ModelConfig, dict(keys), where)
        out[str(name)] = {key: getattr(built, key) for key in keys}
    return out


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    names = [f.name for f in dataclasses.fields(cls)]
    if isinstance(data, (str, list)) and "name" in names:
        data = {"name": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    if cls is ModelConfig and "profile" in data:
        data = expand_model_profile(data, prefix)
    if cls is ModelConfig and "defaults" in data:
        data = {**data, "defaults": parse_model_defaults(data["defaults"], prefix)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise unknown_key_error(str(key), names + ["profile"] * (cls is ModelConfig),
                                    prefix)
        fld = next(f for f in dataclasses.fields(cls) if f.name == key)
        coerced = _coerce(value, hints[key], prefix + key)
        _check_range(coerced, fld.metadata, prefix + key)
        kwargs[key] = coerced
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg)


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. dataset=ml-1m")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if isinstance(child, (str, list)):
            child = {"name": child}  # a section given as a bare name
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    current = node.get(path[-1])
    if isinstance(value, (str, list)) and isinstance(current, dict):
        # ``dataset=filmtrust`` names the section; its other keys (root, options…) stay.
        current["name"] = value
        return
    node[path[-1]] = value


class _DuplicateKey(Exception):
    """A key given twice in one mapping: (key path, first line, second line)."""


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.paths: dict = {}  # mapping node -> its key path ("model", "attack.options[0]")

    def construct_mapping(self, node, deep=False):
        prefix = self.paths.get(node, "")
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # unhashable: the base class reports it
            where = f"{prefix}.{key}" if prefix else str(key)
            if first is not key_node:
                raise _DuplicateKey(where, first.start_mark.line + 1, key_node.start_mark.line + 1)
            self.paths.setdefault(value_node, where)
            if isinstance(value_node, yaml.SequenceNode):
                for n, item in enumerate(value_node.value):
                    self.paths.setdefault(item, f"{where}[{n}]")
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing file with --config")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path}: invalid YAML{pos}; fix the syntax") from None
    except _DuplicateKey as exc:
        key, first, second = exc.args
        raise ConfigError(f"config file {path}: key {key} given twice (lines {first} and "
                          f"{second}); keep one") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty; put at least `experiment: <name>` in "
                          "it, or omit --config to use config.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys to values")
    return data


def _override_keys(keys: list[str], value: Any) -> list[str]:
    """The dotted keys one ``key=value`` override sets: a mapping value sets each of its keys,
    a bare name given to a section sets its ``name`` (``dataset=file`` sets dataset.name)."""
    if isinstance(value, dict) and value:
        return [key for sub, inner in value.items()
                for key in _override_keys(keys + [str(sub)], inner)]
    tp: Any = ExperimentConfig
    for part in keys:
        fields = {f.name: f for f in dataclasses.fields(tp)} if dataclasses.is_dataclass(tp) \
            else {}
        tp = typing.get_type_hints(tp)[part] if part in fields else None
    if dataclasses.is_dataclass(tp) and isinstance(value, (str, list)) and \
            "name" in {f.name for f in dataclasses.fields(tp)}:
        keys = keys + ["name"]
    return [".".join(keys)]


def _check_overrides_once(overrides: list[str]) -> None:
    """A key set by two overrides (``model.epochs=3 model.epochs=4``, or ``model.epochs=3
    'model={epochs: 4}'``, or a key and a mapping over it) is an error, as a key given twice in
    a YAML file is: the last one silently winning hides a typo."""
    given: dict[str, str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        for key in _override_keys(keys, value):
            for earlier, source in given.items():
                if key == earlier or key.startswith(earlier + ".") or \
                        earlier.startswith(key + "."):
                    shorter = min(key, earlier, key=len)
                    raise ConfigError(f"command line: key {shorter} given twice ({source} and "
                                      f"{text.strip()}); keep one")
            given[key] = text.strip()


def read_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Defaults ← YAML file ← overrides, checked against the schema (:func:`check_schema`).
    Component names and options are checked against the registries one floor up
    (``experiment/validation.py``: ``load_config``), which every entry point uses."""
    tree = read_yaml(path) if path is not None else {}
    _check_overrides_once(list(overrides))
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(tree, keys, value)
    return build_config(tree)


def build_config(tree: dict) -> ExperimentConfig:
    """A config from a mapping (a stored ``config.yaml``), checked against the schema."""
    cfg = build(ExperimentConfig, tree)
    check_schema(cfg)
    return cfg


def check_name(value: str, valid: list[str], where: str) -> None:
    """A ConfigError naming ``where`` and the valid names unless ``value`` is one of them."""
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown name '{value}'{hint}; valid: {', '.join(valid)}")


FILE_COLUMNS = ("user", "item", "rating", "timestamp")  # any other column name is skipped
# The dataset keys only `dataset: file` reads (left out of the other datasets' cell keys).
FILE_DATASET_KEYS = ("path", "sep", "columns", "header", "max_rating", "rating_steps",
                     "min_user_ratings", "min_item_ratings", "duplicates")


def _check_file_dataset(d: DatasetConfig) -> None:
    """The keys of ``dataset: file``; the built-in datasets ignore them (defaults pass)."""
    names = as_list(d.name)
    f = d.split_files
    if bool(f.train) != bool(f.test):
        given, missing = ("train", "test") if f.train else ("test", "train")
        raise ConfigError(f"dataset.split_files.{missing}: split_files.{given} is set; a fixed "
                          f"split needs both files (dataset.split_files.{missing}=/path)")
    if f.train:
        check_name(f.ids, ["index", "raw"], "dataset.split_files.ids")
        if d.path:
            raise ConfigError("dataset.path: dataset.split_files replaces it (the data are the "
                              "two files); remove dataset.path")
        if "synthetic" in names:
            raise ConfigError("dataset.split_files: the synthetic dataset is generated, not "
                              "read; set dataset to the files' dataset (e.g. ml-100k or file)")
        for key in ("min_user_ratings", "min_item_ratings"):
            if getattr(d, key) != 1:
                raise ConfigError(f"dataset.{key}: a filter would change the fixed split of "
                                  "dataset.split_files; filter the files instead (set it to 1)")
    if "file" in names and not d.path and not f.train:
        raise ConfigError("dataset.path: dataset 'file' reads your own ratings file; set "
                          "dataset.path=/path/to/ratings (README: Your own ratings file)")
    if d.path and "file" not in names:
        raise ConfigError(f"dataset.path: only dataset 'file' reads it, but dataset.name is "
                          f"{d.name}; set dataset=file or remove dataset.path")
    sep = decode_sep(d.sep)
    if not sep or "\n" in sep or "\r" in sep:
        raise ConfigError(f"dataset.sep: {d.sep!r} cannot separate fields; give the separator "
                          "quoted, e.g. \"dataset.sep=','\" or \"dataset.sep='::'\"")
    for col in FILE_COLUMNS:
        if d.columns.count(col) > 1:
            raise ConfigError(f"dataset.columns: '{col}' is given {d.columns.count(col)} times "
                              f"in {d.columns}; name it once (other columns: any other name)")
    for col in ("user", "item"):
        if col not in d.columns:
            raise ConfigError(f"dataset.columns: {d.columns} has no '{col}' column; name the "
                              f"file's columns in order, e.g. [user, item, rating, timestamp]")
    if d.rating_steps is None and d.max_rating != int(d.max_rating):
        raise ConfigError(f"dataset.rating_steps: max_rating {d.max_rating:g} is not a whole "
                          "number; set the number of rating levels (ratings lie on "
                          "max_rating/steps · 1..steps)")
    check_name(d.duplicates, ["error", "first", "last"], "dataset.duplicates")


def decode_sep(sep: str) -> str:
    """``dataset.sep`` with a literal backslash-t (``\\t`` unquoted in YAML or on the command
    line) read as a tab."""
    return sep.replace("\\t", "\t")


def check_schema(cfg: ExperimentConfig) -> None:
    """Check the choices and cross-key rules that need no registry (component names and
    options are checked in ``experiment/validation.py``)."""
    check_name(cfg.executor, ["local", "ray"], "executor")
    check_name(cfg.dataset.feedback, ["explicit", "implicit"], "dataset.feedback")
    check_name(cfg.model.loss, ["auto", "mse", "bce", "bpr"], "model.loss")
    _check_file_dataset(cfg.dataset)
    check_name(cfg.model.optimizer, ["adam", "adadelta", "adadelta_sparse", "sgd"],
               "model.optimizer")
    check_name(cfg.device, ["auto", "cpu", "cuda"], "device")
    check_name(cfg.split.fake_rows, ["train", "platform"], "split.fake_rows")
    check_name(cfg.split.test_item, ["positive", "any"], "split.test_item")
    check_name(cfg.split.mode, ["loo", "ratio"], "split.mode")
    if cfg.split.mode == "ratio":
        _check_ratio_split(cfg)
    elif cfg.model.select_recall_k is not None and cfg.dataset.feedback != "implicit":
        raise ConfigError("model.select_recall_k: selection by validation Recall ranks held-out "
                          "interactions (implicit feedback); set dataset.feedback=implicit or "
                          "remove it")
    check_name(cfg.evaluation.select_on, ["validation", "test", "last"],
               "evaluation.select_on")
    if cfg.evaluation.select_on != "validation" and cfg.split.fake_rows == "platform":
        raise ConfigError("split.fake_rows: 'platform' puts fake rows in validation, and "
                          f"evaluation.select_on: {cfg.evaluation.select_on} has no validation; "
                          "use split.fake_rows: train")
    for kind in as_list(cfg.targets.kind):
        check_name(kind, ["random", "unpopular", "list"], "targets.kind")
    if "list" in as_list(cfg.targets.kind):
        if not cfg.targets.items:
            raise ConfigError("targets.items: kind 'list' needs a non-empty list of item ids")
        check_name(cfg.targets.id_space, ["raw", "index"], "targets.id_space")
        if cfg.targets.id_space == "index" and any(
                not isinstance(i, int) or i < 0 for i in cfg.targets.items):
            raise ConfigError("targets.items: with id_space 'index' the items are 0-based "
                              "indices (integers >= 0)")
    for name, layer in cfg.by_dataset.items():
        if not isinstance(layer, dict):
            raise ConfigError(f"by_dataset.{name}: give a mapping of config sections to values")
        for key in FIXED_ACROSS_DATASETS:
            if key in layer:
                raise ConfigError(f"by_dataset.{name}.{key}: {key} is the same for every "
                                  "dataset; set it at the top level")
        if "name" in (layer.get("dataset") or {}):
            raise ConfigError(f"by_dataset.{name}.dataset.name: the dataset is the key; remove it")
        for section, key in (("split", "mode"), ("evaluation", "test_k")):
            if key in (layer.get(section) or {}):   # the tables' metric columns follow them
                raise ConfigError(f"by_dataset.{name}.{section}.{key}: one protocol per "
                                  f"experiment; set {section}.{key} at the top level")
        if not layer:
            continue   # nothing layered (for_dataset returns cfg itself: no recursion)
        try:
            check_schema(for_dataset(cfg, str(name)))
        except ConfigError as exc:
            raise ConfigError(f"by_dataset.{name}: {exc}") from None
    if not cfg.experiment or any(c in cfg.experiment for c in "/\\") or cfg.experiment in (".", ".."):
        raise ConfigError(f"experiment: '{cfg.experiment}' must be a plain folder name")


def _check_ratio_split(cfg: ExperimentConfig) -> None:
    """``split.mode: ratio`` (the implicit top-K protocol): what it cannot be combined with."""
    if cfg.dataset.feedback != "implicit":
        raise ConfigError("split.mode: ratio holds out interactions as relevant items (the "
                          "implicit top-K protocol), but dataset.feedback is "
                          f"{cfg.dataset.feedback}; set dataset.feedback=implicit")
    if cfg.split.test_item != "positive":
        raise ConfigError("split.test_item: it picks the leave-one-out test item; "
                          "split.mode: ratio holds out a share of every user's interactions "
                          "(remove split.test_item or use split.mode: loo)")
    if cfg.dataset.split_files.train:
        raise ConfigError("dataset.split_files: a fixed leave-one-out split; split.mode: ratio "
                          "draws its own per-user split (remove one of them)")
    if cfg.evaluation.select_on == "test":
        raise ConfigError("evaluation.select_on: test reproduces the TCD authors' leave-one-out "
                          "selection; split.mode: ratio selects on validation Recall (use "
                          "validation or last)")
    if cfg.split.val_fraction + cfg.split.test_fraction >= 1:
        raise ConfigError(f"split.test_fraction: {cfg.split.test_fraction:g} + val_fraction "
                          f"{cfg.split.val_fraction:g} leave nothing to train on; make their "
                          "sum below 1")


def _accepts_list(tp: Any) -> bool:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_accepts_list(arg) for arg in typing.get_args(tp))
    return tp is list or typing.get_origin(tp) is list


def option_sweeps(cls: type, data: Any, where: str = "options") -> list[tuple]:
    """The grid of a component's options: a list given for an option that is not list-typed is
    swept (``defense.options.tcd.pseudo_rate: [0.2, 0.6, 1.0]``). Returns one tuple of sorted
    ``(option, value)`` pairs per combination; ``()`` alone when nothing is swept."""
    if not isinstance(data, dict):
        return [()]  # not a mapping: parse_options reports it
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    swept = sorted(k for k, v in data.items() if isinstance(v, list) and k in hints
                   and not _accepts_list(hints[k]))
    for key in swept:
        if not data[key]:
            raise ConfigError(f"{where}.{key}: an empty list sweeps nothing; give values")
    return [tuple(zip(swept, combo)) for combo in itertools.product(*(data[k] for k in swept))]


def options_from(cls: type, data: Any, where: str,
                 choices: dict[str, tuple[str, ...]] | None = None) -> Any:
    """Parse a component's options dataclass (used by attacks and defenses); ``choices`` maps
    an option to its valid values."""
    opts = build(cls, data or {}, where)
    for key, valid in (choices or {}).items():
        if getattr(opts, key) not in valid:
            raise ConfigError(f"{where}.{key}: '{getattr(opts, key)}' is unknown; use one of "
                              f"{', '.join(valid)}")
    return opts


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
