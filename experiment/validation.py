"""The one place a config meets the registries.

``utils/config.py`` reads a config and checks its schema without importing anything above it;
here the names of datasets, models, attacks and defenses are checked against their registries,
each component's options against its ``Options`` (every swept combination), the components an
attack runs by name (:meth:`attacks.base.Attack.components`) against what they must be able to
do, and what each defense can train on (:attr:`defenses.base.Defense.feedbacks`) against the
feedback of every dataset it runs on. Every entry point loads configs through
:func:`load_config` (or :func:`config_from_dict` for a stored one), so a bad config is one line
and exit code 2 before any work.
"""
from __future__ import annotations

from pathlib import Path

from attacks import ATTACKS
from attacks.poison_file import FORMATS as POISON_FORMATS
from data import DATASETS
from defenses import DEFENSES
from models import MODELS
from utils.config import (ConfigError, ExperimentConfig, as_list, build_config, check_name,
                          for_dataset, option_sweeps, read_config)

REGISTRIES = {"attack": ATTACKS, "defense": DEFENSES}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Defaults ← YAML file ← overrides, then full validation (names and options included)."""
    cfg = read_config(path, overrides)
    check_components(cfg)
    return cfg


def config_from_dict(tree: dict) -> ExperimentConfig:
    """A stored config (``results/<exp>/config.yaml``), fully validated."""
    cfg = build_config(tree)
    check_components(cfg)
    return cfg


def check_components(cfg: ExperimentConfig) -> None:
    """Check component names, options and capabilities against the registries; fill in each
    model's paper defaults (``model.defaults``) so the stored config records them."""
    fill_model_defaults(cfg)
    _check_names_and_options(cfg)
    for name, layer in cfg.by_dataset.items():
        # Any known dataset: a preset's layer for a dataset left out of this run is unused.
        check_name(str(name), sorted(DATASETS), "by_dataset")
        if not layer:
            continue
        try:
            _check_names_and_options(for_dataset(cfg, str(name)))
        except ConfigError as exc:
            raise ConfigError(f"by_dataset.{name}: {exc}") from None
    for dataset in as_list(cfg.dataset.name):
        _check_feedback(for_dataset(cfg, dataset), dataset)


def fill_model_defaults(cfg: ExperimentConfig) -> None:
    """``model.defaults``: the names checked against ``MODELS``, and every registered model's
    ``paper_defaults`` filled in under the keys the user left out (all models, not only the
    grid's, so a folder's setting does not depend on its grid)."""
    for name in cfg.model.defaults:
        check_name(str(name), sorted(MODELS), "model.defaults")
    for name, cls in MODELS.items():
        if cls.paper_defaults:
            cfg.model.defaults[name] = {**cls.paper_defaults, **cfg.model.defaults.get(name, {})}


def _check_names_and_options(cfg: ExperimentConfig) -> None:
    for name in as_list(cfg.dataset.name):
        check_name(name, sorted(DATASETS), "dataset.name")
    for name in as_list(cfg.attack.name):
        check_name(name, sorted(ATTACKS), "attack.name")
    for name in as_list(cfg.defense.name):
        check_name(name, sorted(DEFENSES), "defense.name")
    for name in as_list(cfg.model.name):
        check_name(name, sorted(MODELS), "model.name")
    for fmt in cfg.attack.export:
        check_name(fmt, list(POISON_FORMATS), "attack.export")
    for kind, section in (("attack", cfg.attack), ("defense", cfg.defense)):
        registry = REGISTRIES[kind]
        for name in section.options:
            check_name(str(name), sorted(registry), f"{kind}.options")
        # The grid's attacks with their default options too: those name components as well.
        names = list(section.options) + [n for n in as_list(section.name)
                                          if n not in section.options]
        for name in names:
            for options in component_option_sets(cfg, kind, name):
                if kind == "attack":
                    _check_attack_components(name, options, f"attack.options.{name}")


def component_option_sets(cfg: ExperimentConfig, kind: str, name: str) -> list:
    """The parsed options of component ``name``, one per combination of its swept options."""
    section = cfg.attack if kind == "attack" else cfg.defense
    cls = REGISTRIES[kind][name]
    options = section.options.get(name)
    where = f"{kind}.options.{name}"
    return [cls.parse_options({**options, **dict(swept)} if swept else options, where)
            for swept in option_sweeps(cls.Options, options, where)]


