"""``apb merge`` and ``apb ci collect`` run where torch is not installed (the CI's collect job has no torch):
each command runs in a subprocess whose ``torch`` and ``torchvision`` fail to import, on real shard outputs
and leg artifacts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.run.shards import merge_shards
from tests.support.ci_records import sha, write_evaluated, write_shard_outputs
from tests.test_ci_report import R18_90, V16_90, leg, leg_dir, plan_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_torch(tmp_path) -> dict[str, str]:
    """An environment whose ``import torch`` and ``import torchvision`` raise ImportError."""
    stubs = tmp_path / "no-torch"
    for name in ("torch", "torchvision"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    path = os.pathsep.join([str(stubs), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def apb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from evaluator.cli import main; sys.exit(main())",
                           *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_stub_really_hides_torch(no_torch):
    result = subprocess.run([sys.executable, "-c", "import torch"], env=no_torch, capture_output=True, text=True)
    assert result.returncode != 0 and "torch is not installed here" in result.stderr


def test_apb_merge_without_torch(no_torch, tmp_path):
    shards = write_shard_outputs(tmp_path / "shards", V16_90, sha("3"), 3)
    result = apb(no_torch, "merge", *map(str, shards), "--out", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr
    assert "merged 3 shards" in result.stdout
    written = tmp_path / "merged" / f"{V16_90}__smoke-v1.json"
    assert json.loads(written.read_text())["checkpoint_sha256"] == sha("3")
    in_process = merge_shards(shards, tmp_path / "in-process")  # the same merge with torch importable
    assert written.read_bytes() == in_process.read_bytes()


def test_apb_ci_collect_without_torch(no_torch, tmp_path):
    legs = [leg(V16_90, "3", f"{i}/2", protocol="smoke-v1") for i in (1, 2)] + [leg(R18_90, "1", protocol="smoke-v1")]
    for item, folder in zip(legs, write_shard_outputs(tmp_path / "shards", V16_90, sha("3"), 2)):
        shutil.copytree(folder, leg_dir(tmp_path / "legs", item) / folder.name)
    write_evaluated(leg_dir(tmp_path / "legs", legs[2]), R18_90, sha("1"), protocol="smoke-v1")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plan_dict(legs, protocol="smoke-v1")))
    result = apb(no_torch, "ci", "collect", "--plan", str(plan), "--legs", str(tmp_path / "legs"),
                 "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    collected = json.loads((tmp_path / "out" / "collect.json").read_text())
    assert collected["missing"] == []
    assert sorted(collected["records"]) == sorted(f"{key}__smoke-v1.json" for key in (R18_90, V16_90))
    merged = json.loads((tmp_path / "out" / "records" / f"{V16_90}__smoke-v1.json").read_text())
    assert merged["checkpoint_sha256"] == sha("3")
