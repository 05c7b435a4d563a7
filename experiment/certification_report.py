"""The certification part of ``tables.md`` and its figure, built from the per-cell values that
``defense: pore`` stores in ``runs.csv`` (``defenses/pore.py``, ``certificate_columns``):

    pore_cert_precision@K_e{e}, pore_cert_recall@K_e{e}, pore_cert_target_hr@K_e{e},
    pore_cert_max_e@K, pore_cert_max_e_top@K

Three pieces, each a pure function of the runs frame (one row per cell and seed), so the
reporting wires them in with a few lines:

* :func:`certification_tables` — per dataset (and PORE variant): e × certified precision@K,
  recall@K and target-HR@K bound (mean over seeds, ± std when there are several), from the
  clean PORE cells (``attack: none`` in the grid) when there are any, else from the attacked
  ones (then the certificate is about e fake users *more*); and the largest e with a non-zero
  certificate.
* :func:`bound_vs_measured_tables` — per dataset: each attack's measured target HR@K of PORE
  beside the certified bound of the clean PORE cell at e = that attack's number of fake users
  (and the undefended model's target HR for scale).
* :func:`certified_precision_figure` — certified precision@K (and recall@K) against e.

No dependency on the rest of the reporting: pandas and matplotlib only.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

DEFENSE = "pore"
CLEAN = "none"
_COLUMN = re.compile(r"^pore_cert_(precision|recall|target_hr|target_entry)@(\d+)_e(\d+)$")


def cert_columns(runs: pd.DataFrame, k: int) -> dict[int, dict[str, str]]:
    """{e: {"precision"|"recall"|"target_hr": column}} for the certificate columns at K."""
    out: dict[int, dict[str, str]] = {}
    for col in runs.columns:
        m = _COLUMN.match(col)
        if m and int(m.group(2)) == k:
            out.setdefault(int(m.group(3)), {})[m.group(1)] = col
    return dict(sorted(out.items()))


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or mean != mean:
        return "—"
    return f"{mean:.4f}" if n < 2 or std != std else f"{mean:.4f} ± {std:.4f}"


def _pore_rows(runs: pd.DataFrame) -> pd.DataFrame:
    if "defense" not in runs:
        return runs.iloc[0:0]
    return runs[runs["defense"] == DEFENSE]


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as text, missing values as '' (absent column: all '')."""
    if column not in frame:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    col = frame[column].astype(object)
    return col.where(col.notna(), "").astype(str)


def _variants(frame: pd.DataFrame) -> list[tuple]:
    return list(dict.fromkeys(zip(frame["dataset"], _text(frame, "defense_params"))))


def _subset(frame: pd.DataFrame, dataset: str, params: str) -> pd.DataFrame:
    return frame[(frame["dataset"] == dataset) & (_text(frame, "defense_params") == params)]


def certification_tables(runs: pd.DataFrame, k: int) -> list[str]:
    """One Markdown table per dataset (and PORE variant): e × certified precision / recall /
    target-HR bound, then the largest e with a non-zero certificate."""
    pore = _pore_rows(runs)
    columns = cert_columns(pore, k)
    if pore.empty or not columns:
        return []
    out = []
    for dataset, params in _variants(pore):
        rows = _subset(pore, dataset, params)
        clean = rows[rows["attack"] == CLEAN]
        source = clean if len(clean) else rows
        where = ("clean data: the bound at e holds for any e fake users" if len(clean) else
                 "attacked cells: e fake users added to the poisoned data")
        label = f"{dataset}" + (f", pore ({params})" if params else "")
        lines = [f"### Certification — {label} (K = {k}; {where})", "",
                 f"| e | certified precision@{k} | certified recall@{k} | "
                 f"certified target-HR@{k} bound (whole top-{k}) | per-target bound |",
                 "|---|---|---|---|---|"]
        for e, cols in columns.items():
            cells = [_fmt(*_mean_std(source[cols[w]])) if w in cols else "—"
                     for w in ("precision", "recall", "target_hr", "target_entry")]
            if all(c == "—" for c in cells):
                continue
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        for col, what in ((f"pore_cert_max_e@{k}", "a certified test item for some user"),
                          (f"pore_cert_max_e_top@{k}", f"a whole top-{k} certified for some "
                                                        "user (target-HR bound below 1)")):
            if col in source:
                values = pd.to_numeric(source[col], errors="coerce").dropna()
                if len(values):
                    shown = ", ".join(str(int(v)) for v in sorted(set(values)))
                    lines.append("")
                    note = "−1: none even at e = 0" if (values < 0).any() else "per seed"
                    lines.append(f"Largest e with {what}: {shown} ({note}).")
        out.append("\n".join(lines))
    return out


