"""`dataset: file`: your own delimited ratings file — formats, ids, errors with line numbers,
filters, duplicates, config validation, cache keys and meta.json, the README commands."""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import main
from data import DatasetError, load_dataset
from data.sources import sha256_of
from utils.config import ConfigError, DatasetConfig
from experiment.validation import config_from_dict, load_config
from experiment.planning import cell_key, plan_cells

REPO = Path(__file__).resolve().parents[1]
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def load(path, **keys):
    return load_dataset(DatasetConfig(name="file", path=str(path), **keys))


def write(tmp_path, text: str, name: str = "ratings.tsv") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def small_ratings(seed: int = 0) -> list[tuple[int, int, int]]:
    """60 users × 40 items, ~25 ratings per user (1–5); items 32–39 are rare (2 users each),
    so there are unpopular targets."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(60):
        for i in rng.choice(32, size=25, replace=False):
            rows.append((u, int(i), int(rng.integers(1, 6))))
    for i in range(32, 40):
        rows += [(2 * (i - 32), i, 5), (2 * (i - 32) + 1, i, 4)]
    return rows


def inter_text(rows) -> str:
    body = "".join(f"u{u}\ti{100 + i}\t{r}.0\t{978300000 + n}\n"
                   for n, (u, i, r) in enumerate(rows))
    return f"{INTER_HEADER}\n{body}"


def dat_text(rows) -> str:
    return "".join(f"{u + 1}::{100 + i}::{r}::{978300000 + n}\n"
                   for n, (u, i, r) in enumerate(rows))


# ----------------------------------------------------------------------------- formats

def test_recbole_inter_file(tmp_path):
    path = write(tmp_path, f"{INTER_HEADER}\nu2\ti10\t4.0\t881250949\nu10\ti9\t5.0\t881250950\n"
                           "u2\ti9\t1.0\t881250951\n", "ml.inter")
    data = load(path, header=True, columns=["user", "item", "rating", "timestamp"])
    assert (data.name, data.n_users, data.n_items, data.n_ratings) == ("file", 2, 2, 3)
    assert data.raw_item_ids.tolist() == ["i10", "i9"]  # ascending as strings
    inter = data.interactions
    got = {(int(u), str(data.raw_item_ids[i]), round(float(r) * 5, 4))
           for u, i, r in zip(inter.users, inter.items, inter.ratings)}
    assert got == {(1, "i10", 4), (0, "i9", 5), (1, "i9", 1)}  # users "u10" < "u2": u10 is 0
    assert np.allclose(np.sort(inter.ratings), [0.2, 0.8, 1.0])  # normalized to (0, 1]


def test_movielens_dat_file_keeps_numeric_raw_ids(tmp_path):
    path = write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
                           "10::48::1::978824351\n", "ratings.dat")
    data = load(path, sep="::", columns=["user", "item", "rating", "timestamp"])
    assert (data.n_users, data.n_items, data.n_ratings) == (3, 3, 4)
    assert data.raw_item_ids.dtype == np.int64
    assert data.raw_item_ids.tolist() == [48, 661, 1193]  # numerically, not as strings
    assert sorted(np.round(data.interactions.ratings * 5).tolist()) == [1, 3, 4, 5]
    assert data.scale.max_rating == 5 and data.scale.steps == 5


def test_implicit_file_skipped_columns_and_escaped_tab(tmp_path):
    path = write(tmp_path, "a\tx\t1\n\na\ty\t2\nb\tx\t3\n")  # a blank line is skipped
    data = load(path, sep="\\t", columns=["user", "item", "seen_at"])  # "\t" typed literally
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 2, 3)
    assert np.all(data.interactions.ratings == 1.0)  # every row is the top rating
    assert data.raw_item_ids.tolist() == ["x", "y"]


def test_rating_steps_and_max_rating(tmp_path):
    path = write(tmp_path, "1 1 0.5\n1 2 4\n2 1 2.5\n")
    data = load(path, sep=" ", max_rating=4, rating_steps=8)
    assert sorted(np.round(data.interactions.ratings * 8).tolist()) == [1, 5, 8]
    assert (data.scale.max_rating, data.scale.steps) == (4, 8)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("text, keys, message", [
    ("1\t10\t5\n2\t11\n", {}, r"line 2 has 2 field\(s\).*dataset.columns"),
    ("1\t10\t5\n2\t11\tfive\n", {}, r"line 2 has a non-numeric rating 'five'"),
    ("1\t10\t5\t9\n\n2\t11\t4\tyesterday\n", {"columns": ["user", "item", "rating", "timestamp"]},
     r"line 3 has a non-numeric timestamp 'yesterday'"),
    ("1\t10\t5\n1\t11\t6\n1\t12\t10\n", {},
     r"line 2 has rating 6, outside \(0, 5\]; fix the line or set dataset.max_rating \(the "
     r"file's ratings reach 10: dataset.max_rating=10 if that is the top of its scale\)$"),
    ("1\t10\t0\n", {}, r"line 1 has rating 0, outside \(0, 5\]; ratings are positive: fix"),
    ("1\t10\t5\n1\t11\t3.5\n", {}, r"line 2 has rating 3.5, not on the grid.*"
                                     r"set dataset.rating_steps=10$"),
    ("1\t10\t5\n1\t11\t3.14159\n", {}, r"line 2 has rating 3.14159, not on the grid of 5 "
     r"levels \(1, 2, …, 5\); no grid of up to 1000 levels holds every rating of the file"),
    ("1\t10\t5\n2\t10\t3\n1\t10\t4\n", {},
     r"rates item 10 twice \(lines 1 and 3\).*set dataset.duplicates: first\|last to keep one"),
    ("user\titem\trating\n1\t10\t5\n", {}, r"line 1 has a non-numeric rating.*dataset.header"),
    ("user\titem\n1\t10\n2\t11\n", {"columns": ["user", "item"]},
     r"line 1 looks like a header.*dataset.header: true"),
    ("\n\n", {}, r"holds no ratings"),
    ("1\t10\t5\n2\t11\t4\n", {"min_user_ratings": 2},
     r"no ratings left after dataset.min_user_ratings=2"),
    ("1\t10\t5\n1\t11\t4\n", {"min_item_ratings": 2},
     r"no ratings left after dataset.min_item_ratings=2"),
])
def test_every_problem_is_one_line_naming_file_line_and_fix(tmp_path, text, keys, message):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError, match=message) as info:
        load(path, **keys)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))


@pytest.mark.parametrize("ratings, keys, steps", [
    ([0.5, 3.5, 5, 4.5], {}, 10),                               # half stars up to 5
    ([1, 2.5, 4, 5], {"rating_steps": 4}, 10),                   # a wrong rating_steps given
    ([0.25, 4, 3.75], {"max_rating": 4}, 16),
    ([1, 2, 3, 4, 5], {"rating_steps": 4}, 5),
])
def test_ratings_between_the_levels_name_the_rating_steps_that_fit_the_file(
        tmp_path, ratings, keys, steps):
    path = write(tmp_path, "".join(f"{n}\t{n}\t{r}\n" for n, r in enumerate(ratings)))
    with pytest.raises(DatasetError) as info:
        load(path, **keys)
    assert str(info.value).endswith(f"set dataset.rating_steps={steps}")
    assert "fix the line" not in str(info.value)
    data = load(path, **{**keys, "rating_steps": steps})  # the value named fits the file
    top = keys.get("max_rating", 5)
    assert sorted(data.interactions.ratings * top) == pytest.approx(sorted(ratings))


def test_movielens_latest_half_stars_on_the_command_line(tmp_path):
    """A MovieLens-latest ``ratings.csv`` (half stars 0.5–5, a header) used to
    stop with "fix the line or set dataset.rating_steps": every line was valid. The one line
    names the value that fits, nothing is written, and that value runs."""
    import subprocess
    import sys

    rows = small_ratings()
    body = "".join(f"{u + 1},{100 + i},{r - 0.5 * (n % 3 == 0)},{964982703 + n}\n"
                   for n, (u, i, r) in enumerate(rows))
    write(tmp_path, "userId,movieId,rating,timestamp\n" + body, "ratings.csv")
    args = [sys.executable, str(REPO / "main.py"), "dataset=file", "dataset.path=ratings.csv",
            "dataset.sep=,", "dataset.header=true", "dataset.columns=[user,item,rating,timestamp]",
            "results_dir=results", "dataset.cache_dir=cache", "evaluation.k=10", "model.epochs=2",
            "attack=random", "--quiet"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: ratings.csv: line 2 has rating {rows[0][2] - 0.5}, not on the grid of 5 levels "
        "(1, 2, …, 5); "
        "every rating of the file is on the grid of 10 levels (0.5, 1, …, 5): set "
        "dataset.rating_steps=10"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratings.csv"]
    proc = subprocess.run(args + ["dataset.rating_steps=10"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "results" / "default" / ".lock").exists()


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.tsv: no such file; set dataset.path"):
        load(tmp_path / "nope.tsv")


def test_filters_apply_users_then_items_once(tmp_path):
    path = write(tmp_path, "1\t10\t5\n1\t11\t4\n1\t12\t3\n2\t10\t5\n3\t10\t4\n3\t13\t2\n")
    data = load(path, min_user_ratings=2)  # user 2 (one rating) goes, items 10–13 stay
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 4, 5)
    data = load(path, min_user_ratings=2, min_item_ratings=2)
    # then items rated by fewer than 2 kept users go: only item 10; user 3 keeps its single
    # rating (the filters run once each, not until stable)
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 1, 2)
    assert data.raw_item_ids.tolist() == [10]


@pytest.mark.parametrize("policy, kept", [("first", 1.0), ("last", 0.4)])
def test_duplicate_policies(tmp_path, policy, kept):
    path = write(tmp_path, "1\t10\t5\n1\t10\t2\n2\t10\t3\n")
    data = load(path, duplicates=policy)
    assert data.n_ratings == 2
    inter = data.interactions
    assert inter.ratings[(inter.users == 0) & (inter.items == 0)].tolist() == [
        pytest.approx(kept)]


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("overrides, message", [
    (["dataset=file"], r"dataset.path: dataset 'file' .*set dataset.path="),
    (["dataset.path=x.tsv"], r"dataset.path: only dataset 'file' reads it.*set dataset=file"),
    (["dataset=file", "dataset.path=x", "dataset.columns=[user,rating]"],
     r"dataset.columns: .* no 'item' column"),
    (["dataset=file", "dataset.path=x", "dataset.columns=[user,item,user]"],
     r"dataset.columns: 'user' is given 2 times"),
    (["dataset=file", "dataset.path=x", "dataset.duplicates=keep"], r"dataset.duplicates"),
    (["dataset=file", "dataset.path=x", "dataset.max_rating=4.5"], r"dataset.rating_steps"),
    (["dataset=file", "dataset.path=x", "dataset.max_rating=0"], r"dataset.max_rating"),
])
def test_config_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_accepts_file_beside_builtin_datasets(tmp_path):
    cfg = load_config(None, ["dataset=[synthetic,file]", f"dataset.path={tmp_path}/r.tsv",
                             "dataset.sep=\\t", "dataset.header=true"])
    assert cfg.dataset.name == ["synthetic", "file"] and cfg.dataset.header is True


# ----------------------------------------------------------------------------- keys, runs

def file_config(tmp_path, path, **dataset):
    return config_from_dict({
        "experiment": "own", "progress": False, "results_dir": str(tmp_path / "results"),
        "dataset": {"name": "file", "path": str(path), "cache_dir": str(tmp_path / "cache"),
                    **dataset},
        "attack": {"name": "random"}, "model": {"epochs": 3}, "evaluation": {"k": 10}})


def test_changing_one_rating_changes_the_cell_key(tmp_path):
    text = dat_text(small_ratings())
    path = write(tmp_path, text, "ratings.dat")
    cfg = file_config(tmp_path, path, sep="::", columns=["user", "item", "rating", "timestamp"])
    cell = plan_cells(cfg)[0]
    before = cell_key(cfg, cell)
    lines = text.split("\n")
    user, item, rating, stamp = lines[0].split("::")
    lines[0] = "::".join([user, item, "4" if rating != "4" else "3", stamp])
    changed = "\n".join(lines)
    path.write_text(changed)
    stat = path.stat()  # a later mtime, as an edit a moment later has (coarse clocks)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert len(changed) == len(text) and cell_key(cfg, cell) != before
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert cell_key(cfg, cell) == before  # keyed by content, not by the file's timestamps


def test_file_keys_leave_builtin_cell_keys_alone(tmp_path):
    base = {"experiment": "x", "dataset": {"name": "synthetic"}}
    plain = config_from_dict(base)
    other = config_from_dict({**base, "dataset": {"name": "synthetic", "sep": ",",
                                                  "columns": ["item", "user"], "header": True,
                                                  "duplicates": "last"}})
    cell = plan_cells(plain)[0]
    assert cell_key(plain, cell) == cell_key(other, cell)


def _meta(results: Path) -> dict:
    (meta,) = results.glob("*/meta.json")
    return json.loads(meta.read_text())


def test_main_end_to_end_records_the_file_sha256(tmp_path):
    path = write(tmp_path, "".join(f"{u}\t{i}\t{r}\n" for u, i, r in small_ratings()))
    results = tmp_path / "results"
    rc = main.main(["dataset=file", f"dataset.path={path}", f"results_dir={results}",
                    f"dataset.cache_dir={tmp_path / 'cache'}", "evaluation.k=10",
                    "model.epochs=3", "attack=random", "--quiet"])
    assert rc == 0
    assert _meta(results)["dataset_files"] == {str(path): sha256_of(path)}
    # The tables name the dataset by its file's name, not "file" (issue 29).
    tables = next(results.glob("*/tables.md")).read_text()
    assert f"| {path.name} |" in tables and "| file |" not in tables
    assert f"**{path.name}**" in tables


def readme_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    lines = re.findall(r"^python main\.py dataset=file .*$", readme, flags=re.M)
    return [shlex.split(line)[2:] for line in lines]


def test_readme_examples_run(tmp_path):
    commands = readme_commands()
    assert len(commands) == 2
    for n, args in enumerate(commands):
        (given,) = [a for a in args if a.startswith("dataset.path=")]
        path = tmp_path / given.split("=", 1)[1]
        rows = small_ratings(seed=n)
        write(tmp_path, inter_text(rows) if path.suffix == ".inter" else dat_text(rows),
              str(path.relative_to(tmp_path)))
        results = tmp_path / f"results{n}"
        args = [f"dataset.path={path}" if a == given else a for a in args]
        rc = main.main(args + [f"results_dir={results}", f"dataset.cache_dir={tmp_path / 'cache'}",
                               "evaluation.k=10", "model.epochs=3", "attack=random", "--quiet"])
        assert rc == 0, args
        assert _meta(results)["dataset_files"] == {str(path): sha256_of(path)}
    assert {Path(a.split("=", 1)[1]).suffix for args in commands for a in args
            if a.startswith("dataset.path=")} == {".inter", ".dat"}
