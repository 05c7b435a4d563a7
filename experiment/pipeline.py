"""One experiment, end to end: plan the grid (``experiment/planning.py``), skip the cells finished
earlier, run the rest as a task graph on an executor (``experiment/executors.py``, each task through
``experiment/execution.py``) and write the result files (``experiment/reporting.py``).

The driver writes each finished cell at once, atomically, under
``results/<experiment>/cells/<key>.json`` (+ ``<key>.npz`` with the per-user rank shifts);
rerunning skips finished cells, so a killed grid resumes and ends with exactly the rows of an
uninterrupted run. A cell that fails with a non-finite loss or out of memory is recorded
(``<key>.failed.json``, ``failed.csv``) and the grid goes on; failed cells are retried on the
next run.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from attacks import AttackError
from attacks.poison_file import FileAttack
from data import load_dataset
from experiment import reporting, results_folder
from utils.atomic import atomic_write_text
from utils.config import ConfigError, ExperimentConfig, as_list, dump_yaml, for_dataset
from experiment.executors import make_executor
from experiment.planning import (FILE_ATTACK, Cell, Task, cell_key, component_options,
                                 params_text, plan_cells, plan_tasks)
from utils.metrics import metrics_for
from utils.seeding import content_key, derive_seed
from experiment.workspace import Workspace, jsonable, list_target_indices, save_npz

log = logging.getLogger(__name__)


class GridFailure(RuntimeError):
    """A task raised an unexpected error; finished cells are saved, the grid stopped."""


def _read_row(path: Path) -> dict | None:
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: recomputed, never trusted
    return row if isinstance(row, dict) and "cell" in row else None


def _has_every_metric(row: dict, cfg: ExperimentConfig) -> bool:
    """Whether a finished cell's row has the column of every registered metric of its split
    protocol (``split.mode``; a leave-one-out cell never needs a ratio metric's, nor the
    reverse): a cell computed before a metric was registered is recomputed (its model is not
    kept to re-evaluate)."""
    ev = cfg.evaluation
    return all(m.column(ev.k, ev.test_k) in row for m in metrics_for(cfg.split.mode))


def _save_cell(cells_dir: Path, key: str, row: dict, arrays: dict) -> dict:
    if arrays:
        save_npz(cells_dir / f"{key}.npz", arrays, compressed=True)
    text = json.dumps(row, sort_keys=True, default=jsonable)
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


def check_against_datasets(cfg: ExperimentConfig) -> None:
    """What only the data can tell, checked before any training: K below every dataset's item
    count (HR@K is 1 otherwise), the ids of ``targets.items`` in the dataset and every poison
    file. Only on the local executor: a Ray driver may not hold the data."""
    if cfg.executor != "local":
        return
    for name in as_list(cfg.dataset.name):
        dcfg = for_dataset(cfg, name)
        data = load_dataset(dcfg.dataset, dcfg.seed, name)
        if dcfg.evaluation.k >= data.n_items:
            raise ConfigError(f"evaluation.k={dcfg.evaluation.k} is not below the "
                              f"{data.n_items} items of {name}: every item would be in the top "
                              f"K; choose evaluation.k < {data.n_items}")
        if dcfg.split.mode == "ratio" and dcfg.evaluation.test_k >= data.n_items:
            raise ConfigError(f"evaluation.test_k={dcfg.evaluation.test_k} is not below the "
                              f"{data.n_items} items of {name}: every item would be in the top "
                              f"K; choose evaluation.test_k < {data.n_items}")
        t = dcfg.targets
        if "list" in as_list(t.kind):
            try:
                if t.id_space == "raw":
                    list_target_indices(t.items, data.raw_item_ids, name)
                elif max(t.items) >= data.n_items:
                    raise ValueError(f"targets.items: index {max(t.items)} is not below the "
                                     f"{data.n_items} items of {name}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if FILE_ATTACK in as_list(dcfg.attack.name):
            check_poison_files(dcfg, name)


def check_poison_files(cfg: ExperimentConfig, name: str) -> None:
    """Every poison file of dataset ``name``'s cells read as its cells will read it (readable,
    its format, shape or item ids, ratings, every target of each repeat rated, the profile
    count): a bad file is a config error before the results folder is made."""
    ws = Workspace(cfg)
    checked = set()
    for cell in plan_cells(cfg):
        setting = (cell.repeat, cell.target_kind, cell.attack_params, cell.n_fake)
        if cell.dataset != name or cell.attack != FILE_ATTACK or setting in checked:
            continue
        checked.add(setting)
        split = ws.split(name, cell.repeat)
        targets = ws.targets(name, cell.repeat, cell.target_kind)
        attack = FileAttack(component_options(cfg, "attack", FILE_ATTACK, cell.attack_params))
        try:
            attack.read(split.n_items, split.scale, targets, ws.data(name).raw_item_ids,
                        cell.n_fake)
        except AttackError as exc:
            raise ConfigError(str(exc)) from None


def run_experiment(cfg: ExperimentConfig, argv: list[str] | None = None) -> Path:
    """Run every cell of ``cfg`` (skipping finished ones) and write the result files."""
    started = time.time()
    cfg, out, notice = results_folder.choose_folder(cfg)
    if notice:
        log.warning(notice)
    results_folder.check_writable(out)
    check_against_datasets(cfg)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    with results_folder.FolderLock(out):
        return _run(cfg, out, started, argv)


def _run(cfg: ExperimentConfig, out: Path, started: float, argv: list[str] | None) -> Path:
    cells_dir = out / "cells"
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))  # the folder's setting, from now on
    # Bars only on a terminal; a log file gets one plain line per finished cell.
    bars = cfg.progress and sys.stderr.isatty()
    line_per_cell = cfg.progress and not bars
    if not bars:
        cfg = dataclasses.replace(cfg, progress=False)
    plan = plan_cells(cfg)
    keys = {cell: cell_key(cfg, cell) for cell in plan}
    for stale in cells_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)  # left by a run killed mid-write
    rows: dict[Cell, dict] = {}
    for cell in plan:
        row = _read_row(cells_dir / f"{keys[cell]}.json")
        if row is not None and _has_every_metric(row, for_dataset(cfg, cell.dataset)):
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

    bar = tqdm(total=len(plan), initial=len(rows), desc="cells", unit="cell",
               disable=not bars, dynamic_ncols=True)
    token = content_key(str(out.resolve()), started)
    try:
        with (logging_redirect_tqdm() if bars else _nothing()), \
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
                        if line_per_cell:
                            log.info("[%d/%d] %s (%.1f s)", len(rows) + len(failures),
                                     len(plan), task.label(),
                                     sum(outcome.get("stages", {}).values()))
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
    # The tables cover every cell run into this folder (runs of the same setting), this run's
    # results replacing earlier ones of the same coordinates.
    covered = results_folder.merge_plan(
        out, [(results_folder.cell_id(c), keys[c]) for c in plan])
    mine = {keys[c]: c for c in plan}
    all_rows, all_failed = [], []
    for _, key in covered:
        cell = mine.get(key)
        if cell is not None:
            if cell in rows:
                all_rows.append(rows[cell])
            elif cell in failures:
                all_failed.append(failures[cell])
            continue
        row = _read_row(cells_dir / f"{key}.json")
        if row is not None:
            all_rows.append(row)
        else:
            failed = _read_failure(cells_dir / f"{key}.failed.json")
            if failed is not None:
                all_failed.append(failed)
    reporting.write_all(
        out, cfg, all_rows, all_failed, stage_seconds, time.time() - started,
        argv, [derive_seed(cfg.seed, "repeat", r) for r in range(cfg.repeats)],
        {"executor": cfg.executor, "workers": cfg.workers, "threads": cfg.threads,
         "ray_address": cfg.ray_address, "cells_planned": len(plan),
         "cells_computed": computed, "cells_reused": len(plan) - len(todo),
         "cells_failed": len(failures), "cells_in_tables": len(all_rows)})
    return out


def _read_failure(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "error" in record else None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None
