"""The paper-layout tables of an experiment, built from ``summary.csv``'s rows (one per cell
over seeds): Table 2 (attack target HR@K vs knowledge cost), Table 3 (target HR@K) with its RI
and attack-success-reduction companions, one table per registered metric that names one
(Table 4: test HR@K; test MRR@K), the prediction shift, target HR vs attack size, the worst case
over attacks per defense (threat-model.md §4) and the detection quality of the defenses that
distrust rows or users. Rendering to Markdown and LaTeX is
``experiment/reporting.py``'s; these are plain :class:`Table` values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import pandas as pd

from utils.metrics import LOO, METRICS

ORIGIN = "none"       # attack of the clean data
FILE_ATTACK = "file"  # a poison file (labelled by its stem)
UNDEFENDED = "none"   # plain training (the "Attack" column under an attack)
BASE = ["dataset", "model", "feedback", "target_kind"]
SETTING = BASE + ["attack", "attack_size", "knowledge_cost", "attack_params"]
COORDS = SETTING + ["defense", "defense_params"]
DEFENSE_ORDER = ["none", "at", "rat", "tcd", "share", "pamacf", "vat"]
DISPLAY = {"none": "Attack", "at": "AT", "rat": "RAT", "tcd": "TCD", "share": "SHARE",
           "pamacf": "PamaCF", "vat": "VAT"}


@dataclass
class Value:
    mean: float
    std: float = float("nan")
    n: int = 1
    stars: str = ""
    percent: bool = False
    failed: bool = False   # every seed of the cell failed (see "Failed cells")
    derived: bool = False  # computed from the seeds' means (RI, reduction): no n, no std
    note: str = ""         # shown after the number, e.g. the worst attack's name
    low: float = float("nan")    # confidence interval (utils/uncertainty.py)
    high: float = float("nan")
    mark: str = ""         # "†": differs from the undefended model (Holm-corrected test)
    ineffective: bool = False    # a ratio left out: the attack's gain was not established
    suppressed: bool = False     # "‡": a robustness ratio of a defense that suppresses the tail


@dataclass
class Table:
    title: str
    label_columns: list[str]
    groups: list[str]           # column groups (target kinds)
    columns: list[str]          # leaf columns under every group
    rows: list[list] = field(default_factory=list)   # labels, then Value | None per leaf
    blocks: list[int] = field(default_factory=list)  # row indices that start a new block


def _numeric_label(value: float) -> str:
    return f"{value:g}"


def _defense_variants(summary: pd.DataFrame) -> list[tuple[str, str]]:
    seen = list(dict.fromkeys(
        (d, p) for d, p in summary[["defense", "defense_params"]].itertuples(index=False)
        if d != UNDEFENDED))
    first = {v: n for n, v in enumerate(seen)}
    rank = {d: n for n, d in enumerate(DEFENSE_ORDER)}
    return sorted(seen, key=lambda v: (rank.get(v[0], len(rank)), first[v]))


def _display(defense: str, params: str) -> str:
    name = DISPLAY.get(defense, defense)
    return f"{name} ({params})" if params else name


class _Index:
    """Summary rows by coordinates, with the layout facts the tables share."""

    def __init__(self, summary: pd.DataFrame, k: int, alpha: float = 0.05,
                 dataset_labels: dict | None = None, protocol: str = LOO,
                 test_k: int = 20) -> None:
        self.summary, self.k, self.alpha = summary, k, alpha
        self.protocol, self.test_k = protocol, test_k
        self.dataset_labels = dataset_labels or {}
        self.records = {tuple(r[c] for c in COORDS): r for r in summary.to_dict("records")}
        self.kinds = list(dict.fromkeys(summary.target_kind))
        self.variants = _defense_variants(summary)
        attacked = summary[summary.attack != ORIGIN]
        self.many_models = summary[["model", "feedback"]].drop_duplicates().shape[0] > 1
        self.sizes = list(dict.fromkeys(attacked.attack_size))
        self.costs = list(dict.fromkeys(attacked.knowledge_cost))
        self.n_mode = int(summary["n_runs"].mode().iloc[0]) if len(summary) else 1

    def name(self, dataset: str) -> str:
        """How a dataset is named: ``dataset=file`` by its file's name."""
        return self.dataset_labels.get(dataset, dataset)

    def suppressed(self, base: tuple, defense: str, params: str) -> bool:
        """Whether the defense's clean tail_share@K or coverage@K is below ``report.tail_floor`` of the
        undefended model's (summary.csv ``tail_suppressed``, on its clean-data row)."""
        rec = self.get(base, (ORIGIN, 0.0, 0.0, ""), defense, params)
        return rec is not None and rec.get("tail_suppressed") in (True, "True", "true")

    def get(self, base: tuple, attack: tuple, defense: str, params: str = "") -> dict | None:
        return self.records.get(base + attack + (defense, params))

    def value(self, rec: dict | None, metric: str, with_stars: bool = True) -> Value | None:
        if rec is None:
            return None
        if rec.get("n_runs") == 0 and rec.get("n_failed", 0) > 0:
            return Value(float("nan"), n=0, failed=True)
        if f"{metric}_mean" not in rec:
            return None
        mean = rec[f"{metric}_mean"]
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return None
        mark = rec.get(f"stars_{metric}", "") if with_stars else ""
        p = rec.get(f"p_holm_vs_undefended_{metric}")
        return Value(mean, rec[f"{metric}_std"], int(rec[f"{metric}_n"]),
                     mark if isinstance(mark, str) else "",
                     low=_number(rec.get(f"{metric}_low")),
                     high=_number(rec.get(f"{metric}_high")),
                     mark="†" if with_stars and not _missing(p) and p < self.alpha else "")

    def settings(self, attacked_only: bool = True, vary: tuple = ()) -> list[tuple]:
        """Row keys: (dataset, model, feedback) + (attack, size, cost, params), in order of
        appearance; ``vary`` names the coordinates that become columns instead."""
        frame = self.summary
        if attacked_only:
            frame = frame[frame.attack != ORIGIN]
        cols = ["dataset", "model", "feedback", "attack", "attack_size", "knowledge_cost",
                "attack_params"]
        keep = [c for c in cols if c not in vary]
        return list(dict.fromkeys(tuple(r) for r in frame[keep].itertuples(index=False)))

    def label_columns(self, vary: tuple = ()) -> list[str]:
        labels = ["Dataset"] + (["Model"] if self.many_models else []) + ["Attack"]
        if len(self.sizes) > 1 and "attack_size" not in vary:
            labels.append("Size")
        if len(self.costs) > 1 and "knowledge_cost" not in vary:
            labels.append("Cost")
        return labels

    def labels(self, row: dict, vary: tuple = ()) -> list[str]:
        attack = attack_label(row["attack"], row.get("attack_params"))
        out = [self.name(row["dataset"])]
        if self.many_models:
            out.append(f"{row['model']} ({row['feedback']})")
        out.append(attack)
        if len(self.sizes) > 1 and "attack_size" not in vary:
            out.append("" if row["attack"] == ORIGIN else _numeric_label(row["attack_size"]))
        if len(self.costs) > 1 and "knowledge_cost" not in vary:
            out.append("" if row["attack"] == ORIGIN else _numeric_label(row["knowledge_cost"]))
        return out


