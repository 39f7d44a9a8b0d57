"""A small repository for render and site tests: the real taxonomy, three APs' published CIFAR10 unstructured
records, and evaluated records with real sidecars as `apb evaluate` writes them (synthetic per-sample results)."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from evaluator.registry.model_keys import parse_model_key
from evaluator.paths import records_dir
from evaluator.registry.norms import threat_model
from evaluator.record.records import PerSample, record_stem, summarize, write_record

REPO = Path(__file__).resolve().parents[2]
EPS = 8 / 255
LINF_8 = threat_model("Linf", Fraction(8, 255))
PROTOCOL = "linf-8-255-v1"


THREE_APS = ("HARP_Zhao2023Holistic", "HYDRA_Sehwag2020Hydra", "RADMM_Ye2019Adversarial")


def make_repo(tmp_path: Path, aps=THREE_APS) -> Path:
    """A copy of the repository's taxonomy and of three APs' published CIFAR10 unstructured records."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "taxonomy", root / "taxonomy", ignore=shutil.ignore_patterns("README.md"))
    for ap_key in aps:
        source = REPO / "submissions" / ap_key
        records_dir(root, ap_key).mkdir(parents=True)
        shutil.copy(source / "taxonomy.json", root / "submissions" / ap_key / "taxonomy.json")
        for record in (source / "records").glob(f"{ap_key}_*_CIFAR10_US_*__published-2024.json"):
            shutil.copy(record, records_dir(root, ap_key) / record.name)
    return root


def efficiency(macs: int) -> dict:
    """A ResNet18 unstructured record's efficiency figures with *macs* effective multiply-accumulates."""
    return {"input_shape": [3, 32, 32], "params_total": 11_173_962, "params_nonzero": 1_117_396,
            "macs_dense": 555_422_720, "macs_nonzero": macs, "macs_structured": 555_422_720,
            "structure_kind": "US", "macs_effective": macs}


def add_evaluated(root: Path, model_key: str, *, protocol: str = PROTOCOL, seed: int = 0, n: int | None = None,
                  unbroken: int = 4, scale: float = 0.03, flags: bool = True, efficiency: dict | None = None,
                  date: str = "2025-01-02T03:04:05Z", commit: str = "0123abc",
                  per_sample: PerSample | None = None) -> dict:
    """A real evaluated record and sidecar as `apb evaluate` writes them (synthetic per-sample results, as many
    samples as the protocol evaluates unless *n* says otherwise; a larger *scale* makes a more robust model;
    *per_sample* gives the results instead)."""
    from evaluator.protocol import PROTOCOLS_DIR, load_protocol

    if n is None:
        spec = load_protocol(protocol) if (PROTOCOLS_DIR / f"{protocol}.yaml").is_file() else None
        n = spec.n_samples if spec is not None and spec.evaluable else 300
    if per_sample is None:
        rng = np.random.default_rng(seed)
        distances = rng.exponential(scale, n).astype(np.float32)
        distances[: n // 5] = 0.0
        distances[n - unbroken:] = np.inf
        clean = distances > 0
        per_sample = PerSample(np.arange(n), clean_correct=clean,
                               aa_robust=clean & (distances > EPS * 1.05), hofmn_distance=distances)
    key = parse_model_key(model_key)
    directory = records_dir(root, key.ap_key)
    sha = per_sample.save(directory / f"{record_stem(model_key, protocol)}.npz")
    record = {
        "schema_version": 1, "model_key": model_key, "ap_key": key.ap_key, "architecture": key.architecture,
        "dataset": key.dataset, "structure_kind": key.structure_kind, "sparsity": key.sparsity,
        "source": "evaluated", "protocol": protocol, **summarize(per_sample, LINF_8),
        "checkpoint_sha256": f"{seed:064x}",
        "provenance": {"evaluator_version": "0.1.0", "git_commit": commit, "date": date,
                       "wall_time_s": {"autoattack": 12.5, "total": 20.0}},
        "flags": [{"code": "hofmn-no-adversarial", "message": f"{unbroken} samples without adversarial"}] if flags else [],
        "check": {"ok": True, "sparsity": {"ok": True, "claimed": key.sparsity, "measured": key.sparsity + 0.01,
                                           "layers": [{"name": "conv1", "weights": 1728, "zero_weights": 1555}]},
                  **({"efficiency": efficiency} if efficiency else {})},
        "per_sample": {"file": f"{record_stem(model_key, protocol)}.npz", "sha256": sha},
    }
    write_record(record, directory)
    return record




def flags_result(n: int, robust: int) -> PerSample:
    """Per-sample results where the first *robust* samples resist both attacks and the rest of the first 80% are
    broken at a tenth of the budget (so AutoAttack, HO-FMN and the worst case agree)."""
    clean = np.arange(n) < int(n * 0.8)
    robust_flags = np.arange(n) < robust
    distances = np.where(robust_flags, np.inf, np.where(clean, 0.003, 0.0)).astype(np.float32)
    return PerSample(np.arange(n), clean_correct=clean, aa_robust=robust_flags, hofmn_distance=distances)
