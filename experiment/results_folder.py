"""The experiment's folder, ``results/<experiment>/``: checked before any work, held by one run
at a time, and shared only by runs of the same setting.

- **Checked first.** A folder that cannot be created or written stops the run with one line
  before anything trains (:func:`check_writable`).
- **One runner.** A run holds an exclusive lock on ``<folder>/.lock`` while it computes and
  writes; a second run of the same experiment says so and waits, then resumes from the cells
  the first one finished (nothing is computed twice). The file is removed when the run ends
  (done, failed or interrupted); the operating system releases the lock of a killed run, so
  the file it leaves is stale and never blocks anyone (:class:`FolderLock`; POSIX ``flock``).
- **No run destroys another's tables.** Runs whose *setting* (everything but the grid
  coordinates, the component options and the execution settings: the seed, the split, the
  target count, the model's hyper-parameters, K…) equals the folder's share it, and its tables
  cover every cell any of them ran (``plan.json``; a cell rerun with other options replaces
  its earlier result). A run with another setting goes to the first free
  ``<experiment>-2``, ``-3``… folder of its own setting, with a one-line notice
  (:func:`choose_folder`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from utils.atomic import atomic_write_text
from utils.config import ConfigError, ExperimentConfig, to_dict
from experiment.validation import config_from_dict
from experiment.planning import Cell, cell_coordinates
from utils.seeding import content_key

log = logging.getLogger(__name__)

# Grid coordinates, component options and execution settings: runs that differ only in these
# extend one experiment (a different value of anything else starts another folder).
_NOT_SETTING = {
    None: ("experiment", "repeats", "device", "progress", "results_dir", "executor", "workers",
           "threads", "ray_address", "by_dataset", "report"),
    "dataset": ("name", "root", "cache_dir"),
    "targets": ("kind",),
    "attack": ("name", "size", "n_fake", "knowledge_cost", "options", "export"),
    "model": ("name",),
    "defense": ("name", "options"),
    "evaluation": ("batch_users",),
}


class ResultsFolderError(RuntimeError):
    """The results folder cannot be created or written."""


def setting(cfg: ExperimentConfig) -> dict:
    """The part of a config that runs sharing a folder must agree on (flattened keys)."""
    flat: dict = {}
    for key, value in to_dict(cfg).items():
        if key in _NOT_SETTING[None]:
            continue
        if isinstance(value, dict):
            for sub, inner in value.items():
                if sub not in _NOT_SETTING.get(key, ()):
                    flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    return flat


def _folder_setting(folder: Path) -> dict | None:
    """The setting of the runs in ``folder`` (None: no run yet, or a config this version cannot
    read, in which case the folder is shared as before)."""
    import yaml

    try:
        tree = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        return setting(config_from_dict(tree))
    except (OSError, yaml.YAMLError, ConfigError, TypeError, ValueError):
        return None


def choose_folder(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Path, str | None]:
    """The folder this run writes to, the config renamed to match it, and a notice when the run
    had to move to a folder of its own."""
    base = Path(cfg.results_dir)
    mine = setting(cfg)
    first = base / cfg.experiment
    theirs = _folder_setting(first)
    if theirs is None or theirs == mine:
        return cfg, first, None
    n = 2
    while True:
        name = f"{cfg.experiment}-{n}"
        other = _folder_setting(base / name)
        if other is None and not (base / name / "cells").exists() or other == mine:
            break
        n += 1
    changed = [f"{k} {theirs.get(k)!r} → {mine.get(k)!r}" for k in sorted(set(mine) | set(theirs))
               if mine.get(k) != theirs.get(k)]
    notice = (f"{first} holds runs with other settings ({'; '.join(changed[:3])}"
              f"{'…' if len(changed) > 3 else ''}): this run writes to {base / name} "
              f"(set experiment=<name> to choose the folder)")
    return dataclasses.replace(cfg, experiment=name), base / name, notice


def check_writable(folder: Path) -> None:
    """Raise one clear line unless ``folder`` can be written (or created: then nothing is
    created yet, so a run that stops later for another reason leaves no empty folder)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    elif existing == folder:
        try:  # access() can be wrong (read-only mounts, ACLs): write a probe file
            probe = folder / f".write-check-{os.getpid()}"
            probe.write_text("ok", encoding="utf-8")
            probe.unlink()
        except OSError as exc:
            problem = f"{folder} is not writable ({exc.strerror or type(exc).__name__})"
    if problem:
        raise ResultsFolderError(f"results folder {folder} cannot be written: {problem}; set "
                                 "results_dir=<a folder you can write> or fix its permissions")


class FolderLock:
    """Exclusive lock on ``folder/.lock`` for the duration of a run, removed at its end; waits
    (with a notice) while another process holds it. Without ``fcntl`` (Windows) it does
    nothing."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.handle = None

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        warned = False
        while True:
            self.handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not warned:
                    self.handle.seek(0)
                    holder = self.handle.read().strip() or "another process"
                    log.warning("%s is being written by %s; waiting for it to finish (its "
                                "finished cells are then reused, not recomputed)",
                                self.path.parent, holder)
                    warned = True
                fcntl.flock(self.handle, fcntl.LOCK_EX)
            # The holder removes the file on exit: a lock taken on a removed (or replaced)
            # file guards nothing, so take it again on the file now at the path.
            if _same_file(self.handle, self.path):
                break
            self.handle.close()
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            # Removed while still held (a waiting run then locks the file anew, see above);
            # a killed run leaves it, unlocked: the next run takes it at once.
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass  # a folder made read-only meanwhile: the file stays, stale, harmless
            finally:
                self.handle.close()  # closing releases the lock
                self.handle = None


def _same_file(handle, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def cell_id(cell: Cell) -> str:
    """Identity of a cell's coordinates (a rerun with other options keeps it, changes the key)."""
    return content_key(cell_coordinates(cell))


def merge_plan(folder: Path, plan: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The cells the folder's tables cover: those of earlier runs (``plan.json``), each replaced
    by this run's key for the same coordinates, then this run's new ones. Saved atomically."""
    try:
        earlier = [tuple(entry) for entry in
                   json.loads((folder / "plan.json").read_text(encoding="utf-8"))["cells"]]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = []
    current = dict(plan)
    merged = [(cid, current.get(cid, key)) for cid, key in earlier]
    known = {cid for cid, _ in earlier}
    merged += [(cid, key) for cid, key in plan if cid not in known]
    atomic_write_text(folder / "plan.json", json.dumps({"cells": merged}))
    return merged
