"""The device script of issue 23 (bench/device_profile.sh -> bench/bench_profile.py) end to end in its CPU smoke
mode: training, the profile runs through ``evaluate_loaded`` under two configurations, the per-stage figures
(every AutoAttack stage, HO-FMN tuning, HO-FMN), the bare rates, the projection, the agreement and its pooling
over sessions, and the profiler pass. The figures are a CPU's and meaningless; the test checks their plumbing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def synthetic_npz(path: Path) -> Path:
    """The shape of ../shared/data/cifar10-real-subset.npz with random images (the smoke needs no real ones)."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8), y_train=rng.integers(0, 10, 64),
             x_test=rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8), y_test=rng.integers(0, 10, 16))
    return path


@pytest.mark.slow
def test_the_device_profile_script_runs_end_to_end_in_its_cpu_smoke_mode(tmp_path):
    npz = synthetic_npz(tmp_path / "subset.npz")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DEVICE_WINDOW_S": "600"}
    done = subprocess.run(["bash", "bench/device_profile.sh", str(npz), "--cpu-smoke", "--configs", "strict,tf32+cl"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"device_profile.log", "bench_profile.json", "bench_profile_tables.txt",
                                               "agreement.npz", "model-part-0.npz"}
    report = json.loads((out / "bench_profile.json").read_text())
    strict, wrapped = report["runs"]
    assert (strict["config"], wrapped["config"], strict["n"]) == ("strict", "tf32+cl", 4)
    stages = strict["stages"]
    assert list(stages) == ["clean", "aa/apgd-ce", "aa/apgd-t", "aa/fab-t", "aa/square", "hofmn_tuning", "hofmn"]
    assert stages["aa/apgd-ce"]["grad_rows"] > 0 and stages["aa/square"]["forward_rows"] > 0
    assert stages["aa/square"]["grad_rows"] == 0  # Square queries the forward only
    # the robust count after the last stage is the record's; it never grows from stage to stage
    after = [stages[s]["robust_after"] for s in ("clean", "aa/apgd-ce", "aa/apgd-t", "aa/fab-t", "aa/square")]
    assert after == sorted(after, reverse=True) and after[-1] == strict["aa_robust"] > 0
    projected = report["projection"]["strict"]
    assert projected["seconds"] > 0 and set(projected["stages"]) == set(stages)
    assert projected["stages"]["aa/apgd-ce"]["scale"] == 10_000 / 4 and projected["stages"]["hofmn_tuning"]["scale"] == 1
    # on a CPU the TF32 flags change nothing and channels_last the last bits at most: the same results
    agreement = report["agreement"]["tf32+cl"]
    assert agreement["flags_differ"] == 0 and agreement["verdict"].startswith("too few points")
    assert set(report["profiler"]["stages"]) >= {"aa/apgd-ce", "hofmn"}
    # two sessions' points pooled: overlapping points are refused, disjoint ones give one verdict
    other = tmp_path / "other"
    other.mkdir()
    with np.load(out / "agreement.npz") as data:
        arrays = {k: data[k] + 4 if k.endswith("sample_index") else data[k] for k in data.files}
    np.savez(other / "agreement.npz", **arrays)
    combine = [sys.executable, "bench/bench_profile.py", "--agreement-min", "8", "--combine", str(out)]
    pooled = subprocess.run(combine + [str(other)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert pooled.returncode == 0, pooled.stderr
    assert json.loads(pooled.stdout.split(": ", 1)[1])["n"] == 8 and '"verdict": "pass"' in pooled.stdout
    overlapping = subprocess.run(combine + [str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert overlapping.returncode != 0 and "overlap" in overlapping.stderr
