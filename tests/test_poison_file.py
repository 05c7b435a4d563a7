"""``attack: file`` and the poison export: round trips in every format, and one clear error per
kind of bad file (shape, item ids, rating range, missing targets, size)."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import ATTACKS, AttackError
from attacks.poison_file import export_dense, export_poison, export_table, load_poison
from attacks.threat import ThreatContext, profiles_from, sample_fillers
from data.ratings import Interactions, RatingScale

N_ITEMS, N_FAKE, FILLERS = 40, 6, 8
TARGETS = np.array([3, 17])
SCALE = RatingScale(5.0, 5)
# Raw ids unlike the dense ids (as after filtering): dense j ↔ raw 7 + 3j.
RAW_IDS = 7 + 3 * np.arange(N_ITEMS)


def make_profiles(seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(np.arange(N_ITEMS), TARGETS)
    fillers = sample_fillers(rng, N_FAKE, others, FILLERS)
    items = np.hstack([np.tile(TARGETS, (N_FAKE, 1)), fillers])
    ratings = np.hstack([np.ones((N_FAKE, len(TARGETS))),
                         rng.integers(1, 6, size=fillers.shape) / 5.0])
    return profiles_from(items, ratings)


def context(n_fake: int = N_FAKE, feedback: str = "explicit", raw=RAW_IDS) -> ThreatContext:
    empty = Interactions(np.zeros(0), np.zeros(0), np.zeros(0))
    return ThreatContext(view=empty, visible_users=np.arange(0), n_users=200, n_items=N_ITEMS,
                         scale=SCALE, targets=TARGETS, n_fake=n_fake, filler_size=FILLERS,
                         feedback=feedback, extra={} if raw is None else {"raw_item_ids": raw})


def file_attack(path, **options):
    return ATTACKS["file"](ATTACKS["file"].parse_options({"path": str(path), **options}))


def sorted_triples(fake: Interactions) -> np.ndarray:
    order = np.lexsort((fake.items, fake.users))
    return np.stack([fake.users[order], fake.items[order], fake.ratings[order]], 1)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "npy"])
def test_export_then_load_gives_the_same_profiles(tmp_path, fmt):
    fake = make_profiles()
    (path,) = export_poison(fake, tmp_path, "poison", RAW_IDS, SCALE, N_ITEMS, [fmt])
    assert path.name == f"poison.{fmt}"
    loaded = file_attack(path).generate(context())
    assert np.allclose(sorted_triples(loaded), sorted_triples(fake))


def test_csv_uses_raw_item_ids_and_the_original_scale(tmp_path):
    fake = Interactions([0, 0], [3, 17], [1.0, 0.4])
    path = export_table(fake, tmp_path / "p.csv", RAW_IDS, SCALE)
    assert path.read_text().splitlines() == ["user,item,rating", "0,16,5", "0,58,2"]


def test_dense_layout_is_n_fake_by_n_items_normalized(tmp_path):
    fake = make_profiles()
    dense = np.load(export_dense(fake, tmp_path / "p.npy", N_ITEMS))
    assert dense.shape == (N_FAKE, N_ITEMS)
    assert np.all(dense[:, TARGETS] == 1.0)
    assert np.count_nonzero(dense) == len(fake)


def test_csv_with_own_user_ids_without_header_and_off_grid_ratings(tmp_path):
    path = tmp_path / "p.csv"
    # Fake ids 100/205, raw items 16 (dense 3) and 58 (dense 17) = the targets; 4.4 → 4.
    path.write_text("205,16,5\n205,58,5\n100,16,5\n100,58,5\n100,10,4.4\n")
    loaded = load_poison(path, N_ITEMS, SCALE, TARGETS, RAW_IDS)
    assert sorted(set(loaded.users)) == [0, 1]
    assert np.allclose(loaded.ratings[loaded.items == 1], 0.8)


def test_strict_size_and_first_profiles(tmp_path):
    (path,) = export_poison(make_profiles(), tmp_path, "p", RAW_IDS, SCALE, N_ITEMS, ["npy"])
    with pytest.raises(AttackError, match="6 fake profiles, but attack.n_fake is 4"):
        file_attack(path).generate(context(n_fake=4))
    first = file_attack(path, strict_size=False).generate(context(n_fake=4))
    assert sorted(set(first.users)) == [0, 1, 2, 3]
    with pytest.raises(AttackError, match="attack.n_fake is 9"):
        file_attack(path, strict_size=False).generate(context(n_fake=9))
    # n_fake 0 (no attack.n_fake): the file brings its own count.
    assert sorted(set(file_attack(path).generate(context(n_fake=0)).users)) == list(range(6))


def test_implicit_feedback_reads_every_rating_as_one(tmp_path):
    (path,) = export_poison(make_profiles(), tmp_path, "p", RAW_IDS, SCALE, N_ITEMS, ["csv"])
    assert np.all(file_attack(path).generate(context(feedback="implicit")).ratings == 1.0)


def bad_dense(tmp_path, array) -> str:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    return str(path)


def good_dense() -> np.ndarray:
    dense = np.zeros((N_FAKE, N_ITEMS), dtype=np.float32)
    dense[:, TARGETS] = 1.0
    dense[:, 0] = 0.6
    return dense


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:, :-1], r"shape \(6, 39\), expected \(n_fake, 40\)"),
    (lambda d: d[0], r"shape \(40,\)"),
    (lambda d: d * 5, r"normalized ratings in \[0, 1\].*divide raw ratings by 5"),
    (lambda d: np.where(d == 0.6, -0.2, d), r"ratings span \[-0.2"),
    (lambda d: np.where(np.arange(N_ITEMS) == 17, 0.0, d), r"no profile rates target item"),
    (lambda d: np.vstack([d, np.zeros((1, N_ITEMS))]), r"profile \(row\) 6 rates nothing"),
    (lambda d: np.where(d == 0.6, np.nan, d), r"finite"),
])
def test_bad_dense_files_fail_clearly(tmp_path, mutate, message):
    path = bad_dense(tmp_path, mutate(good_dense()))
    with pytest.raises(AttackError, match=message):
        load_poison(path, N_ITEMS, SCALE, TARGETS)


@pytest.mark.parametrize("text, message", [
    ("0,16,5\n0,58,5\n0,8,3\n", r"names item 8, which is not in the dataset"),
    ("0,16,5\n0,58,6\n", r"line 2 has rating 6; ratings are on the dataset's scale \(0, 5\]"),
    ("0,16,5\n0,58,0\n", r"line 2 has rating 0"),
    ("0,16,5\n0,19,5\n", r"no profile rates target raw id\(s\) 58"),
    ("0,16,5\n0,58\n", r"line 2 has 2 fields"),
    ("user,item,rating\n0,16,5\n0,58,x\n", r"line 3 has a non-numeric rating 'x'"),
    ("0,16,5\n0,tt58,5\n", r"line 2 names item tt58, which is not in the dataset "
                           r"\(raw ids span 7..124\)"),
    ("0,16,5\n0,99999999999999999999,5\n", r"line 2 names item 99999999999999999999"),
    ("0,16,5\n0,58,5\n0,58,4\n", r"line 3 repeats a \(user, item\) pair"),
    ("0,16.5,5\n", r"line 1 has a non-integer item id 16.5"),
    ("user,item,rating\n", r"holds no ratings"),
])
def test_bad_csv_files_fail_clearly(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AttackError, match=message):
        load_poison(path, N_ITEMS, SCALE, TARGETS, RAW_IDS)


def test_path_format_and_raw_id_errors(tmp_path):
    with pytest.raises(AttackError, match="give the poison file"):
        file_attack("").generate(context())
    with pytest.raises(AttackError, match="not found"):
        file_attack(tmp_path / "missing.csv").generate(context())
    odd = tmp_path / "poison.dat"
    odd.write_text("0,16,5\n")
    with pytest.raises(AttackError, match="cannot tell the format"):
        file_attack(odd).generate(context())
    # With the format given, the file is parsed (and found to miss a target).
    with pytest.raises(AttackError, match="no profile rates target"):
        file_attack(odd, format="csv").generate(context())
    csv = tmp_path / "p.csv"
    csv.write_text("0,16,5\n0,58,5\n")
    with pytest.raises(AttackError, match="raw ids were not passed"):
        file_attack(csv).generate(context(raw=None))
    with pytest.raises(AttackError, match="format 'xls' is unknown"):
        export_poison(make_profiles(), tmp_path, "p", RAW_IDS, SCALE, N_ITEMS, ["xls"])


def test_pipeline_exports_profiles_that_replay_through_attack_file(tmp_path):
    """`attack.export` writes each cell's profiles; `attack: file` on the exported CSV loads the
    same profiles (its own export is byte-identical) and they still lift the targets; editing
    the file is noticed (its hash is in the cache keys)."""
    import pandas as pd

    from tests.conftest import small_tree
    from experiment.validation import config_from_dict
    from experiment.pipeline import run_experiment

    tree = small_tree(tmp_path, attack={"name": ["average"], "size": 0.05,
                                        "export": ["csv", "npy"]})
    out = run_experiment(config_from_dict(tree))
    exported = sorted(p.name for p in (out / "poison").iterdir())
    assert [p.rsplit(".", 1)[1] for p in exported] == ["csv", "npy"]
    csv = out / "poison" / exported[0]

    replay = small_tree(tmp_path, experiment="replay",
                        attack={"name": ["file"], "size": 0.05, "export": ["csv"],
                                "options": {"file": {"path": str(csv)}}})
    replay_out = run_experiment(config_from_dict(replay))
    (again,) = list((replay_out / "poison").iterdir())
    assert again.read_text() == csv.read_text()
    replayed = pd.read_csv(replay_out / "runs.csv").set_index("attack")
    assert replayed.loc["file", "prediction_shift"] > 0.3

    # Same path, other contents (every rating the lowest): the cached cell is not reused.
    table = pd.read_csv(csv)
    table["rating"] = 1
    table.to_csv(csv, index=False)
    edited = pd.read_csv(run_experiment(config_from_dict(replay)) / "runs.csv")
    assert edited.set_index("attack").loc["file", "prediction_shift"] < \
        replayed.loc["file", "prediction_shift"] - 0.3


# ----------------------------------------------------------------------------- issue 33, items 1-2

def not_a_dense_array(path) -> str:
    return (f"poison file {path}: not a numeric .npy array of shape n_fake × {N_ITEMS} (one "
            "column per item of the dataset); accepted: .npy of normalized ratings in [0, 1], "
            "or .csv/.tsv of user,item,rating lines")


def npy_bytes(tmp_path, array, allow_pickle=False) -> bytes:
    path = tmp_path / "made.npy"
    np.save(path, array, allow_pickle=allow_pickle)
    return path.read_bytes()


@pytest.mark.parametrize("make", [
    lambda tmp: np.random.default_rng(0).bytes(4000),                       # random bytes
    lambda tmp: b"",
    lambda tmp: npy_bytes(tmp, good_dense())[:100],                         # truncated header
    lambda tmp: npy_bytes(tmp, good_dense())[:200],                         # truncated data
    lambda tmp: npy_bytes(tmp, np.array([{"a": 1}], dtype=object), True),   # a pickle
    lambda tmp: npy_bytes(tmp, np.array([["a", "b"]])),                     # strings
], ids=["random", "empty", "header", "data", "pickle", "strings"])
def test_a_file_that_is_no_numeric_npy_never_suggests_unsafe_loading(tmp_path, make):
    """numpy's message for a random or pickled file says "you can load it unsafely using
    allow_pickle": never shown. One line says what the file is not and what is accepted."""
    path = tmp_path / "poison.npy"
    path.write_bytes(make(tmp_path))
    with pytest.raises(AttackError) as info:
        load_poison(path, N_ITEMS, SCALE, TARGETS, RAW_IDS)
    assert str(info.value) == not_a_dense_array(path)
    assert "pickle" not in str(info.value)