def bound_vs_measured_tables(runs: pd.DataFrame, k: int) -> list[str]:
    """Per dataset: each attack's measured target HR@K under PORE beside the clean PORE cell's
    certified bound at e = that attack's number of fake users (same seed), and the undefended
    target HR@K."""
    pore = _pore_rows(runs)
    hr = f"target_hr@{k}"
    if pore.empty or hr not in pore:
        return []
    out = []
    for dataset, params in _variants(pore):
        rows = _subset(pore, dataset, params)
        clean = rows[rows["attack"] == CLEAN]
        attacked = rows[rows["attack"] != CLEAN]
        if attacked.empty:
            continue
        label = f"{dataset}" + (f", pore ({params})" if params else "")
        lines = [f"### PORE under attack — {label} (K = {k})", "",
                 f"| attack | fake users | measured target HR@{k} (PORE) | certified bound "
                 f"(clean PORE, e = fake users: whole top-{k} / per target) | "
                 f"undefended target HR@{k} |",
                 "|---|---|---|---|---|"]
        keys = ["attack", "attack_params", "attack_size", "knowledge_cost", "target_kind"]
        keys = [c for c in keys if c in attacked]
        for key, group in attacked.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            named = dict(zip(keys, key))
            bounds, entries = [], []
            for _, cell in group.iterrows():
                e = int(cell.get("n_fake", 0) or 0)
                same = clean[(clean["repeat"] == cell["repeat"])] if "repeat" in clean else clean
                if "target_kind" in same:
                    same = same[same["target_kind"] == cell.get("target_kind")]
                for kind, store in (("target_hr", bounds), ("target_entry", entries)):
                    col = f"pore_cert_{kind}@{k}_e{e}"
                    if col in same and len(same):
                        store.append(float(same[col].iloc[0]))
            undef = runs[(runs["dataset"] == dataset) & (runs["defense"] == "none")]
            for c in keys:
                undef = undef[_text(undef, c) == _text(group, c).iloc[0]]
            n_fake = ", ".join(str(int(v)) for v in sorted(set(group.get("n_fake", []))))
            name = named["attack"] + (f" ({named['attack_params']})"
                                      if named.get("attack_params") == named.get("attack_params")
                                      and named.get("attack_params") else "")
            bound = (_fmt(*_mean_std(pd.Series(bounds))) if bounds else "— (no clean PORE cell)")
            if entries:
                bound += f" / {_fmt(*_mean_std(pd.Series(entries)))}"
            lines.append(f"| {name} | {n_fake} | {_fmt(*_mean_std(group[hr]))} | {bound} | "
                         f"{_fmt(*_mean_std(undef[hr])) if hr in undef else '—'} |")
        out.append("\n".join(lines))
    return out


def certified_precision_figure(runs: pd.DataFrame, k: int, path: Path) -> Path | None:
    """Certified precision@K (solid) and recall@K (dashed) against e, one line pair per dataset
    (and PORE variant), from the clean PORE cells when there are any. Returns the PNG path."""
    pore = _pore_rows(runs)
    columns = cert_columns(pore, k)
    if pore.empty or not columns:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n, (dataset, params) in enumerate(_variants(pore)):
        rows = _subset(pore, dataset, params)
        clean = rows[rows["attack"] == CLEAN]
        source = clean if len(clean) else rows
        label = dataset + (f" ({params})" if params else "")
        color = plt.get_cmap("tab10")(n % 10)
        for what, style in (("precision", "-"), ("recall", "--")):
            es = [e for e, c in columns.items() if what in c and c[what] in source]
            ys = [_mean_std(source[columns[e][what]])[0] for e in es]
            if es:
                ax.plot(es, ys, style, marker="o", color=color, label=f"{label}: {what}@{k}")
    ax.set_xlabel("e (fake users added)")
    ax.set_ylabel("certified value")
    ax.set_ylim(bottom=0)
    ax.set_title(f"PORE: certified precision@{k} / recall@{k} vs e")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def certification_section(runs: pd.DataFrame, k: int, figures_dir: Path | None = None) -> str:
    """Everything above as one Markdown section ('' when the grid has no PORE cell)."""
    parts = certification_tables(runs, k) + bound_vs_measured_tables(runs, k)
    if not parts:
        return ""
    text = "## PORE certificate\n\n" + "\n\n".join(parts)
    if figures_dir is not None:
        png = certified_precision_figure(runs, k, Path(figures_dir) / "certified_precision.png")
        if png is not None:
            text += f"\n\n![certified precision vs e]({Path(figures_dir).name}/{png.name})"
    return text + "\n"


__all__ = ["bound_vs_measured_tables", "cert_columns", "certification_section",
           "certification_tables", "certified_precision_figure"]


if __name__ == "__main__":   # python experiment/certification_report.py results/<exp> [K]
    import sys
    folder = Path(sys.argv[1])
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    frame = pd.read_csv(folder / "runs.csv")
    print(certification_section(frame, k, folder / "figures"))
