"""One task in this process: the function every executor calls (in the driver, a local
process pool or Ray; see ``experiment/executors.py``). A task is an Origin model, the fake profiles
of an attack setting, or a cell; its numbers depend only on the config and the seed, never on
the executor, the worker count or which tasks ran before it in the process (torch runs
``threads`` threads). A non-finite loss or out of memory is a recorded failure of that task;
any other exception is a crash the driver raises.
"""
from __future__ import annotations

import logging
import time
import traceback

import torch

from models.trainer import NonFiniteLossError
from utils.config import ExperimentConfig, for_dataset
from experiment.planning import Task
from experiment.workspace import Workspace, run_cell

log = logging.getLogger(__name__)


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