def _blocks(keys: list[tuple]) -> list[int]:
    return [n for n in range(len(keys)) if n == 0 or keys[n][:3] != keys[n - 1][:3]]


def _row_dict(key: tuple, vary: tuple = ()) -> dict:
    cols = ["dataset", "model", "feedback", "attack", "attack_size", "knowledge_cost",
            "attack_params"]
    return dict(zip([c for c in cols if c not in vary], key))


def defense_table(ix: _Index, metric: str, title: str, with_clean: bool) -> Table:
    """Rows dataset × attack setting; per target kind: Origin, Attack, each defense."""
    columns = ["Origin", "Attack"] + [_display(*v) for v in ix.variants]
    keys = ix.settings()
    clean = ([key for key in ix.settings(attacked_only=False) if key[3] == ORIGIN]
             if with_clean and ix.variants else [])
    has_clean = {key[:3] for key in clean if any(
        ix.get(key[:3] + (kind,), key[3:], d, p) for kind in ix.kinds for d, p in ix.variants)}
    ordered = []
    for block in dict.fromkeys(key[:3] for key in clean + keys):
        ordered += [key for key in keys if key[:3] == block]
        ordered += [key for key in clean if key[:3] == block and block in has_clean]
    table = Table(title, ix.label_columns(), ix.kinds, columns, blocks=_blocks(ordered))
    for key in ordered:
        row = _row_dict(key)
        cells = list(ix.labels(row))
        for kind in ix.kinds:
            base = key[:3] + (kind,)
            origin = ix.get(base, (ORIGIN, 0.0, 0.0, ""), UNDEFENDED)
            cells.append(ix.value(origin, metric, with_stars=False))
            attacked = key[3] != ORIGIN
            cells.append(ix.value(ix.get(base, key[3:], UNDEFENDED), metric, with_stars=False)
                         if attacked else None)
            cells += [ix.value(ix.get(base, key[3:], d, p), metric) for d, p in ix.variants]
        table.rows.append(cells)
    return table


