"""`apb demo` end to end in a temporary folder (one of the three example models evaluated), and its guards."""
from __future__ import annotations


import pytest

from evaluator.cli import main
from evaluator.demo import MARKER, build_example, prepare_output
from evaluator.errors import APBError
from evaluator.record.records import PerSample
from evaluator.untrusted.safeio import load_json, sha256_file
from evaluator.repository.record_acceptance import record_problems
from evaluator.repository.validate import validate_paths
from tests.support.evaluation import one_torch_thread  # noqa: F401


@pytest.mark.slow
def test_the_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo-out"
    assert main(["demo", "--out", str(out), "--models", "1"]) == 0
    printed = capsys.readouterr().out
    key = "Demo_Example2025Magnitude_V16_CIFAR10_US_90"
    for line in ("[1/5] built", "[2/5] validated", "[3/5] check and evaluate", "[4/5] rendered the leaderboard",
                 "[5/5] drew the security curves", "check PASSED", str(out / "security_curve.png")):
        assert line in printed, line
    record_path = out / "records" / f"{key}__smoke-v1.json"
    data, lines = load_json(record_path)
    assert record_problems(data, lines, record_path.name) == []
    assert data["protocol"] == "smoke-v1" and data["n_samples"] == 8 and data["check"]["ok"] is True
    manifest = (out / "submissions" / "Demo_Example2025Magnitude" / "manifest.yaml").read_text()
    assert f"sha256: {data['checkpoint_sha256']}" in manifest and "file://" in manifest
    assert data["checkpoint_sha256"] == sha256_file(out / "checkpoints" / f"{key}.pt")
    assert len(PerSample.load(out / "records" / data["per_sample"]["file"])) == 8
    assert (out / "data" / "cifar-10-batches-py" / "test_batch").is_file()
    readme = (out / "leaderboard" / "README.md").read_text()
    assert "smoke-v1" in readme and (out / "leaderboard" / "models" / "Demo_Example2025Magnitude" / f"{key}.md").is_file()
    assert (out / "security_curve.png").read_bytes().startswith(b"\x89PNG")
    # the demo's own repository shows its smoke record, which the benchmark would never accept
    problems = validate_paths(out, allow_file_urls=True)
    assert [p.field for p in problems] == ["protocol"] and "not a leaderboard protocol" in problems[0].message
    # the example is deterministic: building it again gives the same checkpoints and test file
    again = build_example(tmp_path / "again", seed=0)
    assert again.model_keys == [f"Demo_Example2025Magnitude_V16_CIFAR10_US_{s}" for s in (90, 95, 99)]
    for name in [f"checkpoints/{k}.pt" for k in again.model_keys] + ["data/cifar-10-batches-py/test_batch"]:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert validate_paths(tmp_path / "again", allow_file_urls=True) == []
    assert validate_paths(tmp_path / "again") != []  # file:// URLs only with allow_file_urls


def test_the_demo_never_clears_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(APBError, match="not empty and was not made by apb demo"):
        prepare_output(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    made = tmp_path / "demo"
    prepare_output(made)
    (made / "leftover").mkdir()
    prepare_output(made)
    assert [p.name for p in made.iterdir()] == [MARKER]
