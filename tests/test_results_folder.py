"""The results folder: runs of one setting share it and its tables, another setting gets its own
folder, an unwritable folder stops the run before any work, a second runner waits, and a log
file gets plain lines (issue: rough edges a new user hits)."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time

import pandas as pd
import yaml

from main import main
from tests.conftest import REPO, small_tree
from experiment.validation import config_from_dict
from experiment.pipeline import run_experiment
from experiment.results_folder import FolderLock


def test_a_second_run_of_the_same_setting_keeps_the_first_runs_tables(tmp_path):
    """``python main.py dataset=filmtrust`` after the default run used to replace the tables."""
    first = run_experiment(config_from_dict(small_tree(tmp_path, targets={"kind": "unpopular"})))
    second = run_experiment(config_from_dict(small_tree(
        tmp_path, targets={"kind": "random"}, attack={"name": ["random", "bandwagon"]})))
    assert second == first
    runs = pd.read_csv(second / "runs.csv")
    # The first run's cells (unpopular: Origin, random) stay beside the second run's.
    assert set(zip(runs.target_kind, runs.attack)) == {
        ("unpopular", "none"), ("unpopular", "random"),
        ("random", "none"), ("random", "random"), ("random", "bandwagon")}
    tables = (second / "tables.md").read_text()
    assert "unpopular: Origin" in tables and "random: Origin" in tables
    # Rerunning a cell with other options replaces its earlier result instead of adding one.
    third = run_experiment(config_from_dict(small_tree(
        tmp_path, targets={"kind": "random"},
        attack={"name": ["bandwagon"], "options": {"bandwagon": {"n_selected": 5}}})))
    runs = pd.read_csv(third / "runs.csv")
    assert len(runs) == 5 and len(runs[(runs.target_kind == "random")
                                       & (runs.attack == "bandwagon")]) == 1


def test_another_setting_goes_to_its_own_folder_with_a_notice(tmp_path, caplog):
    first = run_experiment(config_from_dict(small_tree(tmp_path)))
    before = {name: (first / name).read_bytes() for name in ("tables.md", "runs.csv")}
    with caplog.at_level(logging.WARNING):
        other = run_experiment(config_from_dict(small_tree(
            tmp_path, model={"dim": 32, "epochs": 2, "batch_size": 256})))
    assert other == first.parent / "t-2"
    assert {name: (first / name).read_bytes() for name in before} == before
    assert any("model.epochs 30 → 2" in r.getMessage() and "t-2" in r.getMessage()
               for r in caplog.records)
    assert yaml.safe_load((other / "config.yaml").read_text())["experiment"] == "t-2"
    # The same other setting again reuses its folder (and its cells).
    again = run_experiment(config_from_dict(small_tree(
        tmp_path, model={"dim": 32, "epochs": 2, "batch_size": 256})))
    assert again == other


def test_unwritable_results_folder_stops_before_any_work(tmp_path, capsys, monkeypatch):
    from experiment.workspace import Workspace

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the results folder was checked")

    monkeypatch.setattr(Workspace, "train", no_training)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    tree = small_tree(tmp_path, results_dir=str(blocker / "results"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["--config", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results folder" in err[0] and "results_dir=" in err[0]
    assert blocker.read_text() == "not a folder"


def test_k_not_below_the_item_count_is_a_config_error(tmp_path, capsys):
    tree = small_tree(tmp_path, evaluation={"k": 200})  # the synthetic data has 200 items
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation.k=200" in err[0] and "< 200" in err[0]
    assert not (tmp_path / "results").exists()


def test_a_second_runner_waits_for_the_first_and_reuses_its_cells(tmp_path, caplog):
    cfg = config_from_dict(small_tree(tmp_path))
    folder = tmp_path / "results" / "t"
    folder.mkdir(parents=True)
    done = []
    with caplog.at_level(logging.WARNING), FolderLock(folder):   # "the first run"
        runner = threading.Thread(target=lambda: done.append(run_experiment(cfg)))
        runner.start()
        for _ in range(600):   # until the second run reports that it waits
            if any("waiting for it to finish" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.1)
        assert any("waiting for it to finish" in r.getMessage() for r in caplog.records)
        assert runner.is_alive() and not list((folder / "cells").glob("*.json"))
    runner.join(timeout=300)
    assert done == [folder] and len(list((folder / "cells").glob("*.json"))) == 2


def test_progress_into_a_log_file_is_one_plain_line_per_cell(tmp_path):
    tree = small_tree(tmp_path, progress=True, attack={"name": ["random", "average"]})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--config", str(path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr
    cell_lines = [line for line in proc.stderr.splitlines() if re.match(r"\[\d+/3\] ", line)]
    assert len(cell_lines) == 3


# ----------------------------------------------------------------------------- issue 33, item 6

def write_config(tmp_path, **sections):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_tree(tmp_path, **sections)))
    return path


def test_a_finished_run_leaves_no_lock_file(tmp_path):
    """``.lock`` used to stay in every results folder after a successful run."""
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--config",
                           str(write_config(tmp_path)), "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "results" / "t"
    assert sorted(p.name for p in folder.iterdir()) == [
        "cells", "config.yaml", "figures", "meta.json", "plan.json", "runs.csv",
        "summary.csv", "tables.md", "tables.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "cache", "results"]


def test_an_interrupted_run_removes_its_lock_file(tmp_path, monkeypatch, capsys):
    from experiment.workspace import Workspace

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspace, "train", interrupted)
    assert main(["--config", str(write_config(tmp_path)), "--quiet"]) == 130
    assert capsys.readouterr().err.startswith("interrupted:")
    folder = tmp_path / "results" / "t"
    assert sorted(p.name for p in folder.iterdir()) == ["cells", "config.yaml"]


def test_a_killed_runs_lock_file_is_stale_and_removed_by_the_next_run(tmp_path):
    """A killed run cannot remove its ``.lock``: the operating system releases the lock, so the
    next run takes it at once (no waiting), runs, and removes the file."""
    folder = tmp_path / "results" / "t"
    folder.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from experiment.results_folder import FolderLock\n"
         f"with FolderLock(Path({str(folder)!r})):\n"
         "    print('locked', flush=True)\n    time.sleep(600)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.kill()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert (folder / ".lock").read_text() == f"pid {holder.pid}"   # left behind by the kill
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--config",
                           str(write_config(tmp_path))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "waiting" not in proc.stderr
    assert not (folder / ".lock").exists() and (folder / "runs.csv").is_file()