def test_an_npz_archive_named_npy_is_not_a_dense_array(tmp_path):
    path = tmp_path / "poison.npy"
    with open(path, "wb") as handle:
        np.savez(handle, dense=good_dense())
    with pytest.raises(AttackError) as info:
        load_poison(path, N_ITEMS, SCALE, TARGETS, RAW_IDS)
    assert str(info.value) == not_a_dense_array(path)


def test_a_csv_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "poison.csv"
    path.write_bytes(b"0,16,5\n\xff\xfe\x00garbage")
    with pytest.raises(AttackError) as info:
        load_poison(path, N_ITEMS, SCALE, TARGETS, RAW_IDS)
    assert str(info.value) == (f"poison file {path}: not UTF-8 text (byte 7); a .csv/.tsv "
                               "poison file holds user,item,rating lines in UTF-8")


# Token item ids, as `dataset: file` keeps them (`tt0000016`); the targets' ids hold the
# separators and a quote, which the export quotes.
TOKEN_IDS = np.array([f"tt{7 + 3 * j:07d}" for j in range(N_ITEMS)], dtype=object)
TOKEN_IDS[TARGETS[0]] = 'Movie, The "1"'
TOKEN_IDS[TARGETS[1]] = "tab\there"
TOKEN_IDS = TOKEN_IDS.astype(str)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_token_item_ids_export_and_load_back(tmp_path, fmt):
    """With string item ids the exported CSV used to stop with "line 2 is not numeric"."""
    fake = make_profiles()
    (path,) = export_poison(fake, tmp_path, "poison", TOKEN_IDS, SCALE, N_ITEMS, [fmt])
    assert "tt00000" in path.read_text()
    loaded = file_attack(path).generate(context(raw=TOKEN_IDS))
    assert np.allclose(sorted_triples(loaded), sorted_triples(fake))
    # Written again from what was loaded: the same bytes.
    (again,) = export_poison(loaded, tmp_path / "again", "poison", TOKEN_IDS, SCALE, N_ITEMS,
                             [fmt])
    assert again.read_bytes() == path.read_bytes()