def relative_table(ix: _Index, column: str, title: str, percent: bool) -> Table | None:
    """RI or success reduction (of the means) per defense, each beside the absolute change of
    the target HR (defense − undefended) with its interval, and a mean row per block. Where
    the attack was not effective (``attack_effective``) the ratio is left out, marked, and not
    counted in the mean row, which says how many it left out."""
    if not ix.variants:
        return None
    keys = ix.settings()
    columns = [_display(*v) for v in ix.variants]
    table = Table(title, ix.label_columns(), ix.kinds, columns)
    change = f"change_target_hr@{ix.k}"
    blocks = list(dict.fromkeys(key[:3] for key in keys))
    for block in blocks:
        table.blocks.append(len(table.rows))
        collected: list[list[float]] = [[] for _ in ix.kinds for _ in ix.variants]
        left_out = [0] * len(collected)
        for key in (key for key in keys if key[:3] == block):
            cells = list(ix.labels(_row_dict(key)))
            n = 0
            for kind in ix.kinds:
                for d, p in ix.variants:
                    rec = ix.get(key[:3] + (kind,), key[3:], d, p)
                    cells.append(_ratio_value(rec, column, change, percent))
                    if cells[-1] is not None:
                        cells[-1].suppressed = ix.suppressed(key[:3] + (kind,), d, p)
                    if cells[-1] is not None and cells[-1].ineffective:
                        left_out[n] += 1
                    elif cells[-1] is not None:
                        collected[n].append(cells[-1].mean)
                    n += 1
            table.rows.append(cells)
        labels = [ix.name(block[0])] + ([f"{block[1]} ({block[2]})"] if ix.many_models
                                        else []) + ["mean"]
        labels += [""] * (len(table.label_columns) - len(labels))
        marks = [ix.suppressed(block + (kind,), d, p) for kind in ix.kinds for d, p in ix.variants]
        table.rows.append(labels + [
            (Value(float(np.mean(v)), percent=percent, derived=True, suppressed=mark,
                   note=f"{len(v)} of {len(v) + out}" if out else "") if v else
             # No attack of the block was effective: nothing to average.
             Value(float("nan"), percent=percent, derived=True, ineffective=True,
                   suppressed=mark, note=f"no effective attack of {out}"))
            if v or out else None
            for v, out, mark in zip(collected, left_out, marks)])
    return table


