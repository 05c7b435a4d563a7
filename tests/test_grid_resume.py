"""Grids, resume and failures (experiments.md §2 and §6): every list is crossed with Origin and
undefended cells added once; a grid killed with a real signal partway and rerun ends with exactly
the rows and numbers of an uninterrupted run (and a 2-worker pool gives the numbers of one
process); a cell with a non-finite loss is recorded and the grid goes on."""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from defenses import DEFENSES
from defenses.none import NoDefense
from tests.conftest import REPO, small_tree
from utils.config import ConfigError
from experiment.validation import config_from_dict
from experiment.pipeline import run_experiment
from experiment.planning import cell_key, plan_cells


def numbers(path) -> str:
    """runs.csv without its timing columns: what must match between runs."""
    runs = pd.read_csv(path)
    return runs[[c for c in runs.columns if not c.startswith("seconds_")]].to_csv(index=False)


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}


def test_every_list_is_crossed_with_origin_and_undefended_added_once(tmp_path):
    tree = small_tree(tmp_path, repeats=2, targets={"kind": ["random", "unpopular"]},
                      attack={"name": ["random", "average"], "size": [0.02, 0.05],
                              "knowledge_cost": [0.4, 1.0]},
                      defense={"name": ["at"], "options": {"at": {"eps": [0.01, 0.05]}}})
    cfg = config_from_dict(tree)
    cells = plan_cells(cfg)
    # Per (repeat, kind): Origin + 2 attacks × 2 sizes × 2 costs × (undefended + 2 AT variants).
    assert len(cells) == 2 * 2 * (1 + 2 * 2 * 2 * 3)
    assert len({cell_key(cfg, c) for c in cells}) == len(cells)
    origins = collections.Counter((c.repeat, c.target_kind) for c in cells if c.is_origin)
    assert origins == {(r, k): 1 for r in range(2) for k in ("random", "unpopular")}
    settings = collections.Counter((c.repeat, c.target_kind, c.attack, c.attack_size,
                                    c.knowledge_cost) for c in cells
                                   if c.attacked and c.defense == "none")
    assert len(settings) == 2 * 2 * 8 and set(settings.values()) == {1}
    assert {c.defense_params for c in cells if c.defense == "at"} == {
        (("eps", 0.01),), (("eps", 0.05),)}
    # Extending the grid keeps the keys of the cells it already had (they are reused) ...
    bigger = config_from_dict({**tree, "defense": {"name": ["at", "rat"],
                                                   "options": tree["defense"]["options"]}})
    assert {cell_key(bigger, c) for c in cells} <= {cell_key(bigger, c) for c in
                                                    plan_cells(bigger)}
    assert all(cell_key(bigger, c) == cell_key(cfg, c) for c in cells)
    # ... while anything that changes a cell's numbers changes its key.
    other = config_from_dict({**tree, "model": {**tree["model"], "dim": 16}})
    assert not {cell_key(other, c) for c in cells} & {cell_key(cfg, c) for c in cells}
    with pytest.raises(ConfigError, match="defense.options.at.eps"):
        config_from_dict({**tree, "defense": {"name": "at", "options": {"at": {"eps": []}}}})


KILL_GRID = {"targets": {"kind": ["random", "unpopular"]},
             "attack": {"name": ["random", "average", "bandwagon"], "size": 0.05},
             "defense": {"name": ["none", "rat"]}, "model": {"dim": 16, "epochs": 25,
                                                              "batch_size": 256}}


def test_grid_killed_partway_resumes_to_the_uninterrupted_result(tmp_path):
    reference = run_experiment(config_from_dict(small_tree(tmp_path / "ref", **KILL_GRID)))
    total = len(pd.read_csv(reference / "runs.csv"))
    tree = small_tree(tmp_path / "killed", **KILL_GRID)
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(tree))
    cells = tmp_path / "killed" / "results" / "t" / "cells"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--config", str(config),
                             "workers=2", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and len(list(cells.glob("*.json"))) < 3:
            time.sleep(0.02)
        workers = children(proc.pid)
        proc.send_signal(signal.SIGKILL)  # "killed at any moment": no handler runs
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = len(list(cells.glob("*.json")))
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 3 <= finished < total, "the kill must land partway through the grid"
    assert not (cells.parent / "runs.csv").exists()
    assert len(workers) >= 2 and not alive(workers), "workers must die with the driver"
    resumed = run_experiment(config_from_dict(tree))  # rerun, one process this time
    assert numbers(resumed / "runs.csv") == numbers(reference / "runs.csv")
    meta = json.loads((resumed / "meta.json").read_text())
    assert meta["execution"]["cells_reused"] == finished
    assert meta["execution"]["cells_computed"] == total - finished
    assert not list(cells.glob(".*.tmp"))


