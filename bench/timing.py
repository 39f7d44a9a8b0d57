"""Side-by-side timing for the bench scripts: interleaved repeats, medians, a one-line machine description."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/<script>.py` from anywhere
    sys.path.insert(0, str(REPO))


def seconds(run: Callable[[], object]) -> float:
    """Wall time of one call."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def interleaved_times(runs: dict[str, Callable[[], object]], repeats: int,
                      warmup: bool = True) -> dict[str, list[float]]:
    """Wall times per named run, one per repeat; the runs alternate so that machine load hits them alike."""
    if warmup:
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(seconds(run))
    return times


def interleaved_seconds(runs: dict[str, Callable[[], object]], repeats: int, warmup: bool = True,
                        summary: Callable[[list[float]], float] = statistics.median) -> dict[str, float]:
    """``interleaved_times`` summarized per run (median unless told)."""
    return {name: summary(values) for name, values in interleaved_times(runs, repeats, warmup).items()}


def paired_ratio(times: dict[str, list[float]], run: str, base: str) -> float:
    """Median over repeats of ``run``'s time over ``base``'s in the same repeat: robust to slow drifts in load."""
    return statistics.median(a / b for a, b in zip(times[run], times[base]))


def machine() -> str:
    """Torch version, thread count, CPU count and load: enough to read a figure in context."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
            f"load {load:.1f}, {platform.processor() or platform.machine()}")
