"""Figures of an experiment (matplotlib, Agg backend, PNG under ``results/<exp>/figures/``),
drawn from runs.csv / summary.csv and the per-cell rank shifts (``cells/<key>.npz``). Each figure
is drawn when the grid has the coordinates it needs; ``<block>`` is the dataset (plus model and
feedback when the experiment has several):

- ``rank_shift_<block>.png`` — TCD Fig. 2: distribution of the targets' per-user rank shift
  (rank before − rank after the attack, over eligible (user, target) pairs) per defense, one panel
  per attack setting and target kind (needs the undefended cell and at least one defense);
- ``ri_vs_knowledge_cost_<block>.png`` — TCD Fig. 3: RI of each defense vs knowledge cost
  (needs two costs or more);
- ``target_hr_vs_<defense>_<option>_<block>.png`` — TCD Fig. 4 when ``<defense>_<option>`` is
  ``tcd_pseudo_rate``: target HR vs a swept defense option, with the undefended and Origin
  levels for reference;
- ``target_hr_bars_<block>.png`` — target HR per attack and defense with the cells'
  confidence intervals as error bars (Origin as a line);
- ``attack_hr_vs_knowledge_cost_<block>.png`` — TCD Table 2 as a figure (no defense);
- ``target_hr_vs_attack_size_<block>.png`` — the NDSS comparison (no defense);
- ``robustness_utility_<block>.png`` — one point per defense and target kind: x = its clean
  tail HR@K (top row) or tail share@K (bottom row) as a share of the undefended model's, y = its
  worst-case target HR over the attacks as a share of the undefended worst case, with the
  cells' intervals as bars (divided by the undefended value); the good corner is bottom right,
  and the band left of ``report.tail_floor`` (tail suppression, ‡ in the tables) is shaded
  (needs clean-data cells of the defenses, ``attack: [none, …]``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from utils.atomic import atomic_write, load_npz  # noqa: E402
from experiment.tables import ORIGIN, UNDEFENDED, attack_label  # noqa: E402

DEFENSE_ORDER = ["none", "at", "rat", "tcd", "share", "pamacf", "vat"]
DISPLAY = {"none": "Attack", "at": "AT", "rat": "RAT", "tcd": "TCD", "share": "SHARE",
           "pamacf": "PamaCF", "vat": "VAT"}
BLOCK = ["dataset", "model", "feedback"]


def _variant_label(defense: str, params: str) -> str:
    name = DISPLAY.get(defense, defense)
    return f"{name} ({params})" if params else name


def _variants(frame: pd.DataFrame, with_undefended: bool) -> list[tuple[str, str]]:
    seen = list(dict.fromkeys(frame[["defense", "defense_params"]].itertuples(index=False,
                                                                             name=None)))
    if not with_undefended:
        seen = [v for v in seen if v[0] != UNDEFENDED]
    rank = {d: n for n, d in enumerate(DEFENSE_ORDER)}
    first = {v: n for n, v in enumerate(seen)}
    return sorted(seen, key=lambda v: (rank.get(v[0], len(rank)), first[v]))


def _colors(variants: list[tuple[str, str]]) -> dict:
    cmap = plt.get_cmap("tab10")
    out, n = {}, 0
    for v in variants:
        if v[0] == UNDEFENDED:
            out[v] = "tab:red"
        else:
            out[v] = cmap((n + 1) % 10 if (n + 1) % 10 != 3 else 9)  # skip tab10's red
            n += 1
    return out


def _attack_label(attack: str, size: float, cost: float, params: str, vary=()) -> str:
    text = attack_label(attack, params)
    extra = []
    if "attack_size" not in vary:
        extra.append(f"{100 * size:g}%")
    if "knowledge_cost" not in vary:
        extra.append(f"c={cost:g}")
    return f"{text} [{', '.join(extra)}]" if extra else text


def _save(fig, path: Path) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110, metadata={"Software": None})

    atomic_write(path, write)
    plt.close(fig)
    return path


def _block_suffix(block: tuple, many: bool) -> str:
    parts = [block[0]] + ([block[1], block[2]] if many else [])
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)) for p in parts)


# ----------------------------------------------------------------------------- figures

def rank_shift_figure(runs: pd.DataFrame, cells_dir: Path, kinds: list[str]):
    """TCD Fig. 2 for one block; None without an attack setting with two defenses."""
    attacked = runs[runs.attack != ORIGIN]
    settings = []
    for key, group in attacked.groupby(["attack", "attack_size", "knowledge_cost",
                                        "attack_params"], sort=False):
        variants = _variants(group, with_undefended=True)
        if len(variants) >= 2 and (UNDEFENDED, "") in variants:
            settings.append((key, group, variants))
    if not settings:
        return None
    width = max(len(v) for _, _, v in settings)
    fig, axes = plt.subplots(len(settings), len(kinds), squeeze=False,
                             figsize=(max(3.6, 0.9 * width + 1.6) * len(kinds),
                                      2.9 * len(settings) + 0.4), layout="constrained")
    drawn = False
    for row, (key, group, variants) in enumerate(settings):
        colors = _colors(variants)
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            data, labels, shades = [], [], []
            for variant in variants:
                cells = group[(group.target_kind == kind) & (group.defense == variant[0])
                              & (group.defense_params == variant[1])]["cell"]
                shifts = [arrays["rank_shift"] for cell in cells
                          for arrays in [load_npz(cells_dir / f"{cell}.npz")]
                          if arrays is not None and "rank_shift" in arrays]
                if shifts:
                    data.append(np.concatenate(shifts))
                    labels.append(_variant_label(*variant))
                    shades.append(colors[variant])
            if data:
                drawn = True
                parts = ax.boxplot(data, whis=(5, 95), showfliers=False, showmeans=True,
                                   patch_artist=True, widths=0.6)
                for patch, shade in zip(parts["boxes"], shades):
                    patch.set_facecolor(shade)
                    patch.set_alpha(0.55)
                ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_title(f"{_attack_label(*key)} · {kind} targets", fontsize=9)
            if col == 0:
                ax.set_ylabel("rank shift (before − after)")
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle("Target rank shift under attack (box 25–75%, whiskers 5–95%, ▲ mean)",
                 fontsize=10)
    return fig


def _line_panels(summary: pd.DataFrame, kinds: list[str], rows: list, y_col: str,
                 series, xlabel: str, ylabel: str, title: str, reference=None):
    """Generic small multiples: one panel per (row setting, kind), one line per series."""
    fig, axes = plt.subplots(len(rows), len(kinds), squeeze=False,
                             figsize=(4.2 * len(kinds), 3.0 * len(rows) + 0.4),
                             layout="constrained")
    for r, (row_label, row_filter) in enumerate(rows):
        for c, kind in enumerate(kinds):
            ax = axes[r][c]
            part = row_filter(summary[summary.target_kind == kind])
            for label, select, style in series(part):
                points = select.sort_values("_x") if "_x" in select else select
                points = points[~points[y_col].isna()] if y_col in points else points
                if not len(points):
                    continue
                low, high = (y_col.replace("_mean", "_low"), y_col.replace("_mean", "_high"))
                if y_col.endswith("_mean") and low in points and points[low].notna().any():
                    # The cells' confidence intervals (summary.csv) as error bars.
                    below = (points[y_col] - points[low]).clip(lower=0).fillna(0)
                    above = (points[high] - points[y_col]).clip(lower=0).fillna(0)
                    ax.errorbar(points["_x"], points[y_col], yerr=[below, above], marker="o",
                                capsize=2, label=label, **style)
                else:
                    ax.plot(points["_x"], points[y_col], marker="o", label=label, **style)
            if reference is not None:
                for label, value, style in reference(part):
                    if value is not None and not math.isnan(value):
                        ax.axhline(value, label=label, **style)
            ax.set_title(f"{row_label} · {kind} targets" if row_label else f"{kind} targets",
                         fontsize=9)
            ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel(ylabel)
            if ax.lines:
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def ri_vs_cost_figure(summary: pd.DataFrame, kinds: list[str]):
    attacked = summary[summary.attack != ORIGIN].copy()
    if attacked.knowledge_cost.nunique() < 2 or not _variants(attacked, False):
        return None
    attacked["_x"] = attacked.knowledge_cost
    rows = []
    for key in dict.fromkeys(attacked[["attack", "attack_size", "attack_params"]]
                             .itertuples(index=False, name=None)):
        rows.append((_attack_label(key[0], key[1], 0, key[2], vary=("knowledge_cost",)),
                     lambda f, key=key: f[(f.attack == key[0]) & (f.attack_size == key[1])
                                          & (f.attack_params == key[2])]))
    variants = _variants(attacked, False)
    colors = _colors(variants)

    def series(part):
        for v in variants:
            yield (_variant_label(*v), part[(part.defense == v[0]) & (part.defense_params == v[1])],
                   {"color": colors[v]})

    return _line_panels(attacked, kinds, rows, "ri_of_means", series, "knowledge cost",
                        "RI", "Robustness improvement vs knowledge cost")


def option_sweep_figures(summary: pd.DataFrame, k: int, kinds: list[str]) -> dict:
    """Target HR vs each swept numeric defense option (TCD Fig. 4: tcd pseudo_rate)."""
    y = f"target_hr@{k}_mean"
    out = {}
    if y not in summary:
        return out
    defended = summary[(summary.defense != UNDEFENDED) & (summary.defense_params != "")]
    for defense, group in defended.groupby("defense", sort=False):
        parsed = [dict(part.split("=", 1) for part in text.split(",")) for text in
                  group.defense_params]
        for option in dict.fromkeys(o for p in parsed for o in p):
            values = [_number(p.get(option)) for p in parsed]
            if len({v for v in values if v is not None}) < 2:
                continue
            frame = group.assign(_x=values, _rest=[",".join(f"{o}={v}" for o, v in p.items()
                                                          if o != option) for p in parsed])
            frame = frame[~frame._x.isna()]
            settings = list(dict.fromkeys(frame[["attack", "attack_size", "knowledge_cost",
                                                 "attack_params", "_rest"]]
                                          .itertuples(index=False, name=None)))
            cmap = plt.get_cmap("tab10")
            palette = {s: cmap(n % 10) for n, s in enumerate(settings)}

            def series(part, settings=settings, palette=palette):
                for s in settings:
                    label = (_attack_label(*s[:4]) if s[0] != ORIGIN else "no attack") + (
                        f" {s[4]}" if s[4] else "")
                    yield label, part[(part.attack == s[0]) & (part.attack_size == s[1])
                                      & (part.knowledge_cost == s[2])
                                      & (part.attack_params == s[3]) & (part._rest == s[4])], \
                        {"color": palette[s]}

            def reference(part, settings=settings, palette=palette):
                for s in dict.fromkeys(s[:4] for s in settings):
                    undefended = summary[(summary.target_kind == part.target_kind.iloc[0])
                                         & (summary.dataset == part.dataset.iloc[0])
                                         & (summary.attack == s[0])
                                         & (summary.attack_size == s[1])
                                         & (summary.knowledge_cost == s[2])
                                         & (summary.attack_params == s[3])
                                         & (summary.defense == UNDEFENDED)] if len(part) else []
                    if len(undefended) and s[0] != ORIGIN:
                        shade = next(palette[t] for t in settings if t[:4] == s)
                        yield (f"{s[0]}: no defense", float(undefended[y].iloc[0]),
                               {"color": shade, "ls": "--", "lw": 0.9})
                if len(part):
                    origin = summary[(summary.target_kind == part.target_kind.iloc[0])
                                     & (summary.dataset == part.dataset.iloc[0])
                                     & (summary.attack == ORIGIN)
                                     & (summary.defense == UNDEFENDED)]
                    if len(origin):
                        yield "Origin", float(origin[y].iloc[0]), {"color": "k", "ls": ":"}

            out[f"target_hr_vs_{defense}_{option}"] = _line_panels(
                frame, kinds, [("", lambda f: f)], y, series, option, f"target HR@{k}",
                f"{_variant_label(defense, '')}: target HR@{k} vs {option}", reference)
    return out


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _error_bar(hit: pd.DataFrame, y: str, mean: float) -> tuple[float, float]:
    """The cell's confidence interval as distances below and above its mean (summary.csv's
    ``<y>_low/_high``); ± std where a cell has no interval."""
    if not len(hit) or math.isnan(mean):
        return 0.0, 0.0
    low = float(hit[f"{y}_low"].iloc[0]) if f"{y}_low" in hit else np.nan
    high = float(hit[f"{y}_high"].iloc[0]) if f"{y}_high" in hit else np.nan
    if not (math.isnan(low) or math.isnan(high)):
        return max(mean - low, 0.0), max(high - mean, 0.0)
    std = float(hit[f"{y}_std"].iloc[0])
    return (0.0, 0.0) if math.isnan(std) else (std, std)


def bars_figure(summary: pd.DataFrame, k: int, kinds: list[str]):
    y = f"target_hr@{k}"
    attacked = summary[summary.attack != ORIGIN]
    if attacked.empty or f"{y}_mean" not in summary:
        return None
    settings = list(dict.fromkeys(attacked[["attack", "attack_size", "knowledge_cost",
                                            "attack_params"]].itertuples(index=False,
                                                                         name=None)))
    variants = _variants(attacked, with_undefended=True)
    colors = _colors(variants)
    vary = tuple(c for c in ("attack_size", "knowledge_cost")
                 if attacked[c].nunique() == 1)
    # One panel per target kind, stacked: a wide grid of bars stays readable.
    fig, axes = plt.subplots(len(kinds), 1, squeeze=False, layout="constrained",
                             figsize=(min(16.0, max(6.0, 0.16 * len(settings) * len(variants)
                                                     + 2.5)), 3.4 * len(kinds) + 0.4))
    width = 0.8 / len(variants)
    for c, kind in enumerate(kinds):
        ax = axes[c][0]
        part = summary[summary.target_kind == kind]
        for n, variant in enumerate(variants):
            means, errs = [], [[], []]
            for s in settings:
                hit = part[(part.attack == s[0]) & (part.attack_size == s[1])
                           & (part.knowledge_cost == s[2]) & (part.attack_params == s[3])
                           & (part.defense == variant[0]) & (part.defense_params == variant[1])]
                mean = float(hit[f"{y}_mean"].iloc[0]) if len(hit) else np.nan
                means.append(mean)
                below, above = _error_bar(hit, y, mean)
                errs[0].append(below)
                errs[1].append(above)
            x = np.arange(len(settings)) + (n - (len(variants) - 1) / 2) * width
            ax.bar(x, means, width, yerr=errs if any(errs[0] + errs[1]) else None,
                   label=_variant_label(*variant),
                   color=colors[variant], alpha=0.85, capsize=2)
        origin = part[(part.attack == ORIGIN) & (part.defense == UNDEFENDED)]
        if len(origin):
            ax.axhline(float(origin[f"{y}_mean"].iloc[0]), color="k", ls="--", lw=1,
                       label="Origin")
        ax.set_xticks(range(len(settings)), [_attack_label(*s, vary=vary) for s in settings],
                      rotation=30, ha="right")
        ax.set_title(f"{kind} targets", fontsize=9)
        ax.set_ylabel(f"target HR@{k}")
        ax.legend(fontsize=7, ncol=max(1, (len(variants) + 1) // 4))
    fig.suptitle(f"Target HR@{k} per attack and defense", fontsize=10)
    return fig


def _mean_and_bar(rec: pd.Series, metric: str, scale: float) -> tuple[float, float, float]:
    """A summary row's mean of ``metric`` divided by ``scale`` and the distances to its
    interval's bounds (0 where it has none)."""
    mean = float(rec[f"{metric}_mean"]) / scale
    low, high = (float(rec.get(f"{metric}_{b}", np.nan)) / scale for b in ("low", "high"))
    return mean, (0.0 if math.isnan(low) else max(mean - low, 0.0)), \
        (0.0 if math.isnan(high) else max(high - mean, 0.0))


