"""Shared helpers of the benchmark scripts: the machine line and a side-by-side table."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> str:
    return (f"{platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"
            f" · torch {torch.__version__} · {torch.get_num_threads()} threads")


def print_table(title: str, rows: list[tuple]) -> None:
    """Rows of (figure, measured, reference/target, verdict)."""
    print(f"\n## {title}\n")
    print("| figure | measured | reference | verdict |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def data_root() -> str | None:
    return os.environ.get("ROBUSTREC_DATA") or (
        str(ROOT.parent / "shared" / "datasets")
        if (ROOT.parent / "shared" / "datasets").is_dir() else None)
