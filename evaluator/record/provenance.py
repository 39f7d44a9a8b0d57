"""Where a result comes from: evaluator version and commit, package versions, device, numerics backend, date,
wall time per stage.

The numerics backend is fixed, not left to torch's defaults, so that no leaderboard number depends on an
unrecorded choice: ``fixed_backend`` sets it for the duration of an evaluation and ``backend_facts`` (part of
``environment``) records it. TF32 is off for matrix products and convolutions (full float32, as on CPU:
TF32 rounds inputs to 10 mantissa bits and would move attack results near the decision boundary); cuDNN
autotuning is off (it picks algorithms by timing, so two runs could compute with different algorithms) and
cuDNN is deterministic (the same inputs give the same bits, so a resumed or re-run chunk and the official
AutoAttack call agree per sample). No mixed precision is used anywhere."""
from __future__ import annotations

import datetime as _dt
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class BackendSettings:
    """The torch numerics flags an evaluation runs under (module docstring says why these values)."""

    tf32_matmul: bool = False
    tf32_cudnn: bool = False
    cudnn_benchmark: bool = False
    cudnn_deterministic: bool = True


BACKEND = BackendSettings()


def _current_backend() -> BackendSettings:
    import torch

    return BackendSettings(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                           torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)


def _apply_backend(settings: BackendSettings) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = settings.tf32_matmul
    torch.backends.cudnn.allow_tf32 = settings.tf32_cudnn
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    torch.backends.cudnn.deterministic = settings.cudnn_deterministic


@contextmanager
def fixed_backend(settings: BackendSettings = BACKEND) -> Iterator[BackendSettings]:
    """Run with ``settings`` (default: the evaluation's ``BACKEND``); the previous flags come back on exit."""
    previous = _current_backend()
    _apply_backend(settings)
    try:
        yield settings
    finally:
        _apply_backend(previous)


def backend_facts(device: str) -> dict:
    """The numerics an evaluation ran under: the fixed flags, and the CUDA and cuDNN versions on a GPU."""
    import torch

    facts: dict = asdict(BACKEND)
    if str(device).startswith("cuda"):
        facts.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
    return facts


def environment(device: str) -> dict:
    """The static part of a result's provenance (no times)."""
    return {"evaluator_version": __version__, "git_commit": git_commit(), "packages": package_versions(),
            "device": device_name(device), "backend": backend_facts(device)}


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
