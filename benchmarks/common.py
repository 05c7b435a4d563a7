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


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1-minute load average: figures measured while it is ≥ 0.5 on a 2-core machine are
    inflated by other processes (compare ratios measured in the same run, or CPU times)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def machine() -> str:
    return (f"{platform.machine()} · {cpu_model()} · {os.cpu_count()} cores · Python "
            f"{platform.python_version()} · torch {torch.__version__} · "
            f"{torch.get_num_threads()} threads · load average {load_average()}")


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