def _ratio_value(rec: dict | None, column: str, change: str, percent: bool) -> Value | None:
    if rec is None:
        return None
    delta = ""
    if not _missing(rec.get(change)):
        low, high = _number(rec.get(f"{change}_low")), _number(rec.get(f"{change}_high"))
        bounds = "" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]"
        delta = f"Δ {rec[change]:+.4f}{bounds}"
    if rec.get("attack_effective") in (False, None) and "attack_effective" in rec:
        return Value(float("nan"), percent=percent, derived=True, note=delta, ineffective=True)
    value = rec.get(column)
    if _missing(value):
        return None
    return Value(value, percent=percent, derived=True, note=delta)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def sweep_table(ix: _Index, metric: str, coord: str, title: str, fmt) -> Table | None:
    """Undefended target HR with one attack coordinate (cost or size) as columns."""
    values = ix.costs if coord == "knowledge_cost" else ix.sizes
    if len(values) < 2:
        return None
    vary = (coord,)
    keys = ix.settings(vary=vary)
    columns = ["Origin"] + [fmt(v) for v in values]
    table = Table(title, ix.label_columns(vary), ix.kinds, columns, blocks=_blocks(keys))
    for key in keys:
        row = _row_dict(key, vary)
        cells = list(ix.labels(row, vary))
        for kind in ix.kinds:
            base = key[:3] + (kind,)
            cells.append(ix.value(ix.get(base, (ORIGIN, 0.0, 0.0, ""), UNDEFENDED), metric,
                                  with_stars=False))
            for v in values:
                setting = dict(row, **{coord: v})
                attack = (setting["attack"], setting["attack_size"], setting["knowledge_cost"],
                          setting["attack_params"])
                cells.append(ix.value(ix.get(base, attack, UNDEFENDED), metric,
                                      with_stars=False))
        table.rows.append(cells)
    return table


def worst_case_table(ix: _Index, metric: str, title: str) -> Table | None:
    """Per dataset block and defense (the undefended model first): the mean of ``metric`` over
    the block's attack settings and the worst setting (highest mean, named), that worst case as
    a share of the undefended model's worst case (threat-model.md §4), and beside it what the
    defense costs the long tail on clean data: its tail_share@K and tail_hr@K as a share of the
    undefended model's. ‡ marks the worst-case share of a defense that suppresses the tail."""
    keys = ix.settings()
    if not keys:
        return None
    variants = [(UNDEFENDED, "")] + ix.variants
    # Tail HR needs the leave-one-out test item: the ratio split shows the tail share only.
    tail_names = ("tail_share", "tail_hr") if ix.protocol == LOO else ("tail_share",)
    columns = ["mean over attacks", "worst attack: target HR", "worst / undefended worst",
               f"clean tail share@{ix.k} / undefended", f"clean tail HR@{ix.k} / undefended"]
    columns = columns[:3 + len(tail_names)]
    table = Table(title, ["Dataset"] + (["Model"] if ix.many_models else []) + ["Defense"],
                  ix.kinds, columns)
    clean = (ORIGIN, 0.0, 0.0, "")
    for block in dict.fromkeys(key[:3] for key in keys):
        table.blocks.append(len(table.rows))
        settings = [key[3:] for key in keys if key[:3] == block]
        worst_undefended = {}
        for d, p in variants:
            labels = [ix.name(block[0])] + ([f"{block[1]} ({block[2]})"] if ix.many_models
                                            else [])
            cells = labels + ["none (undefended)" if d == UNDEFENDED else _display(d, p)]
            for kind in ix.kinds:
                base = block + (kind,)
                tail = [_clean_share(ix.get(base, clean, d, p), ix.get(base, clean, UNDEFENDED),
                                     f"{name}@{ix.k}") for name in tail_names]
                found = [(ix.get(base, s, d, p), s) for s in settings]
                found = [(rec, s) for rec, s in found
                         if rec is not None and not _missing(rec.get(f"{metric}_mean"))]
                if not found:
                    cells += [None, None, None] + tail
                    continue
                means = [rec[f"{metric}_mean"] for rec, _ in found]
                top = int(np.argmax(means))
                rec, setting = found[top]
                worst = ix.value(rec, metric, with_stars=False)
                # Several attacks at the top (e.g. all at 0): naming the first would single
                # one out that is no worse than the others.
                tied = sum(m == means[top] for m in means)
                worst.note = ("every attack" if tied == len(found) > 1 else
                              _setting_label(setting, ix) + (f" and {tied - 1} more, tied"
                                                             if tied > 1 else ""))
                if d == UNDEFENDED:
                    worst_undefended[kind] = worst.mean
                undefended = worst_undefended.get(kind)
                share = (Value(worst.mean / undefended, percent=True, derived=True,
                               suppressed=ix.suppressed(base, d, p))
                         if undefended and undefended > 0 else None)
                mean = Value(float(np.mean(means)), derived=True,
                             note="" if len(found) == len(settings) else f"{len(found)} attacks")
                cells += [mean, worst, share] + tail
            table.rows.append(cells)
    return table