class ExplodingDefense(NoDefense):
    """Plain training at a learning rate that overflows: a real non-finite loss."""

    name = "exploding"

    def fit(self, data):
        self.model_cfg = dataclasses.replace(self.model_cfg, lr=1e30)
        return super().fit(data)


def test_non_finite_loss_fails_its_cell_and_the_grid_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFENSES, "exploding", ExplodingDefense)
    tree = small_tree(tmp_path, targets={"kind": ["random", "unpopular"]},
                      attack={"name": ["random", "bandwagon"]},
                      defense={"name": ["exploding", "none"]})
    out = run_experiment(config_from_dict(tree))
    runs = pd.read_csv(out / "runs.csv")
    failed = pd.read_csv(out / "failed.csv")
    # Every Origin and undefended cell finished; each exploding cell is recorded with its error.
    assert len(runs) == 2 * (1 + 2) and set(runs.defense) == {"none"}
    assert len(failed) == 2 * 2 and set(failed.defense) == {"exploding"}
    assert failed.error.str.startswith("NonFiniteLossError: non-finite training loss").all()
    summary = pd.read_csv(out / "summary.csv")
    exploded = summary[summary.defense == "exploding"]
    assert len(exploded) == 4 and (exploded.n_failed == 1).all() and (exploded.n_runs == 0).all()
    assert exploded.errors.str.contains("NonFiniteLossError").all()
    tables = (out / "tables.md").read_text()
    assert "## Failed cells" in tables and tables.count("| exploding | NonFiniteLossError") == 4
    assert "| failed |" in tables
    # A rerun keeps the finished cells and retries only the failed ones.
    out = run_experiment(config_from_dict(tree))
    meta = json.loads((out / "meta.json").read_text())["execution"]
    assert (meta["cells_reused"], meta["cells_computed"], meta["cells_failed"]) == (6, 0, 4)
    # From the command line, a grid with failed cells exits non-zero.
    import yaml

    from main import main
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(tree))
    assert main(["--config", str(tmp_path / "grid.yaml"), "--quiet"]) == 1