def robustness_utility_figure(summary: pd.DataFrame, k: int, kinds: list[str],
                              tail_floor: float = 0.5):
    """Worst-case target HR vs clean tail utility, both relative to the undefended model."""
    y = f"target_hr@{k}"
    xs = [f"tail_hr@{k}", f"tail_share@{k}"]
    if any(f"{c}_mean" not in summary for c in [y] + xs):
        return None
    attacked = summary[summary.attack != ORIGIN]
    clean = summary[summary.attack == ORIGIN]
    variants = _variants(summary, with_undefended=True)
    if attacked.empty or len(variants) < 2 or \
            clean[clean.defense != UNDEFENDED].empty:
        return None
    colors = _colors(variants)
    fig, axes = plt.subplots(2, len(kinds), squeeze=False, layout="constrained",
                             figsize=(4.6 * len(kinds) + 1.6, 7.4))
    drawn = False
    for c, kind in enumerate(kinds):
        att, cl = attacked[attacked.target_kind == kind], clean[clean.target_kind == kind]

        def worst(d, p):
            part = att[(att.defense == d) & (att.defense_params == p)].dropna(
                subset=[f"{y}_mean"])
            return None if part.empty else part.loc[part[f"{y}_mean"].idxmax()]

        base_worst = worst(UNDEFENDED, "")
        base_clean = cl[cl.defense == UNDEFENDED]
        if base_worst is None or base_clean.empty or not base_worst[f"{y}_mean"] > 0:
            continue
        for r, x in enumerate(xs):
            ax = axes[r][c]
            x_base = float(base_clean[f"{x}_mean"].iloc[0])
            if not x_base > 0:
                continue
            for variant in variants:
                w = worst(*variant)
                mine = cl[(cl.defense == variant[0]) & (cl.defense_params == variant[1])]
                if w is None or mine.empty or math.isnan(float(mine[f"{x}_mean"].iloc[0])):
                    continue
                xm, xl, xh = _mean_and_bar(mine.iloc[0], x, x_base)
                ym, yl, yh = _mean_and_bar(w, y, float(base_worst[f"{y}_mean"]))
                label = "undefended" if variant[0] == UNDEFENDED else _variant_label(*variant)
                if str(mine.iloc[0].get("tail_suppressed")) == "True":
                    label += " ‡"
                ax.errorbar([xm], [ym], xerr=[[xl], [xh]], yerr=[[yl], [yh]], fmt="o",
                            color=colors[variant], capsize=2, ms=6, label=label)
                ax.annotate(label, (xm, ym), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
                drawn = True
            lo, hi = ax.get_xlim()
            if x.startswith("tail_share"):   # the ‡ rule (report.tail_floor)
                ax.axvspan(min(lo, 0.0) - 0.02, tail_floor, color="0.85", zorder=0,
                           label=f"‡ tail suppressed (< {100 * tail_floor:g} %)")
                ax.legend(fontsize=7)
            ax.axvline(1.0, color="k", lw=0.6, ls=":")
            ax.axhline(1.0, color="k", lw=0.6, ls=":")
            ax.set_xlim(min(lo, 0.0) - 0.02, max(hi, 1.1))
            ax.set_ylim(bottom=min(ax.get_ylim()[0], 0.0))
            ax.annotate("better ↘", xy=(0.97, 0.03), xycoords="axes fraction", ha="right",
                        fontsize=8, color="tab:green")
            name = "tail HR" if x.startswith("tail_hr") else "tail share"
            ax.set_xlabel(f"clean {name}@{k} / undefended")
            ax.set_ylabel(f"worst-case target HR@{k} / undefended worst")
            ax.set_title(f"{kind} targets", fontsize=9)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(f"Robustness vs long-tail utility (worst case over the attacks; K={k})",
                 fontsize=10)
    return fig


def undefended_curve(summary: pd.DataFrame, k: int, kinds: list[str], coord: str):
    """Undefended target HR vs knowledge cost or attack size, one line per attack."""
    y = f"target_hr@{k}_mean"
    attacked = summary[(summary.attack != ORIGIN) & (summary.defense == UNDEFENDED)].copy()
    if attacked[coord].nunique() < 2 or y not in summary:
        return None
    scale = 100.0 if coord == "attack_size" else 1.0
    attacked["_x"] = attacked[coord] * scale
    other = "knowledge_cost" if coord == "attack_size" else "attack_size"
    lines = list(dict.fromkeys(attacked[["attack", other, "attack_params"]]
                               .itertuples(index=False, name=None)))

    def series(part):
        for key in lines:
            size, cost = (key[1], 0) if other == "attack_size" else (0, key[1])
            yield (_attack_label(key[0], size, cost, key[2], vary=(coord,)),
                   part[(part.attack == key[0]) & (part[other] == key[1])
                        & (part.attack_params == key[2])], {})

    def reference(part):
        if len(part):
            origin = summary[(summary.target_kind == part.target_kind.iloc[0])
                             & (summary.dataset == part.dataset.iloc[0])
                             & (summary.attack == ORIGIN) & (summary.defense == UNDEFENDED)]
            if len(origin):
                yield "Origin", float(origin[y].iloc[0]), {"color": "k", "ls": ":"}

    xlabel = "attack size (% of real users)" if coord == "attack_size" else "knowledge cost"
    title = (f"Target HR@{k} vs attack size (no defense)" if coord == "attack_size"
             else f"Attack target HR@{k} vs knowledge cost (no defense)")
    return _line_panels(attacked, kinds, [("", lambda f: f)], y, series, xlabel,
                        f"target HR@{k}", title, reference)


def write_figures(folder: Path, runs: pd.DataFrame, summary: pd.DataFrame, k: int,
                  cells_dir: Path, tail_floor: float = 0.5) -> list[Path]:
    """Draw every figure the results support; stale PNGs of earlier runs are removed."""
    written: list[Path] = []
    if runs.empty or summary.empty:
        blocks = []
    else:
        blocks = list(dict.fromkeys(summary[BLOCK].itertuples(index=False, name=None)))
    many = len({b[1:] for b in blocks}) > 1
    for block in blocks:
        suffix = _block_suffix(block, many)
        in_block = lambda f: f[(f.dataset == block[0]) & (f.model == block[1])  # noqa: E731
                               & (f.feedback == block[2])]
        s, r = in_block(summary), in_block(runs)
        kinds = list(dict.fromkeys(s.target_kind))
        figures = {
            "rank_shift": rank_shift_figure(r, cells_dir, kinds) if "cell" in r else None,
            "ri_vs_knowledge_cost": ri_vs_cost_figure(s, kinds),
            **option_sweep_figures(s, k, kinds),
            "target_hr_bars": bars_figure(s, k, kinds),
            "attack_hr_vs_knowledge_cost": undefended_curve(s, k, kinds, "knowledge_cost"),
            "target_hr_vs_attack_size": undefended_curve(s, k, kinds, "attack_size"),
            "robustness_utility": robustness_utility_figure(s, k, kinds, tail_floor),
        }
        for name, fig in figures.items():
            if fig is not None:
                written.append(_save(fig, folder / f"{name}_{suffix}.png"))
    if folder.is_dir():
        for old in folder.glob("*.png"):
            if old not in written:
                old.unlink()
    return written