def _clean_share(mine: dict | None, undefended: dict | None, metric: str) -> Value | None:
    """A defense's clean-data ``metric`` as a share of the undefended model's."""
    if mine is None or undefended is None:
        return None
    a, b = _number(mine.get(f"{metric}_mean")), _number(undefended.get(f"{metric}_mean"))
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return None
    return Value(a / b, percent=True, derived=True)


def utility_table(ix: _Index, title: str, names: tuple = ("hr", "tail_hr", "tail_share",
                                                          "coverage")) -> Table | None:
    """What each defense costs the users, per dataset and target kind: test HR@K, tail_hr@K,
    tail_share@K and coverage@K (``names``; the ratio split: Recall and NDCG at test_k instead
    of the leave-one-out HRs) with their intervals, for Origin, the undefended model under
    each attack ("Attack") and every defense, each defense with Δ, its change from the
    undefended model of the same setting (clean data: Origin), and that change's interval."""
    found = [METRICS[m] for m in names
             if f"{METRICS[m].column(ix.k, ix.test_k)}_mean" in ix.summary]
    if not found or not ix.variants:
        return None
    metrics = [m.column(ix.k, ix.test_k) for m in found]
    columns = [m.title(ix.k, ix.test_k) for m in found]
    every = ix.settings(attacked_only=False)
    # Per block (dataset, model): the clean data first, then the attacks.
    keys = [key for block in dict.fromkeys(key[:3] for key in every)
            for key in sorted((key for key in every if key[:3] == block),
                              key=lambda key: key[3] != ORIGIN)]
    table = Table(title, ix.label_columns() + ["Defense"], ix.kinds, columns)
    previous = None
    for key in keys:
        row = _row_dict(key)
        for d, p in [(UNDEFENDED, "")] + ix.variants:
            found = [ix.get(key[:3] + (kind,), key[3:], d, p) for kind in ix.kinds]
            if not any(found):
                continue
            if key[:3] != previous:
                table.blocks.append(len(table.rows))
                previous = key[:3]
            name = ("Origin" if key[3] == ORIGIN else "Attack") if d == UNDEFENDED else \
                _display(d, p)
            cells = list(ix.labels(row)) + [name]
            for rec in found:
                for m in metrics:
                    value = ix.value(rec, m, with_stars=False)
                    change = f"change_{m}"
                    if value is not None and rec is not None and not _missing(rec.get(change)):
                        low, high = _number(rec.get(f"{change}_low")), \
                            _number(rec.get(f"{change}_high"))
                        bounds = "" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]"
                        value.note = f"Δ {rec[change]:+.4f}{bounds}"
                    cells.append(value)
            table.rows.append(cells)
    return table