def test_cell_keys_follow_only_the_cells_own_sources_and_non_default_options(monkeypatch):
    """Editing one defense reruns its cells only; naming an option at its default value keeps
    the key, another value changes it."""
    from experiment import planning

    cfg = config_from_dict({"dataset": {"name": "synthetic"},
                            "attack": {"name": ["random"]},
                            "defense": {"name": ["tcd", "share"]}})
    cells = {c.defense: c for c in plan_cells(cfg) if c.attacked}
    origin = next(c for c in plan_cells(cfg) if not c.attacked)
    assert "defenses/tcd.py" in planning.module_sources("defenses.tcd")
    assert "models/trainer.py" in planning.module_sources("defenses.tcd")
    assert "defenses/share.py" not in planning.module_sources("defenses.tcd")
    assert "defenses/share_valuation.py" in planning.module_sources("defenses.share")
    # Numeric helpers in utils are followed (the trainer's validation ranking, PORE's
    # certificate); the config reader and the file writer are not.
    assert "utils/topk_metrics.py" in planning.module_sources("models.trainer")
    assert "utils/certification.py" in planning.module_sources("defenses.pore")
    pore = set(planning.module_sources("defenses.pore"))
    assert not {"utils/config.py", "utils/atomic.py"} & pore
    before = {d: cell_key(cfg, c) for d, c in cells.items()}
    origin_key = cell_key(cfg, origin)

    real = planning.source_fingerprint

    def edited(path):
        """source_fingerprint as if ``path`` had been edited (a folder part covers its files)."""
        def fingerprint(*parts):
            touched = any(path == p or path.startswith(p + "/") for p in parts)
            return real(*parts) + ("-edited" if touched else "")
        return fingerprint

    monkeypatch.setattr(planning, "source_fingerprint", edited("defenses/share.py"))
    after = {d: cell_key(cfg, c) for d, c in cells.items()}
    assert after["tcd"] == before["tcd"] and after["none"] == before["none"]
    assert after["share"] != before["share"]

    # An attack edit reruns its cells, not the clean-data ones.
    monkeypatch.setattr(planning, "source_fingerprint", edited("attacks/random_attack.py"))
    assert cell_key(cfg, origin) == origin_key
    assert cell_key(cfg, cells["tcd"]) != before["tcd"]

    # The workspace derives every stage's seed (e.g. a cost sweep's shared draws): an edit there
    # reruns every cell; an edit to the reports keeps them all.
    monkeypatch.setattr(planning, "source_fingerprint", edited("experiment/workspace.py"))
    assert cell_key(cfg, origin) != origin_key
    assert all(cell_key(cfg, c) != before[d] for d, c in cells.items())
    monkeypatch.setattr(planning, "source_fingerprint", edited("experiment/reporting.py"))
    assert cell_key(cfg, origin) == origin_key
    assert all(cell_key(cfg, c) == before[d] for d, c in cells.items())
    monkeypatch.setattr(planning, "source_fingerprint", real)

    explicit = config_from_dict({"dataset": {"name": "synthetic"}, "attack": {"name": ["random"]},
                                 "defense": {"name": ["tcd", "share"],
                                             "options": {"tcd": {"projection": "clip"}}}})
    assert cell_key(explicit, cells["tcd"]) == before["tcd"]
    other = config_from_dict({"dataset": {"name": "synthetic"}, "attack": {"name": ["random"]},
                              "defense": {"name": ["tcd", "share"],
                                          "options": {"tcd": {"projection": "round"}}}})
    assert cell_key(other, cells["tcd"]) != before["tcd"]


def test_cached_profiles_are_keyed_by_their_attacks_own_sources(monkeypatch):
    """Editing one attack invalidates its cached profiles only."""
    from experiment import planning

    real = planning.source_fingerprint
    before = {a: planning.attack_sources_digest(a) for a in ("random", "aush", "neural")}
    monkeypatch.setattr(planning, "source_fingerprint",
                        lambda *parts: real(*parts) + ("-edited" if "attacks/aush.py" in parts
                                                       else ""))
    after = {a: planning.attack_sources_digest(a) for a in ("random", "aush", "neural")}
    assert after["random"] == before["random"] and after["neural"] == before["neural"]
    assert after["aush"] != before["aush"]


def test_attacks_that_run_other_components_by_name_are_keyed_by_those_only(monkeypatch):
    """``adaptive`` (base clone, against share) and ``gcoattack`` (against tcd) depend on the
    components their options name, not on every registered module: editing TCD reruns
    gcoattack's profiles and not adaptive's; editing SHARE the other way round."""
    from attacks import ATTACKS
    from experiment import planning

    real = planning.source_fingerprint

    def digests(edited=None):
        monkeypatch.setattr(planning, "source_fingerprint", lambda *parts: real(*parts) + (
            "-edited" if edited in parts else ""))
        out = {name: planning.attack_sources_digest(name) for name in ("adaptive", "gcoattack",
                                                                        "random")}
        out["adaptive_vs_pca"] = planning.attack_sources_digest(
            "adaptive", ATTACKS["adaptive"].parse_options({"against": "pca_detect"}))
        return out

    before = digests()
    tcd = digests("defenses/tcd.py")
    assert tcd["gcoattack"] != before["gcoattack"] and tcd["adaptive"] == before["adaptive"]
    share = digests("defenses/share.py")
    assert share["adaptive"] != before["adaptive"] and share["gcoattack"] == before["gcoattack"]
    assert share["adaptive_vs_pca"] == before["adaptive_vs_pca"]
    clone = digests("attacks/clone.py")
    assert clone["adaptive"] != before["adaptive"] and clone["random"] == before["random"]
    aush = digests("attacks/aush.py")
    assert aush == before
