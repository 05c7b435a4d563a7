"""Where a grid's tasks run: in this process, in a local process pool, or on a Ray cluster
(experiments.md §4). Every executor calls the same :func:`experiment.execution.execute` and hands
the outcome back to the driver, which alone writes result files, so the files and numbers are the
same whichever executor ran the cells.

- ``workers: 1`` (local): tasks run one after another in this process.
- ``workers: N`` (local): N spawned worker processes, each running ``threads`` torch threads;
  a worker that dies (killed, out of memory) fails only its cell and is replaced.
- ``executor: ray``: tasks run as Ray tasks with ``threads`` CPUs each and one GPU each when the
  cluster has GPUs, on the cluster at ``ray_address`` or on a local instance started for the run
  with ``workers`` CPUs. On a cluster, prerequisite artefacts (Origin models, fake profiles) are
  shared through ``dataset.cache_dir`` when the nodes share it, and recomputed (identically)
  on a node that does not see it.

The interface: ``has_capacity()``, ``submit(task)``, ``wait()`` → finished ``(task, outcome)``
pairs (blocks until there is at least one), and use as a context manager (``close``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from utils.config import ExperimentConfig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def make_executor(cfg: ExperimentConfig, token: str):
    if cfg.executor == "ray":
        return RayExecutor(cfg, token)
    if cfg.workers > 1:
        return ProcessPool(cfg, token)
    return InlineExecutor(cfg, token)


def _died(error: str) -> dict:
    return {"status": "failed", "error": error, "stages": {}}


class InlineExecutor:
    """Runs each task in this process when the driver waits for it."""

    def __init__(self, cfg: ExperimentConfig, token: str) -> None:
        from experiment import execution
        self.cfg, self.token, self.queue = cfg, token, []
        execution.configure_process(bars=True, position=None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        from experiment import execution
        self.queue.clear()
        execution.release_workspace()  # the memo (models, splits) is not kept past the run

    def has_capacity(self) -> bool:
        return not self.queue

    def submit(self, task) -> None:
        self.queue.append(task)

    def wait(self) -> list:
        from experiment.execution import execute
        task = self.queue.pop(0)
        return [(task, execute(self.cfg, task, self.token))]


# ----------------------------------------------------------------------------- process pool

def _worker_env(cfg: ExperimentConfig, slot: int) -> dict[str, str]:
    threads = str(cfg.threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads,
           # Bars of attacks and defenses in this worker go on the row under its cell bar.
           "TQDM_POSITION": str(2 + 2 * slot)}
    if not cfg.progress:
        env["TQDM_DISABLE"] = "1"
    gpus = _gpu_count() if cfg.device != "cpu" else 0
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)  # a GPU per worker, round robin
    path = os.environ.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    return env


def _gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the driver dies, even by SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(slot: int, conn, cfg: ExperimentConfig, token: str, lock, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before the death signal was armed
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the driver stops the workers
    import torch
    from tqdm.auto import tqdm

    from experiment import execution

    torch.set_num_threads(cfg.threads)
    tqdm.set_lock(lock)
    execution.configure_process(bars=cfg.progress, position=1 + 2 * slot)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        outcome = execution.execute_guarded(cfg, task, token)
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    slot: int
    process: object
    conn: object
    task: object = None


class ProcessPool:
    """``cfg.workers`` spawned processes fed one task at a time over a pipe each."""

    def __init__(self, cfg: ExperimentConfig, token: str) -> None:
        import multiprocessing as mp
        from tqdm.auto import tqdm

        self.cfg, self.token = cfg, token
        self.ctx = mp.get_context("spawn")  # fork after torch started threads is unsafe
        self.lock = self.ctx.RLock()
        tqdm.set_lock(self.lock)
        self.workers = [self._spawn(slot) for slot in range(cfg.workers)]

    def _spawn(self, slot: int) -> _Worker:
        parent_conn, child_conn = self.ctx.Pipe()
        with _environ(_worker_env(self.cfg, slot)):
            process = self.ctx.Process(
                target=_worker_main, name=f"grid-worker-{slot}", daemon=True,
                args=(slot, child_conn, self.cfg, self.token, self.lock, os.getpid()))
            process.start()
        child_conn.close()
        return _Worker(slot, process, parent_conn)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def has_capacity(self) -> bool:
        return any(w.task is None for w in self.workers)

    def submit(self, task) -> None:
        worker = next(w for w in self.workers if w.task is None)
        worker.task = task
        try:
            worker.conn.send(task)
        except (BrokenPipeError, OSError):
            pass  # the worker is dead; wait() sees its sentinel and fails the task

    def wait(self) -> list:
        from multiprocessing.connection import wait

        busy = [w for w in self.workers if w.task is not None]
        if not busy:
            return []
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        done = []
        for worker in busy:
            outcome = None
            if worker.conn in ready:
                try:
                    outcome = worker.conn.recv()
                except (EOFError, OSError):
                    outcome = None
            if outcome is None and (worker.conn in ready or worker.process.sentinel in ready):
                worker.process.join(timeout=5)
                code = worker.process.exitcode
                why = (f"signal {-code}" if code is not None and code < 0 else f"exit code {code}")
                outcome = _died(f"WorkerDied: the worker process running this cell died ({why}; "
                                "killed by the system, e.g. out of memory?)")
                worker.conn.close()
                replacement = self._spawn(worker.slot)
                worker.process, worker.conn = replacement.process, replacement.conn
            if outcome is not None:
                done.append((worker.task, outcome))
                worker.task = None
        return done

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                if worker.task is None:
                    worker.conn.send(None)
        for worker in self.workers:
            if worker.task is None:
                worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.terminate()  # a cell in flight (Ctrl-C, an error): stop it
                worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


# ----------------------------------------------------------------------------- Ray

def _ray_task(cfg: ExperimentConfig, task, token: str) -> dict:
    from experiment import execution
    execution.configure_process(bars=False)
    return execution.execute_guarded(cfg, task, token)


class RayExecutor:
    """Tasks as Ray tasks on an existing cluster (``ray_address``) or a local instance."""

    def __init__(self, cfg: ExperimentConfig, token: str) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("executor 'ray' needs Ray: pip install -r requirements-ray.txt"
                               ) from None
        self.ray, self.cfg, self.token = ray, cfg, token
        self.started = False
        if not ray.is_initialized():
            env = {"OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads),
                   "TQDM_DISABLE": "1"}
            if os.environ.get("ROBUSTREC_DATA"):
                env["ROBUSTREC_DATA"] = os.environ["ROBUSTREC_DATA"]
            if cfg.ray_address:
                runtime_env = {"working_dir": str(REPO), "env_vars": env,
                               "excludes": ["results/", ".cache/", ".git/", "__pycache__/"]}
                ray.init(address=cfg.ray_address, runtime_env=runtime_env,
                         logging_level=logging.WARNING)
            else:
                path = os.environ.get("PYTHONPATH", "")
                env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
                ray.init(num_cpus=cfg.workers * cfg.threads, include_dashboard=False,
                         runtime_env={"env_vars": env}, logging_level=logging.WARNING)
            self.started = True
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) >= 1 and cfg.device != "cpu" else 0
        self.slots = max(1, int(resources.get("CPU", 1) // cfg.threads))
        self.remote = ray.remote(_ray_task).options(num_cpus=cfg.threads, num_gpus=gpus,
                                                    max_retries=0)
        self.cfg_ref = ray.put(cfg)
        self.running: dict = {}
        log.info("ray: %s, %d task slots, %d GPU per task",
                 cfg.ray_address or "local instance", self.slots, gpus)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def has_capacity(self) -> bool:
        return len(self.running) < self.slots

    def submit(self, task) -> None:
        self.running[self.remote.remote(self.cfg_ref, task, self.token)] = task

    def wait(self) -> list:
        ray = self.ray
        if not self.running:
            return []
        done, _ = ray.wait(list(self.running), num_returns=1)
        out = []
        for ref in done:
            task = self.running.pop(ref)
            try:
                outcome = ray.get(ref)
            except (ray.exceptions.OutOfMemoryError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError) as exc:
                outcome = _died(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            out.append((task, outcome))
        return out

    def close(self) -> None:
        for ref in self.running:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self.running.clear()
        if self.started:
            self.ray.shutdown()