def detection_table(ix: _Index, title: str) -> Table | None:
    """Precision, recall and false-positive rate on real users' rows of what each defense that
    distrusts data distrusted (computed by the evaluation side), per attack and on clean data;
    user-level figures where the defense judges whole users."""
    judged = [(d, p) for d, p in ix.variants if any(
        not _missing(rec.get("detect_fpr_mean")) for rec in ix.records.values()
        if rec["defense"] == d and rec["defense_params"] == p)]
    if not judged:
        return None
    user_level = any(not _missing(rec.get("detect_user_fpr_mean"))
                     for rec in ix.records.values())
    metrics = [("detect_precision", "precision"), ("detect_recall", "recall"),
               ("detect_payload_recall", "payload recall"), ("detect_fpr", "FPR (real rows)")]
    if user_level:
        metrics += [("detect_user_precision", "user precision"),
                    ("detect_user_recall", "user recall"),
                    ("detect_user_fpr", "FPR (real users)")]
    keys = ix.settings(attacked_only=False)
    keys = [key for key in keys if key[3] != ORIGIN] + [key for key in keys if key[3] == ORIGIN]
    table = Table(title, ix.label_columns() + ["Defense"], ix.kinds, [m[1] for m in metrics],
                  blocks=_blocks(keys))
    for key in keys:
        row = _row_dict(key)
        for d, p in judged:
            found = [ix.get(key[:3] + (kind,), key[3:], d, p) for kind in ix.kinds]
            if not any(found):
                continue
            cells = list(ix.labels(row)) + [_display(d, p)]
            for rec in found:
                cells += [ix.value(rec, m, with_stars=False) for m, _ in metrics]
            table.rows.append(cells)
    table.blocks = [n for n in range(len(table.rows))
                    if n == 0 or table.rows[n][0] != table.rows[n - 1][0]]
    return table


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def attack_label(attack: str, params: str) -> str:
    """How an attack setting is named in the tables: the attack and its swept options; a poison
    file by its file's stem (``attack: file`` with ``path=/x/fakes.csv`` → ``fakes``)."""
    if attack == ORIGIN:
        return "(no attack)"
    parts = [p for p in str(params or "").split(",") if p]
    if attack == FILE_ATTACK:
        paths = [p for p in parts if p.startswith("path=")]
        if paths:
            attack = PurePath(paths[0][len("path="):]).stem
            parts = [p for p in parts if not p.startswith("path=")]
    return attack + (f" ({','.join(parts)})" if parts else "")


def _setting_label(setting: tuple, ix: _Index) -> str:
    attack, size, cost, params = setting
    text = attack_label(attack, params)
    extra = ([f"{100 * size:g}%"] if len(ix.sizes) > 1 else []) + \
        ([f"c={cost:g}"] if len(ix.costs) > 1 else [])
    return text + (f" ({', '.join(extra)})" if extra else "")


def build_tables(summary: pd.DataFrame, k: int, alpha: float = 0.05,
                 dataset_labels: dict | None = None, protocol: str = LOO,
                 test_k: int = 20) -> list[Table]:
    """The tables of a summary whose runs follow split protocol ``protocol`` (``split.mode``:
    only its metrics get tables; ``test_k`` is the ratio metrics' K)."""
    if summary.empty:
        return []
    ix = _Index(summary, k, alpha, dataset_labels, protocol, test_k)
    thr = f"target_hr@{k}"
    # Each registered metric of the protocol that names a table gets one (Metric.table).
    metric_tables = [defense_table(ix, m.column(k, test_k),
                                   m.table.format(label=m.title(k, test_k), k=m.k_of(k, test_k)),
                                   with_clean=True)
                     for m in METRICS.values() if m.table and m.applies_to(protocol)]
    if protocol == LOO:
        utility = utility_table(ix, f"Utility · test HR@{k}, tail HR@{k}, tail share@{k} and "
                                    f"coverage@{k} (Δ: change from the undefended model of "
                                    "the same setting)")
    else:
        utility = utility_table(ix, f"Utility · Recall@{test_k}, NDCG@{test_k}, tail "
                                    f"share@{k} and coverage@{k} (Δ: change from the "
                                    "undefended model of the same setting)",
                                ("recall", "ndcg_set", "tail_share", "coverage"))
    tables = [
        sweep_table(ix, thr, "knowledge_cost",
                    f"Table 2 · Attack target HR@{k} vs knowledge cost (no defense)",
                    lambda c: f"c={c:g}"),
        defense_table(ix, thr, f"Table 3 · Target HR@{k}", with_clean=True),
        relative_table(ix, "ri_of_means", f"Table 3 · RI (robustness improvement) of the "
                                          f"mean target HR@{k}", percent=False),
        relative_table(ix, "success_reduction_of_means",
                       f"Table 3 · Attack-success reduction of the mean target HR@{k}",
                       percent=True),
        *metric_tables,
        utility,
        defense_table(ix, "prediction_shift", "Prediction shift of the targets", False),
        sweep_table(ix, thr, "attack_size", f"Target HR@{k} vs attack size (no defense)",
                    lambda s: f"{100 * s:g}%"),
        worst_case_table(ix, thr, f"Worst case · Target HR@{k} over the attacks"),
        detection_table(ix, "Detection · what the defenses distrusted, against the fake users"),
    ]
    return [t for t in tables if t is not None and t.rows]
