"""Refactors keep behaviour: the same seed gives the same ``runs.csv`` metrics, bit for bit.

The fixtures in ``tests/fixtures/behaviour/`` were written by ``main.py`` at commit cb2d657
(before the package was split into floor and roof): a synthetic grid with every attack against
the undefended MF, every defense against one attack, NCF on implicit feedback, and the default
preset (``config.yaml``) on ML-100K. Each run here goes through the command line, the interface
that stays fixed across refactors, and compares every fixture column but the cell key and the
timings as text, so a change in the last printed digit fails (columns added later, such as a new
metric, are not in the fixture).
"""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import DATA_ROOT, REPO, require_real_data

FIXTURES = REPO / "tests" / "fixtures" / "behaviour"
SMALL = ["dataset=synthetic", "attack.size=0.05", "model.dim=16", "model.batch_size=256",
         "evaluation.k=10", "targets.count=3", "seed=5"]
GRIDS = {
    "attacks": SMALL + ["attack.name=[random,average,bandwagon,segment,aush,pga,tna,neural,"
                        "clone,coattack,gcoattack,adaptive]", "defense.name=[none]",
                        "model.epochs=8"],
    "defenses": SMALL + ["attack.name=[bandwagon]", "model.epochs=8",
                         "defense.name=[none,at,rat,tcd,share,share_prior,share_no_support,"
                         "share_v1,share_no_adv,share_no_elim,share_no_group,share_no_reward,"
                         "share_spec_value,share_uniform,share_group_v1,share_group_budget,"
                         "pamacf,vat,pca_detect,degsim]"],
    "ncf": SMALL + ["attack.name=[random,aush]", "model.name=ncf", "dataset.feedback=implicit",
                    "defense.name=[none,at,pca_detect]", "model.epochs=6"],
}


def run_grid(tmp_path, name: str, overrides: list[str]) -> pd.DataFrame:
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--quiet", f"results_dir={tmp_path}",
         f"experiment={name}", f"dataset.cache_dir={tmp_path / 'cache'}", *overrides],
        capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = pd.read_csv(tmp_path / name / "runs.csv", dtype=str, keep_default_na=False)
    return runs[[c for c in runs.columns if c != "cell" and not c.startswith("seconds_")]]


def assert_same_as_fixture(runs: pd.DataFrame, name: str) -> None:
    """Every column of the fixture, in its order, equal as text; columns added since (a new
    metric) may sit anywhere among them."""
    expected = pd.read_csv(FIXTURES / f"{name}.csv", dtype=str, keep_default_na=False)
    assert [c for c in runs.columns if c in expected.columns] == list(expected.columns)
    pd.testing.assert_frame_equal(runs[list(expected.columns)].reset_index(drop=True), expected,
                                  check_exact=True)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_synthetic_grids_match_the_fixture(tmp_path, name):
    assert_same_as_fixture(run_grid(tmp_path, name, GRIDS[name]), name)


@pytest.mark.slow
def test_default_preset_matches_the_fixture(tmp_path, monkeypatch):
    require_real_data("ml-100k/u.data")
    monkeypatch.setenv("ROBUSTREC_DATA", str(DATA_ROOT))
    assert_same_as_fixture(run_grid(tmp_path, "default", []), "default")
