"""Where a result comes from: evaluator version and commit, package versions, device, date, wall time per stage."""
from __future__ import annotations

import datetime as _dt
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from evaluator import __version__
from evaluator.paths import PACKAGE_DIR

# distribution name -> key in the record
PACKAGES = {"torch": "torch", "torchvision": "torchvision", "pyautoattack": "pyautoattack", "optuna": "optuna",
            "numpy": "numpy"}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None where one is not installed)."""
    versions: dict[str, str | None] = {}
    for distribution, key in PACKAGES.items():
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def git_commit(checkout: Path | None = None) -> str | None:
    """The commit of the evaluator's git checkout, suffixed ``-dirty`` when tracked files changed; None
    when the evaluator is not run from a git checkout (an installed wheel)."""
    checkout = PACKAGE_DIR.parent if checkout is None else checkout
    if not (checkout / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if changed else head


def device_name(device: str) -> str:
    """A readable name of the device a result was computed on, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({_cpu_model()}, {torch.get_num_threads()} threads)" if str(device) == "cpu" else str(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def utc_now() -> str:
    """The current UTC time, to the second: ``2025-01-31T12:00:00Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def environment(device: str) -> dict:
    """The static part of a result's provenance (no times)."""
    return {"evaluator_version": __version__, "git_commit": git_commit(), "packages": package_versions(),
            "device": device_name(device)}


class StageTimer:
    """Wall time per named stage, accumulated over ``with timer.stage(name):`` blocks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