def attack_components(name: str, options) -> list:
    """Every component attack ``name`` runs by name, those of its components included (each
    component attack with its default options), as ``(where, component)`` pairs."""
    out, todo, seen = [], [(name, options, f"attack.options.{name}")], set()
    while todo:
        attack, opts, where = todo.pop()
        for comp in ATTACKS[attack].components(opts):
            out.append((f"{where}.{comp.option}", comp))
            if comp.kind == "attack" and comp.name in ATTACKS and comp.name not in seen:
                seen.add(comp.name)
                todo.append((comp.name, ATTACKS[comp.name].parse_options(None),
                             f"attack.options.{comp.name}"))
    return out


def _check_attack_components(name: str, options, where: str) -> None:
    """An attack's components: registered, and able to do what the attack needs of them."""
    for at, comp in attack_components(name, options):
        registry = REGISTRIES[comp.kind]
        valid = sorted(n for n, cls in registry.items() if comp.accepts(n, cls))
        if comp.name not in valid:
            problem = comp.problem if comp.name in registry else "is not registered"
            raise ConfigError(f"{at}: {comp.kind} '{comp.name}' {problem}; use one of "
                              f"{', '.join(valid)}")


def _check_feedback(cfg: ExperimentConfig, dataset: str) -> None:
    """Every defense the dataset's cells train — in the grid or run by an attack — must be able
    to train each of the grid's models on the dataset's feedback with the model's loss
    (:attr:`defenses.base.Defense.feedbacks`, :meth:`defenses.base.Defense.cannot_train`: TCD's
    pseudo-labels need explicit ratings, SHARE's elimination needs explicit MF, a BPR victim
    needs a pairwise step)."""
    feedback = cfg.dataset.feedback
    used = [("defense.name", name, component_option_sets(cfg, "defense", name))
            for name in as_list(cfg.defense.name)]
    for attack in as_list(cfg.attack.name):
        for options in component_option_sets(cfg, "attack", attack):
            used += [(at, comp.name, [DEFENSES[comp.name].parse_options(None)])
                     for at, comp in attack_components(attack, options) if comp.kind == "defense"]
    losses = {}
    for model in as_list(cfg.model.name):
        try:   # the model's declared feedback kinds and losses
            losses[model] = MODELS[model].resolve_loss(cfg.model.loss, feedback)
        except ValueError as exc:
            raise ConfigError(f"model.name: {model}: {exc}") from None
    for model in losses:   # first the feedback each defense needs, then what it trains
        for where, name, _ in used:
            cls = DEFENSES[name]
            kinds = cls.feedbacks
            if feedback not in kinds and kinds[0] in MODELS[model].feedback_kinds:
                fix = "remove it" if where == "defense.name" else "name another defense"
                raise ConfigError(f"{where}: defense '{name}' trains on {' or '.join(kinds)} "
                                  f"feedback only, but dataset {dataset} has dataset.feedback="
                                  f"{feedback}; {fix} or set dataset.feedback={kinds[0]}")
            if feedback not in kinds:   # the model cannot train on the feedback the defense needs
                why = f": {cls.feedback_reason}" if cls.feedback_reason else ""
                raise ConfigError(f"{where}: defense '{name}' cannot train {model} (which trains "
                                  f"on {' or '.join(MODELS[model].feedback_kinds)} feedback "
                                  f"only){why}; it trains on {' or '.join(kinds)} feedback "
                                  f"(victims: {_victims(kinds)})")
    for model, loss in losses.items():
        for where, name, option_sets in used:
            for options in option_sets:
                reason = DEFENSES[name].cannot_train(options, MODELS[model], loss, feedback)
                if reason:
                    raise ConfigError(f"{where}: defense '{name}' cannot train {model} with "
                                      f"loss {loss} on {feedback} feedback: {reason}")


def _victims(feedbacks: tuple[str, ...]) -> str:
    """The registered models that train on one of ``feedbacks``."""
    return ", ".join(name for name, cls in MODELS.items()
                     if set(cls.feedback_kinds) & set(feedbacks))
