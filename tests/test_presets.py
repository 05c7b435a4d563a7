"""configs/*.yaml: the presets and the commands in their headers (moved from
test_paper_protocol.py, issue 16)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from experiment.planning import plan_cells
from experiment.validation import load_config
from utils.config import for_dataset

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- presets

def header_commands(preset: str) -> list[list[str]]:
    text = (REPO / "configs" / preset).read_text(encoding="utf-8")
    text = re.sub(r"\\\n#\s*", " ", text)    # continued lines
    lines = re.findall(rf"^#\s+python main\.py --config configs/{preset}(.*)$", text, re.M)
    return [shlex.split(line, comments=True) for line in lines]


def test_paper_protocol_preset():
    cfg = load_config(REPO / "configs" / "tcd_paper_protocol.yaml")
    assert cfg.split.test_item == "any" and cfg.evaluation.select_on == "test"
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.reg) == ("adadelta_sparse", 20.0, 1e-4)
    assert cfg.attack.name == ["average", "random", "aush", "pga", "tna"]
    from defenses import DEFENSES
    for name in ("ml-100k", "filmtrust"):
        d = for_dataset(cfg, name)
        assert DEFENSES["at"].parse_options(d.defense.options["at"]).eps == 0.05
        assert DEFENSES["rat"].parse_options(d.defense.options["rat"]).eps == 0.05
        tcd = DEFENSES["tcd"].parse_options(d.defense.options["tcd"])
        assert (tcd.projection, tcd.t_pre) == ("round", 4 if name == "ml-100k" else 1)
    cells = plan_cells(cfg)
    # 2 datasets × 3 seeds × 2 target kinds × (Origin + 5 attacks × 4 defenses)
    assert len(cells) == 252
    commands = header_commands("tcd_paper_protocol.yaml")
    assert len(commands) == 6 and commands[0] == []
    # the files: FilmTrust only; K 40; the authors' FilmTrust "random" list: one kind, 21
    # cells; the last epoch (Table 3 as the authors' code measures it); T_pre as the flag
    for args, n_cells in zip(commands[1:], (126, 252, 63, 252, 252)):
        other = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", args)
        assert len(plan_cells(other)) == n_cells and other.experiment != cfg.experiment
    files = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", commands[1])
    ft = for_dataset(files, "filmtrust").dataset
    assert ft.split_files.train.endswith("filmtrust.train.rating")
    assert (ft.max_rating, ft.rating_steps) == (8, 8)
    assert not for_dataset(files, "ml-100k").dataset.split_files.train
    listed = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", commands[3])
    assert (listed.targets.kind, listed.targets.id_space) == ("list", "index")
    assert listed.targets.items == [539, 117, 1600, 1326, 208]
    assert load_config(REPO / "configs" / "tcd_paper_protocol.yaml",
                       commands[4]).evaluation.select_on == "last"
    flag = load_config(REPO / "configs" / "tcd_paper_protocol.yaml", commands[5])
    assert flag.evaluation.select_on == "last"
    for name, t_pre in (("ml-100k", 5), ("filmtrust", 2)):
        options = for_dataset(flag, name).defense.options["tcd"]
        assert DEFENSES["tcd"].parse_options(options).t_pre == t_pre


def test_deviation_preset_switches_one_choice_at_a_time():
    path = REPO / "configs" / "tcd_protocol_deviation.yaml"
    ours = load_config(path)
    cells = plan_cells(ours)
    variants = {(c.defense, c.defense_params) for c in cells}
    assert variants == {("none", ()), ("at", (("eps", 0.03),)), ("at", (("eps", 0.05),)),
                        ("rat", (("eps", 0.03),)), ("rat", (("eps", 0.05),)),
                        ("tcd", (("projection", "clip"),)), ("tcd", (("projection", "round"),))}
    assert len(cells) == 216 and ours.dataset.name == "ml-100k"
    commands = header_commands("tcd_protocol_deviation.yaml")
    assert len(commands) == 4 and commands[0] == []
    switched = {}
    for args in commands[1:]:
        cfg = load_config(path, args)
        assert len(plan_cells(cfg)) == 126
        diff = {k for k in ("split.test_item", "evaluation.select_on", "model.optimizer",
                            "model.lr", "model.reg")
                if _get(cfg, k) != _get(ours, k)}
        switched[cfg.experiment] = diff
        assert cfg.defense.options == {"at": {"eps": 0.03}, "rat": {"eps": 0.03},
                                       "tcd": {"t_pre": 4, "pseudo_rate": 1.0,
                                               "projection": "clip"}}
    assert switched == {"tcd_protocol_deviation_test_item": {"split.test_item"},
                        "tcd_protocol_deviation_select_on": {"evaluation.select_on"},
                        "tcd_protocol_deviation_optimizer": {"model.optimizer", "model.lr",
                                                             "model.reg"}}


def _get(cfg, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)
