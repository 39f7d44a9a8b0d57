"""The original benchmark's Python API, with its names and arguments and fixed semantics.

``from evaluator import load_model, test_model_aa, test_model_hofmn, benchmark, load_distance, plot_sec_curve``.

What is fixed compared with the original code: eps is exactly 8/255 (not 0.031); AutoAttack's results are
per sample and verified, never parsed from its printout; HO-FMN runs on every sample (not 128); a sample for
which HO-FMN finds no adversarial has distance ``inf`` (robust), not 0; accuracies are percentages
everywhere (the original returned a fraction from ``test_model_hofmn``). Every function runs the same
per-chunk stages as ``apb evaluate`` (in memory: nothing is resumed), under a protocol (default
``protocol.DEFAULT_PROTOCOL``); ``n`` evaluates only the first ``n`` samples, which is faster but is then not the
protocol's number.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from evaluator.errors import APBError, Problem
from evaluator.checkpoint.load import load_model
from evaluator.repository.manifest import LOADING_FIELDS
from evaluator.protocol import DEFAULT_PROTOCOL
from evaluator.registry.datasets import dataset_names
from evaluator.registry.model_keys import UNSTRUCTURED
from evaluator.registry.variants import architecture_names
from evaluator.repository.submissions import load_ap_taxonomy
from evaluator.record.types import Record

__all__ = ["load_model", "load_local_model", "load_ap_taxonomy", "test_model_aa", "test_model_hofmn", "benchmark", "load_distance",
           "plot_sec_curve"]

SCHEDULER_ALIASES = {"CALR": "cosine", "cosine": "cosine", "none": "none", None: "none"}


def _protocol(protocol: str, n: int | None, **hofmn: Any) -> Any:
    """The protocol, with its first ``n`` samples only and other HO-FMN settings if asked."""
    from evaluator.protocol import load_protocol

    settings = load_protocol(protocol).require_evaluable()
    if hofmn:
        settings = dataclasses.replace(settings, hofmn=dataclasses.replace(settings.hofmn, **hofmn))
    if n is not None:
        if n < 1:
            raise APBError(Problem("n", f"must be a positive number of samples, got {n}"))
        settings = dataclasses.replace(settings, n_samples=int(n))
    return settings


def _run(model: nn.Module, dataset: str, data_dir: str | Path, device: str, protocol: Any, *, batch_size: int,
         download: bool, progress: bool, stages: tuple[str, ...] | None) -> tuple[Any, Any]:
    from evaluator.run.datasets import load_test_set
    from evaluator.device import checked_device
    from evaluator.run.stages import evaluate_chunks

    device = checked_device(str(device))
    test_set = load_test_set(dataset, Path(data_dir), n=protocol.n_samples, download=download)
    results = evaluate_chunks(model, test_set, protocol, device=str(device), batch_size=batch_size,
                              progress=progress, stages=stages)
    return results, test_set


def load_local_model(path: str | Path, architecture: str | None = None, *, model_key: str | None = None,
                     dataset: str | None = None, structure: str = UNSTRUCTURED, sparsity: int | None = None,
                     root: str | Path | None = None, device: str = "cpu", **loading: Any) -> nn.Module:
    """A checkpoint on disk, loaded the way the evaluator loads a manifest entry: safely (weights-only or
    safetensors), the key rules applied, strictly into the variant, wrapped in its normalization, in eval mode.

    Either give ``model_key`` (the loading fields of that manifest entry are used, the file is *path*) or the
    ``architecture`` (``resnet18`` / ``vgg16``: evaluator/models/variants.yaml), its ``dataset`` (whose class
    count sizes the head; default the first of evaluator/registry/datasets.yaml, CIFAR10) and any manifest
    loading field as a keyword: ``variant``, ``format`` (default: read from the file's first bytes),
    ``state_dict_key``, ``strip_prefix``,
    ``normalization`` ({"mean": [...], "std": [...]}), ``rename_prefixes``, ``normalization_buffers``,
    ``unused_tensors``, ``masks`` (a file holding masks or scores loads only with its rule stated),
    ``keep_ratios``, ``allowed_globals``. ``sparsity`` is needed only for ``masks="popup-scores"``.
    ``apb prepare`` finds these fields for a training checkpoint."""
    import dataclasses

    from evaluator.device import checked_device
    from evaluator.checkpoint.fetch import read_capped
    from evaluator.untrusted.file_kind import sniff_format
    from evaluator.checkpoint.load import build_checked_model, load_state_dict
    from evaluator.run.prepare import draft_entry

    device = checked_device(device)
    path = Path(path)
    data = read_capped(path)
    if model_key is not None:
        from evaluator.repository.submissions import find_entry

        entry = dataclasses.replace(find_entry(model_key, Path(root) if root is not None else None),
                                    url=path.resolve().as_uri())
    else:
        if architecture is None:
            raise APBError(Problem("load_local_model", f"give architecture= ({' or '.join(architecture_names())}) "
                                                       "or model_key="))
        unknown = sorted(set(loading) - set(LOADING_FIELDS))
        if unknown:
            raise APBError(Problem("load_local_model", f"unknown loading field(s) {', '.join(unknown)}; the "
                                                       f"manifest's are {', '.join(LOADING_FIELDS)}"))
        if loading.get("masks") == "popup-scores" and sparsity is None:
            raise APBError(Problem("load_local_model", "masks='popup-scores' needs sparsity= (which share of each "
                                                       "layer's weights the scores prune)"))
        fields = {"format": sniff_format(data) if sniff_format(data) != "unknown" else "torch", **loading}
        entry = draft_entry(path, architecture=architecture, dataset=dataset or dataset_names()[0], structure=structure,
                            sparsity=sparsity if sparsity is not None else 90, **fields)
    return build_checked_model(entry, load_state_dict(data, entry)).to(device).eval()


def test_model_aa(model: nn.Module, dataset: str, data_dir: str | Path, device: str = "cpu", *,
                  n: int | None = None, batch_size: int = 500, download: bool = False,
                  protocol: str = DEFAULT_PROTOCOL, progress: bool = True) -> tuple[float, float]:
    """Clean and AutoAttack robust accuracy (percent) of ``model`` on the first N test samples of ``dataset``."""
    from evaluator.record.records import summarize

    settings = _protocol(protocol, n)
    results, _ = _run(model, dataset, data_dir, device, settings, batch_size=batch_size, download=download,
                      progress=progress, stages=("clean", "autoattack"))
    metrics = summarize(results.per_sample, settings.threat_model)["metrics"]
    return metrics["clean_accuracy"], metrics["aa_robust_accuracy"]


test_model_aa.__test__ = False  # type: ignore[attr-defined]  # a pytest-looking name, not a test


def test_model_hofmn(model: nn.Module, model_key: str, dataset: str, data_dir: str | Path, device: str = "cpu",
                     loss: str = "DLR", optimizer: str = "SGD", scheduler: str | None = "CALR",
                     get_distances: bool = False, save_dist_path: str | Path | None = None, *,
                     n: int | None = None, batch_size: int = 500, download: bool = False,
                     protocol: str = DEFAULT_PROTOCOL, progress: bool = True) -> tuple[float, np.ndarray | None]:
    """HO-FMN robust accuracy (percent) and, with ``get_distances``, the per-sample distances (float32:
    0 = misclassified, inf = no adversarial found). With ``save_dist_path`` the distances are also written
    to ``<save_dist_path>/<model_key>.npy``. ``scheduler``: ``CALR`` (the original name) or ``cosine``, or
    ``none``."""
    from evaluator.record.records import summarize
    from evaluator.untrusted.safeio import atomic_write_bytes

    if scheduler not in SCHEDULER_ALIASES:
        raise APBError(Problem("scheduler", f"unknown scheduler {scheduler!r}; use CALR (cosine) or none"))
    settings = _protocol(protocol, n, loss=loss, optimizer=optimizer, scheduler=SCHEDULER_ALIASES[scheduler])
    results, _ = _run(model, dataset, data_dir, device, settings, batch_size=batch_size, download=download,
                      progress=progress, stages=("clean", "hofmn"))
    distances = results.per_sample.hofmn_distance
    if save_dist_path is not None:
        buffer = io.BytesIO()
        np.save(buffer, distances, allow_pickle=False)
        atomic_write_bytes(Path(save_dist_path) / f"{model_key}.npy", buffer.getvalue())
    rob_acc = summarize(results.per_sample, settings.threat_model)["metrics"]["hofmn_robust_accuracy"]
    return rob_acc, (distances if get_distances else None)


test_model_hofmn.__test__ = False  # type: ignore[attr-defined]


def benchmark(model: nn.Module, model_key: str, data_dir: str | Path, save_dist_path: str | Path | None = None,
              device: str = "cpu", *, n: int | None = None, batch_size: int = 500, download: bool = False,
              protocol: str = DEFAULT_PROTOCOL, progress: bool = True) -> Record:
    """Evaluate a local model like ``apb evaluate`` (clean, AutoAttack, HO-FMN), print the claim-ready summary
    and return the record; with ``save_dist_path`` the record and its per-sample sidecar are written there."""
    from evaluator.record import provenance
    from evaluator.record.assemble import RunFacts, build_record, write_result
    from evaluator.record.flags import flag
    from evaluator.run.evaluate import test_set_facts
    from evaluator.registry.model_keys import parse_model_key
    from evaluator.record.records import read_record

    try:
        key = parse_model_key(model_key)
    except ValueError as error:
        raise APBError(Problem("model_key", f"{error}; make it with model_key_maker(...)")) from None
    settings = _protocol(protocol, n)
    results, test_set = _run(model, key.dataset, data_dir, device, settings, batch_size=batch_size,
                             download=download, progress=progress, stages=None)
    facts = RunFacts(model_key=model_key, checkpoint_sha256=None, environment=provenance.environment(str(device)),
                     date=provenance.utc_now(), test_set=test_set_facts(test_set), ledger=results.ledger,
                     tuning=results.tuning, wall_s={"hofmn_tuning": float(results.tuning.get("wall_s", 0.0))})
    record = build_record(facts, results.per_sample, settings)
    if n is not None and n != _protocol(protocol, None).n_samples:
        record["flags"].append(flag("reduced-samples", n=n, protocol=settings.id,
                                    n_samples=_protocol(protocol, None).n_samples))
    path = None
    if save_dist_path is not None:
        path = write_result(record, results.per_sample, Path(save_dist_path))
        record = read_record(path)
    print(claim_summary(record, path))
    return record


def claim_summary(record: Record, path: Path | None) -> str:
    """The text ``benchmark`` prints: the numbers with their 95% intervals, the flags, what to do next."""
    from evaluator.record.summary import record_numbers

    lines = [f"Results ready for a claim: {record['model_key']} under protocol {record['protocol']} "
             f"({record['n_samples']} samples)"]
    lines += record_numbers(record)
    reference = record["per_sample"]
    if path is not None and reference is not None:
        lines.append(f"  record: {path}")
        lines.append(f"  per-sample results: {path.parent / reference['file']} (sha256 {reference['sha256']})")
    lines.append(f"To submit: put the checkpoint behind a public URL, add it to submissions/{record['ap_key']}/"
                 "manifest.yaml (pin its sha256 with `apb lock`) and open a pull request; the benchmark's CI "
                 "evaluates it again and writes the record.")
    return "\n".join(lines)


def load_distance(model_key: str, root: str | Path | None = None) -> np.ndarray:
    """The HO-FMN per-sample distances of the newest evaluated leaderboard record of ``model_key`` (float32;
    0 = misclassified, inf = no adversarial found), read from its sidecar after checking its sha256."""
    from evaluator.registry.model_keys import parse_model_key
    from evaluator.paths import repo_root
    from evaluator.paths import records_dir
    from evaluator.record.records import read_record
    from evaluator.render.inputs import load_checked_sidecar

    root = Path(root) if root is not None else repo_root()
    folder = records_dir(root, parse_model_key(model_key).ap_key)
    leaderboard = _leaderboard_protocols()
    candidates = []
    for path in sorted(folder.glob(f"{model_key}__*.json")):
        record = read_record(path)
        if (record.get("model_key") == model_key and record.get("source") == "evaluated"
                and record.get("per_sample") and record.get("protocol") in leaderboard):
            candidates.append(((record.get("provenance") or {}).get("date", ""), str(path), path, record))
    if not candidates:
        raise APBError(Problem(str(folder), f"no evaluated leaderboard record of {model_key} with per-sample "
                                            f"results; evaluate it with `apb evaluate {model_key}`"))
    _, _, path, record = max(candidates)
    reference = record["per_sample"]
    assert reference is not None  # every candidate names its sidecar
    sidecar = load_checked_sidecar(path.parent / reference["file"], reference["sha256"], path)
    return sidecar.hofmn_distance


def _leaderboard_protocols() -> set[str]:
    from evaluator.protocol import list_protocols

    return {p.id for p in list_protocols() if p.leaderboard}


def plot_sec_curve(distances: Any, names: Sequence[str], title: str | None = None, save: bool | str | Path = False, *,
                   protocol: str = DEFAULT_PROTOCOL):
    """Security curves (robust accuracy vs the budget of the protocol's threat model, its eps marked) of one
    model or several.

    ``distances``: one model's distances, or a list with one array per name. ``save``: True writes
    ``<title>.png``, a path writes there. Returns the matplotlib figure."""
    from evaluator.render.curves import save_png, security_curve

    threat = _protocol(protocol, None).threat_model
    names = list(names)
    arrays = [distances] if len(names) == 1 and np.ndim(np.asarray(distances, dtype=object)[0]) == 0 else list(distances)
    if len(arrays) != len(names):
        raise APBError(Problem("plot_sec_curve", f"{len(arrays)} distance arrays for {len(names)} names; give one "
                                                 "name per model"))
    figure = security_curve({name: np.asarray(d, dtype=np.float32) for name, d in zip(names, arrays)}, threat,
                            title=title)
    if save:
        save_png(figure, Path(save) if not isinstance(save, bool) else Path(f"{title or 'security_curve'}.png"))
    return figure
