"""A run killed with SIGKILL during HO-FMN (after AutoAttack and the tuning) and started again ends with the
per-sample results and record of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluator.record.records import PerSample
from evaluator.protocol import load_protocol
from tests.support.evaluation import (MODEL_KEY, TINY_PROTOCOL, comparable, one_torch_thread, run_tiny,  # noqa: F401
                                      write_tiny_protocol, write_tiny_test_set)

REPO = Path(__file__).resolve().parents[1]
RECORD = f"{MODEL_KEY}__{TINY_PROTOCOL}"


def start(base: Path, protocol: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.evaluation", str(base), str(protocol)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, ready: Path, timeout: float = 120) -> None:
    """SIGKILL the process as soon as ``ready`` exists; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {ready.name} was written: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{ready} never appeared")
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-3000:]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    protocol = write_tiny_protocol(tmp_path / "protocols")  # 12 samples in 6 chunks
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for base in (reference, resumed):
        write_tiny_test_set(base / "data")

    killed = start(resumed, protocol)
    kill_when(killed, resumed / "work" / "hofmn" / "chunk-00000.npz")
    assert (resumed / "work" / "autoattack" / "chunk-00005.npz").exists()  # AutoAttack had finished
    assert not (resumed / "work" / "hofmn" / "chunk-00005.npz").exists()  # HO-FMN had not
    assert not (resumed / "out").exists()
    tuning = (resumed / "work" / "tuning.json").read_bytes()
    finish(start(resumed, protocol))
    run_tiny(reference, load_protocol(protocol))  # uninterrupted, in this process (one torch thread too)

    assert (resumed / "work" / "tuning.json").read_bytes() == tuning  # the second run reused the tuning
    a = PerSample.load(reference / "out" / f"{RECORD}.npz")
    b = PerSample.load(resumed / "out" / f"{RECORD}.npz")
    for name in ("sample_index", "clean_correct", "aa_robust", "hofmn_distance"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert (reference / "out" / f"{RECORD}.npz").read_bytes() == (resumed / "out" / f"{RECORD}.npz").read_bytes()
    record_a = json.loads((reference / "out" / f"{RECORD}.json").read_text())
    record_b = json.loads((resumed / "out" / f"{RECORD}.json").read_text())
    assert comparable(record_a) == comparable(record_b)
    assert record_a["n_samples"] == 12 and record_a["counts"]["clean_correct"] == 9  # every 4th is wrong
