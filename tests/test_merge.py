"""Three shards merged give exactly the record and per-sample arrays of one run; merge refuses shards that do
not belong together, overlap or leave chunks out."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evaluator.cli import main
from evaluator.errors import APBError
from evaluator.protocol import load_protocol
from evaluator.record.records import PerSample
from evaluator.untrusted.safeio import dump_json, sha256_file
from evaluator.run.shards import Shard, merge_shards, read_shard
from tests.support.evaluation import (MODEL_KEY, TINY_PROTOCOL, comparable, one_torch_thread, run_tiny,  # noqa: F401
                                      write_tiny_protocol, write_tiny_test_set)

RECORD = f"{MODEL_KEY}__{TINY_PROTOCOL}"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One full run and three shards (each with its own work dir), of the tiny CNN under a 6-chunk protocol."""
    base = tmp_path_factory.mktemp("merge")
    protocol = load_protocol(write_tiny_protocol(base / "protocols"))
    write_tiny_test_set(base / "data")
    single = run_tiny(base, protocol, work="work-single", out="single")
    shards = [run_tiny(base, protocol, work=f"work-{i}", out="shards", shard=Shard(i, 3)).path for i in (1, 2, 3)]
    return base, protocol, single, shards


def test_three_shards_merge_into_the_single_run(evaluated, tmp_path):
    base, protocol, single, shards = evaluated
    assert [read_shard(path).chunks for path in shards] == [[0, 3], [1, 4], [2, 5]]
    merged = merge_shards(shards, tmp_path, protocol=protocol)
    one = PerSample.load(base / "single" / f"{RECORD}.npz")
    joined = PerSample.load(tmp_path / f"{RECORD}.npz")
    for name in ("sample_index", "clean_correct", "aa_robust", "hofmn_distance"):
        assert getattr(one, name).tobytes() == getattr(joined, name).tobytes(), name
    assert sha256_file(tmp_path / f"{RECORD}.npz") == sha256_file(base / "single" / f"{RECORD}.npz")
    record = json.loads(merged.read_text())
    assert comparable(record) == comparable(single.record)
    assert record["provenance"]["wall_time_s"]["autoattack"] > 0


def test_apb_merge_command(evaluated, tmp_path, capsys):
    _, protocol, single, shards = evaluated
    code = main(["merge", *map(str, reversed(shards)), "--out", str(tmp_path), "--protocol", str(protocol.path)])
    assert code == 0, capsys.readouterr().err
    assert "merged 3 shards" in capsys.readouterr().out
    assert comparable(json.loads((tmp_path / f"{RECORD}.json").read_text())) == comparable(single.record)


def test_merge_refuses_missing_and_overlapping_shards(evaluated, tmp_path):
    _, protocol, _, shards = evaluated
    with pytest.raises(APBError, match=r"chunks 1, 4 are in no given shard"):
        merge_shards([shards[0], shards[2]], tmp_path, protocol=protocol)
    with pytest.raises(APBError, match="overlap"):
        merge_shards([shards[0], shards[1], shards[2], shards[0]], tmp_path, protocol=protocol)
    assert not list(tmp_path.iterdir())  # nothing written


def _altered_copy(shard: Path, folder: Path, **changes) -> Path:
    copy = folder / shard.name
    shutil.copytree(shard, copy)
    facts = json.loads((copy / "shard.json").read_text())
    facts.update(changes)
    (copy / "shard.json").write_bytes(dump_json(facts))
    return copy


def test_merge_refuses_shards_of_another_model_or_checkpoint(evaluated, tmp_path):
    _, protocol, _, shards = evaluated
    other_model = _altered_copy(shards[1], tmp_path / "a", model_key="Tiny_Doe2024Tiny_R18_CIFAR10_US_95")
    with pytest.raises(APBError, match="model_key: belongs to another evaluation"):
        merge_shards([shards[0], other_model, shards[2]], tmp_path / "out", protocol=protocol)
    other_checkpoint = _altered_copy(shards[1], tmp_path / "b", checkpoint_sha256="cd" * 32)
    with pytest.raises(APBError, match="checkpoint_sha256: belongs to another evaluation"):
        merge_shards([shards[0], other_checkpoint, shards[2]], tmp_path / "out", protocol=protocol)


def test_merge_refuses_a_damaged_sidecar_and_a_non_shard(evaluated, tmp_path):
    _, protocol, _, shards = evaluated
    damaged = tmp_path / "damaged" / shards[0].name
    shutil.copytree(shards[0], damaged)
    (damaged / "per_sample.npz").write_bytes(b"not the sidecar")
    with pytest.raises(APBError, match="sha256 differs"):
        merge_shards([damaged, shards[1], shards[2]], tmp_path / "out", protocol=protocol)
    with pytest.raises(APBError, match="not a shard output"):
        merge_shards([tmp_path], tmp_path / "out", protocol=protocol)


def test_merge_refuses_a_changed_protocol_file(evaluated, tmp_path):
    _, protocol, _, shards = evaluated
    changed = tmp_path / f"{TINY_PROTOCOL}.yaml"
    changed.write_text(protocol.path.read_text().replace("steps: 20", "steps: 21"))
    with pytest.raises(APBError, match="differs from the protocol the shards ran with"):
        merge_shards(shards, tmp_path / "out", protocol=load_protocol(changed))
