"""Config files a new user gets wrong: an empty file and a key given twice are one clear line."""
from __future__ import annotations

import uuid

import pytest

from tests.conftest import REPO
from utils.config import ConfigError
from experiment.validation import load_config


def error_of(tmp_path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("text", ["", "  \n\n   \n", "# a comment\n\n# another\n"])
def test_empty_or_comment_only_file(tmp_path, text):
    msg = error_of(tmp_path, text)
    assert "is empty" in msg and "experiment:" in msg


def test_duplicate_top_level_key(tmp_path):
    msg = error_of(tmp_path, "experiment: x\nmodel:\n  epochs: 3\nattack: random\n"
                             "model:\n  dim: 8\n")
    assert "key model given twice (lines 2 and 5)" in msg


def test_duplicate_nested_key(tmp_path):
    msg = error_of(tmp_path, "experiment: x\nmodel:\n  name: mf\n  epochs: 3\n"
                             "  dim: 8\n  epochs: 4\n")
    assert "key model.epochs given twice (lines 4 and 6)" in msg


def test_main_rejects_duplicate_key_and_writes_nothing(tmp_path, capsys):
    from main import main

    experiment = f"dup-{uuid.uuid4().hex}"
    results = tmp_path / "results"
    path = tmp_path / "dup.yaml"
    path.write_text(f"experiment: {experiment}\nprogress: false\nresults_dir: {results}\n"
                    f"dataset:\n  name: synthetic\n  cache_dir: {tmp_path / 'cache'}\n"
                    "attack: none\nmodel:\n  dim: 4\n  epochs: 1\nmodel:\n  epochs: 1\n")
    assert main(["--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error:") and "key model given twice" in err
    assert not results.exists() and not (REPO / "results" / experiment).exists()


# ----------------------------------------------------------------------------- issue 33, item 5

def run_main(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_key_given_twice_is_an_error_as_in_a_yaml_file(tmp_path):
    """``model.epochs=3 model.epochs=4`` used to run with 4 epochs; the same key twice in a
    YAML file is an error, so on the command line it is one too: one line, exit 2, nothing
    written, earlier results untouched."""
    results = tmp_path / "results"
    (results / "previous").mkdir(parents=True)
    (results / "previous" / "runs.csv").write_text("kept\n")
    proc = run_main(f"results_dir={results}", "dataset=synthetic", "model.epochs=3",
                    "model.epochs=4", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "config error: command line: key model.epochs given twice (model.epochs=3 and "
        "model.epochs=4); keep one"]
    assert sorted(p.name for p in results.iterdir()) == ["previous"]
    assert (results / "previous" / "runs.csv").read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.parametrize("overrides, key", [
    (["model.epochs=3", "model={epochs: 4, dim: 8}"], "model.epochs"),
    (["dataset=file", "dataset.name=ml-100k"], "dataset.name"),
    (["attack=[random,average]", "attack.name=aush"], "attack.name"),
    (["attack.options={}", "attack.options.file.path=a.csv"], "attack.options"),
])
def test_cli_key_given_twice_in_any_spelling(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value) == (f"command line: key {key} given twice ({overrides[0]} and "
                               f"{overrides[1]}); keep one")


def test_cli_section_name_beside_its_keys_is_not_a_key_given_twice():
    cfg = load_config(None, ["dataset.root=/data", "dataset=filmtrust", "model=mf",
                             "model.epochs=3", "attack.options={aush: {epochs: 3}}",
                             "attack=aush", "attack.options.pga.surrogate_epochs=2"])
    assert (cfg.dataset.name, cfg.dataset.root, cfg.model.epochs) == ("filmtrust", "/data", 3)
    assert cfg.attack.options == {"aush": {"epochs": 3}, "pga": {"surrogate_epochs": 2}}


def test_quiet_beside_progress_true_is_not_a_key_given_twice(tmp_path):
    # --quiet sets progress after the overrides; the run then stops at the first data check.
    proc = run_main(f"results_dir={tmp_path / 'results'}", "dataset=synthetic", "progress=true",
                    "evaluation.k=200", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "evaluation.k=200" in proc.stderr
    assert not (tmp_path / "results").exists()