def test_token_ids_a_hand_written_file_and_its_errors(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("fake_b,tt0000007,4\nfake_b,\"Movie, The \"\"1\"\"\",5\n"
                    "fake_a,\"Movie, The \"\"1\"\"\",5\nfake_a,\"tab\there\",5\n"
                    "fake_b,\"tab\there\",5\n")
    loaded = load_poison(path, N_ITEMS, SCALE, TARGETS, TOKEN_IDS)
    assert np.allclose(sorted_triples(loaded), [[0, 3, 1.0], [0, 17, 1.0], [1, 0, 0.8],
                                                [1, 3, 1.0], [1, 17, 1.0]])
    path.write_text("0,tt0000007,4\n0,tt9999999,5\n")
    with pytest.raises(AttackError, match=r"^poison file .*p.csv: line 2 names item tt9999999, "
                                          r"which is not in the dataset \(raw ids span "
                                          r"tt0000007..tt0000124\)$"):
        load_poison(path, N_ITEMS, SCALE, TARGETS, TOKEN_IDS)
    path.write_text("0,Movie, The \"1\",5\n")   # an id holding the separator, not quoted
    with pytest.raises(AttackError, match="line 1 has 4 fields"):
        load_poison(path, N_ITEMS, SCALE, TARGETS, TOKEN_IDS)
    path.write_text("0,tt0000007,4\n0,tt0000010,5\n")
    with pytest.raises(AttackError, match=r"no profile rates target raw id\(s\) Movie, The "
                                          r"\"1\", tab\there; it was made for other targets"):
        load_poison(path, N_ITEMS, SCALE, TARGETS, TOKEN_IDS)


# ----------------------------------------------------------------------------- on the command line

def run(*args, cwd, module=None):
    import subprocess
    import sys

    from tests.conftest import REPO

    head = [sys.executable, "-m", module] if module else [sys.executable, str(REPO / "main.py")]
    return subprocess.run(head + list(args), cwd=cwd if not module else REPO,
                          capture_output=True, text=True, timeout=300)


def synthetic_items() -> tuple[int, int]:
    """The item count and the highest raw item id of ``python main.py dataset=synthetic``."""
    from data import load_dataset
    from tests.conftest import REPO
    from experiment.validation import load_config

    cfg = load_config(REPO / "config.yaml", ["dataset=synthetic"])
    data = load_dataset(cfg.dataset, cfg.seed)
    return data.n_items, int(data.raw_item_ids.max())


def test_random_bytes_npy_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    """Issue 33, item 1, as a new user met it: ``attack=file`` on a random-bytes ``.npy``."""
    (tmp_path / "rand.npy").write_bytes(np.random.default_rng(1).bytes(4000))
    proc = run("dataset=synthetic", "attack=file", "attack.options.file.path=rand.npy",
               "results_dir=results", "dataset.cache_dir=cache", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    n_items, _ = synthetic_items()
    assert proc.stderr.splitlines() == [
        f"config error: poison file rand.npy: not a numeric .npy array of shape n_fake × "
        f"{n_items} (one column per item of the dataset); accepted: .npy of normalized ratings "
        "in [0, 1], or .csv/.tsv of user,item,rating lines"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rand.npy"]


BAD_POISON = [   # (file name, how to write it, extra overrides, the message after "poison file X: ")
    ("missing.npy", None, [], None),
    ("narrow.npy", lambda path, n: np.save(path, np.ones((3, n - 1), np.float32)), [],
     r"shape \(3, {n1}\), expected \(n_fake, {n}\) — one column per dataset item in raw-id order"),
    ("unknown.csv", lambda path, n: path.write_text("user,item,rating\n0,0,5\n0,99999,5\n"), [],
     r"line 3 names item 99999, which is not in the dataset \(raw ids span 0..{top}\)"),
    ("other_targets.csv", lambda path, n: path.write_text("0,0,5\n"), [],
     r"no profile rates target raw id\(s\) [\d, ]+; it was made for other targets \(check "
     r"targets.kind / targets.items\)"),
    ("three.npy", lambda path, n: np.save(path, np.ones((3, n), np.float32)),
     ["attack.n_fake=5"], r"3 fake profiles, but attack.n_fake is 5; set attack.n_fake: 3 or "
                          r"leave it out \(a file brings its own count\)"),
]


@pytest.mark.parametrize("name, write, extra, message", BAD_POISON,
                         ids=[case[0] for case in BAD_POISON])
def test_a_bad_poison_file_stops_the_run_before_the_results_folder_is_made(
        tmp_path, name, write, extra, message):
    """Issue 33, item 4: a poison-file error used to come after "2 to run", leaving ``.lock``,
    ``config.yaml`` and an empty ``cells/``. Every file is now read and checked (readability,
    shape, ids, targets, count) with the config: one line, exit 2, nothing written, an earlier
    run's results untouched."""
    import re

    n, top = synthetic_items()
    if write is not None:
        write(tmp_path / name, n)
    earlier = tmp_path / "results" / "default"
    earlier.mkdir(parents=True)
    (earlier / "runs.csv").write_text("earlier\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run("dataset=synthetic", "attack=file", f"attack.options.file.path={name}",
               "results_dir=results", "dataset.cache_dir=cache", *extra, "--quiet",
               cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    expected = (rf"{re.escape(name)}: {message.format(n=n, n1=n - 1, top=top)}" if message
                else rf"{re.escape(name)} not found; check attack.options.file.path")
    assert re.fullmatch(rf"config error: poison file {expected}", line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [p.name for p in earlier.iterdir()] == ["runs.csv"]
    assert (earlier / "runs.csv").read_text() == "earlier\n"


def test_exported_poison_with_token_item_ids_replays_through_main_and_fingerprint(tmp_path):
    """Issue 33, item 2: ``dataset=file`` with ids like ``tt0000016``, ``attack.export=[csv]``,
    then ``attack=file`` on the exported CSV used to stop with "line 2 is not numeric"."""
    import pandas as pd

    from tests.test_dataset_file import small_ratings

    rows = small_ratings()
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating\n" + "".join(
        f"u{u},tt{i:07d},{r}\n" for u, i, r in rows))
    data = ["dataset=file", f"dataset.path={tmp_path / 'ratings.csv'}", "dataset.sep=,",
            "dataset.header=true", f"dataset.cache_dir={tmp_path / 'cache'}"]
    common = data + ["results_dir=results", "evaluation.k=10", "model.epochs=2", "--quiet"]
    made = run(*common, "attack=average", "attack.export=[csv]", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (poison,) = (tmp_path / "results" / "default" / "poison").iterdir()
    assert poison.read_text().splitlines()[1].split(",")[1].startswith("tt")

    replay = run(*common, "experiment=replay", "attack=file", "attack.export=[csv]",
                 f"attack.options.file.path={poison}", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    runs = pd.read_csv(tmp_path / "results" / "replay" / "runs.csv")
    assert runs[runs.attack == "file"].n_fake.item() == len(
        {line.split(",")[0] for line in poison.read_text().splitlines()[1:]})
    (again,) = (tmp_path / "results" / "replay" / "poison").iterdir()
    assert again.read_text() == poison.read_text()   # the very profiles, exported again
    assert not (tmp_path / "results" / "replay" / ".lock").exists()

    finger = run(*data, "--file", str(poison), cwd=tmp_path, module="experiment.fingerprint")
    assert finger.returncode == 0, finger.stderr
    assert f"| {poison.name} |" in finger.stdout and "targets (unpopular) raw ids tt" in \
        finger.stdout
