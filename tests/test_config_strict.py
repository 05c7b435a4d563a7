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
