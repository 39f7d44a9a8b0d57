"""``apb import-distances`` on files made exactly as the original benchmark made them (``pickle.dump`` of the
list that ``distances.extend(norms)`` builds from batches of Linf norms: 0-d views into each batch's tensor),
and on pickles that must be refused before anything in them runs."""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.cli import main
from evaluator.errors import APBError
from evaluator.record.import_distances import read_distances
from evaluator.render import render_all
from evaluator.render.curves import robust_accuracy
from evaluator.untrusted.safeio import parse_json_text
from evaluator.repository.record_acceptance import record_problems
from tests.support.leaderboard_repo import make_repo

KEY = "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90"
RECORD = Path("submissions/HYDRA_Sehwag2020Hydra/records") / f"{KEY}__published-2024.json"


def original_distances(seed: int = 0, batches: int = 2, batch_size: int = 64) -> list:
    """What the original's test_model_hofmn pickles: per batch, the Linf norms of adv - x, extended into a list."""
    generator = torch.Generator().manual_seed(seed)
    distances = []
    for _ in range(batches):
        images = torch.rand(batch_size, 3, 32, 32, generator=generator)
        adversarial = (images + torch.rand(batch_size, 1, 1, 1, generator=generator) * 0.1
                       * torch.sign(torch.randn(batch_size, 3, 32, 32, generator=generator)))
        adversarial[:5] = images[:5]  # misclassified clean: distance 0
        norms = (adversarial.cpu() - images.cpu()).flatten(1).norm(torch.inf, dim=1)
        distances.extend(norms)
    return distances


def write_original(path: Path, distances: list) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(distances, handle)
    return path


def test_the_original_format_reads_back_exactly(tmp_path):
    distances = original_distances()
    assert len(distances) == 128 and distances[70].dim() == 0 and distances[70].storage_offset() == 6
    data = write_original(tmp_path / f"{KEY}.pickle", distances).read_bytes()
    assert b"_rebuild_tensor_v2" in data and b"_load_from_bytes" in data  # the format we claim to read
    values = read_distances(data)
    assert values.dtype == np.float32 and np.array_equal(values, torch.stack(distances).numpy())
    assert (values[:5] == 0).all() and (values[64:69] == 0).all()


def test_import_writes_a_marked_sidecar_the_schema_accepts_and_curves_appear(tmp_path, capsys):
    root = make_repo(tmp_path)
    distances = torch.stack(original_distances()).numpy()
    source = write_original(tmp_path / f"{KEY}.pickle", original_distances())
    before = (root / RECORD).read_text()
    assert main(["import-distances", str(source), "--root", str(root)]) == 0
    record = json.loads((root / RECORD).read_text())
    assert record["per_sample"]["kind"] == "distances" and record["per_sample"]["sample_range"] == [0, 128]
    assert record["provenance"]["distances"]["source"] == source.name
    assert record["metrics"] == json.loads(before)["metrics"]  # the published numbers are untouched
    assert record_problems(*parse_json_text((root / RECORD).read_text(), str(RECORD)), str(RECORD)) == []
    with np.load(root / RECORD.parent / record["per_sample"]["file"], allow_pickle=False) as sidecar:
        assert np.array_equal(sidecar["sample_index"], np.arange(128))
        assert np.array_equal(sidecar["hofmn_distance"], distances)
    files = render_all(root)
    curve = files[Path("leaderboard/curves/published-2024/CIFAR10_US_R18_90.svg")].decode()
    accuracy = robust_accuracy(distances, 8 / 255, 1e-6)
    assert f"HYDRA – {100 * float(accuracy):.2f}%" in curve and "samples 0–127" in curve
    assert '<img src="curves/published-2024/CIFAR10_US_R18_90.svg"' in files[Path("leaderboard/README.md")].decode()


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


def storage_with(inner_global: bytes) -> bytes:
    """The original format, with the storage's inner pickle naming *inner_global* (same length, so the outer
    pickle stays well formed) instead of torch.FloatStorage."""
    good = pickle.dumps(original_distances(batches=1, batch_size=2))
    assert len(inner_global) == len(b"torch\nFloatStorage")
    return good.replace(b"ctorch\nFloatStorage\n", b"c" + inner_global + b"\n")


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "inner storage global", "torch.save zip", "not a list"])
def test_malicious_or_foreign_pickles_are_refused_before_anything_runs(tmp_path, kind, capsys):
    root = make_repo(tmp_path)
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    if kind == "os.system":
        data = pickle.dumps([Exploit()])
    elif kind == "builtins.eval":
        data = pickle.dumps([eval, "1"])  # a global the format never has
    elif kind == "inner storage global":
        data = storage_with(b"shutil\ncopyfileobj")
    elif kind == "torch.save zip":
        buffer = io.BytesIO()
        torch.save(original_distances(batches=1, batch_size=4), buffer)
        data = buffer.getvalue()
    else:
        data = pickle.dumps({"distances": 1.0})
    source = tmp_path / f"{KEY}.pickle"
    source.write_bytes(data)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert main(["import-distances", str(source), "--root", str(root)]) == 1
    err = capsys.readouterr().err
    reason = {"os.system": "refused global posix.system", "builtins.eval": "refused global builtins.eval",
              "inner storage global": "refused global shutil.copyfileobj inside a tensor storage",
              "torch.save zip": "a zip file (torch.save)", "not a list": "does not hold a non-empty list"}[kind]
    assert str(source) in err and reason in err, err
    assert not marker.exists()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(APBError):
        read_distances(data)


def test_a_file_without_a_published_record_is_refused(tmp_path, capsys):
    root = make_repo(tmp_path)
    source = write_original(tmp_path / "HYDRA_Sehwag2020Hydra_V16_SVHN_US_90.pickle", original_distances())
    assert main(["import-distances", str(source), "--root", str(root)]) == 1
    assert "no published record" in capsys.readouterr().err


def test_apb_validate_accepts_the_imported_sidecar_and_notices_a_changed_one(tmp_path):
    from evaluator.repository.validate import validate_repository

    root = make_repo(tmp_path)
    before = [str(p) for p in validate_repository(root).problems]  # (the small repository lacks manifests)
    source = write_original(tmp_path / f"{KEY}.pickle", original_distances())
    assert main(["import-distances", str(source), "--root", str(root)]) == 0
    assert [str(p) for p in validate_repository(root).problems] == before
    sidecar = root / RECORD.parent / f"{KEY}__published-2024.npz"
    sidecar.write_bytes(sidecar.read_bytes() + b"x")
    assert any("differs from per_sample.sha256" in str(p) for p in validate_repository(root).problems)
