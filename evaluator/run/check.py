"""Checks of one model before any attack: compliance, output sanity, sparsity (per layer), clean accuracy.

A failed check makes :attr:`CheckReport.ok` False; ``apb check`` exits 1 on it and ``apb evaluate`` stops on it
(``evaluate.CheckFailed`` carries the report). Download and loading errors are raised as ``APBError`` naming the
entry.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from evaluator.checkpoint.compliance import ComplianceReport, check_compliance
from evaluator.record.flags import flag
from evaluator.run.efficiency import efficiency_summary, efficiency_text
from evaluator.run.sparsity import SparsityReport, measure_sparsity, rounded

if TYPE_CHECKING:
    from evaluator.repository.manifest import ModelEntry

CLAIM_TOLERANCE_PP = 1.0  # a claim more than this above the 95% interval of the measured clean accuracy fails
SANITY_IMAGES = 16


# ----------------------------------------------------------------------------------------------- outputs

@dataclass
class SanityReport:
    """Logits of a few test images: shape (n, 10) and finite (both required), and identical on two forward
    passes in eval mode (a model that is not is *randomized*: flagged, since attacks overstate its robustness,
    but not a failure)."""

    shape: list[int]
    expected_shape: list[int]
    finite: bool
    deterministic: bool
    max_abs_difference: float | None

    @property
    def ok(self) -> bool:
        return self.shape == self.expected_shape and self.finite

    @property
    def randomized(self) -> bool:
        return not self.deterministic

    @property
    def message(self) -> str:
        problems = []
        if self.shape != self.expected_shape:
            problems.append(f"logits have shape {tuple(self.shape)}, expected {tuple(self.expected_shape)}")
        if not self.finite:
            problems.append("logits hold NaN or infinite values")
        if self.randomized:
            difference = "" if self.max_abs_difference is None else f"max |difference| {self.max_abs_difference:.3g}"
            problems.append(f"two forward passes in eval mode differ ({difference}): the model is randomized")
        return "; ".join(problems) or f"logits {tuple(self.shape)}, finite, identical on two forward passes"

    def to_dict(self) -> dict:
        difference = None if self.max_abs_difference is None else float(f"{self.max_abs_difference:.6g}")
        return {"ok": self.ok, "shape": self.shape, "expected_shape": self.expected_shape, "finite": self.finite,
                "deterministic": self.deterministic, "randomized": self.randomized,
                "max_abs_difference": difference, "message": self.message}

    def render_text(self) -> str:
        verdict = "FAILED" if not self.ok else "FLAGGED" if self.randomized else "ok"
        return f"outputs     {verdict}: {self.message}"


def check_outputs(model: nn.Module, images: torch.Tensor, num_classes: int) -> SanityReport:
    """Run *model* twice in eval mode on *images* and check the logits (*num_classes* of them per image)."""
    model.eval()
    with torch.inference_mode():
        first, second = model(images), model(images)
    expected = [int(images.shape[0]), num_classes]
    finite = bool(torch.isfinite(first).all() and torch.isfinite(second).all())
    if first.shape != second.shape:
        return SanityReport(list(first.shape), expected, finite, False, None)
    first, second = first.float().nan_to_num(), second.float().nan_to_num()
    difference = float((first - second).abs().max()) if first.numel() else 0.0
    scale = float(first.abs().max()) if first.numel() else 0.0
    deterministic = difference <= 1e-5 * max(1.0, scale)
    return SanityReport(list(first.shape), expected, finite, bool(deterministic), difference)


# ----------------------------------------------------------------------------------------------- accuracy

def clean_predictions(model: nn.Module, test_set: Any, *, batch_size: int = 256, device: str = "cpu",
                      indices: Sequence[int] | torch.Tensor | None = None, progress: bool = True) -> torch.Tensor:
    """Per-sample correctness (bool, in the order of *indices*, default all) of *model* on *test_set*."""
    from tqdm import tqdm

    order = torch.arange(len(test_set)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    correct = torch.zeros(len(order), dtype=torch.bool)
    model.eval()
    with torch.inference_mode(), tqdm(total=len(order), desc="clean accuracy", unit="img", file=sys.stderr,
                                      disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            images, labels = test_set.batch(order[start:start + batch_size])
            predicted = model(images.to(device)).argmax(dim=1).cpu()
            correct[start:start + len(labels)] = predicted == labels
            bar.update(len(labels))
    return correct


def clean_accuracy_gap(correct: int | None, n: int, claimed: float | None, causes: Sequence[str] = ()) -> str | None:
    """A sentence when the measured clean accuracy is below the claim and the claim lies more than
    ``CLAIM_TOLERANCE_PP`` above its 95% interval (a few samples cannot trigger it by chance): the check fails,
    and the sentence lists the likely *causes*, most evident first; None otherwise."""
    from evaluator.record.records import wilson_interval

    if correct is None or not n or claimed is None:
        return None
    measured = 100.0 * correct / n
    high = 100.0 * wilson_interval(correct, n)[1]
    if claimed <= measured or claimed <= high + CLAIM_TOLERANCE_PP:
        return None
    listed = "; ".join(f"({index}) {cause}" for index, cause in enumerate(causes, 1))
    return (f"{measured:.2f}% on {n} samples is {claimed - measured:.1f} points below the claimed {claimed:g}% "
            f"(above the 95% interval, up to {high:.1f}%): the evaluated network is not the author's"
            + (f"; likely causes, most evident first: {listed}" if listed else ""))


def likely_causes(entry: ModelEntry, sparsity: SparsityReport | None) -> list[str]:
    """Why a checkpoint may measure far below its claim, ordered by what the entry and the measurement show:
    a mask rule folds the weights, so masks first; then normalization, variant and dataset."""
    causes: list[tuple[int, str]] = []
    folded = entry.masks not in (None, "none")
    ratios = entry.keep_ratios
    mask_text = ("`masks` / `keep_ratios`: the weights are folded by masks: " + (
        "keep_ratios: uniform keeps the same fraction in every layer, but the author's code may use per-layer "
        "ratios (pass them with `apb prepare --layer-ratios FILE` or export the folded weights)"
        if ratios == "uniform" else "check the rule and the per-layer ratios against the author's code")
        if folded else "`masks`: if the author's network masks its weights at run time (scores, masks), the file "
                       "must hold them and the entry state how they fold")
    causes.append((0 if folded else 2, mask_text))
    norm = ("`normalization`: the entry applies none; if the author's data loader or model normalizes, state its "
            "mean/std" if entry.normalization is None else
            "`normalization`: check the mean/std against the author's data loader (inputs are in [0, 1])")
    causes.append((1, norm))
    causes.append((3 if entry.variant == entry.architecture else 1,
                   f"`variant` ({entry.variant}): check that its layers (pooling, head, BatchNorm) are the author's"))
    causes.append((4, f"`dataset` ({entry.dataset}): check that the checkpoint was trained on it"))
    return [text for _, text in sorted(causes, key=lambda item: item[0])]


# ----------------------------------------------------------------------------------------------- one entry

@dataclass
class CheckReport:
    """Everything ``apb check`` found about one manifest entry."""

    model_key: str
    entry: dict  # the entry's identifying fields (ap_key, architecture, dataset, structure, sparsity, url)
    sha256: str
    sha256_pinned: bool
    compliance: ComplianceReport
    sparsity: SparsityReport | None = None
    sanity: SanityReport | None = None
    n: int = 0
    clean_correct: int | None = None
    claimed: dict | None = None
    test_set_official: bool | None = None
    efficiency: dict | None = None  # evaluator.run.efficiency.efficiency_summary of the loaded model
    causes: list[str] = field(default_factory=list)  # likely causes of a clean accuracy far below the claim
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the checked model, for the attacks

    @property
    def clean_accuracy(self) -> float | None:
        return None if self.clean_correct is None or not self.n else 100.0 * self.clean_correct / self.n

    @property
    def ok(self) -> bool:
        parts = (self.compliance, self.sparsity, self.sanity)
        return (all(part is not None and part.ok for part in parts) and self.clean_correct is not None
                and self.claim_gap() is None)

    def claim_gap(self) -> str | None:
        """The failure sentence of a clean accuracy far below the author's claim (:func:`clean_accuracy_gap`)."""
        return clean_accuracy_gap(self.clean_correct, self.n, (self.claimed or {}).get("clean_accuracy"), self.causes)

    def failures(self) -> list[str]:
        """One line per failed part."""
        failed = []
        if not self.compliance.ok:
            failed.append(f"compliance: {self.compliance.summary()}")
        if self.sparsity is not None and not self.sparsity.ok:
            failed.append(f"sparsity: {self.sparsity.message}")
        if self.sanity is not None and not self.sanity.ok:
            failed.append(f"outputs: {self.sanity.message}")
        gap = self.claim_gap()
        if gap:
            failed.append(f"clean accuracy: {gap}")
        return failed

    def randomized_output(self) -> str | None:
        """The message of the record's ``randomized-output`` flag (flags.yaml), or None when the outputs are
        deterministic."""
        if self.sanity is None or not self.sanity.randomized:
            return None
        detail = self.sanity.message or "the model gave different outputs for the same input"
        return flag("randomized-output", detail=detail)["message"]

    def warnings(self) -> list[str]:
        """Findings that do not fail the check but must be flagged (a randomized model)."""
        return [f"outputs: {self.sanity.message}"] if self.sanity is not None and self.sanity.randomized else []

    def to_dict(self, layers: bool = True) -> dict:
        return {"model_key": self.model_key, "ok": self.ok, "failures": self.failures(), "warnings": self.warnings(),
                "entry": self.entry,
                "checkpoint_sha256": self.sha256, "sha256_pinned": self.sha256_pinned,
                "compliance": self.compliance.to_dict(),
                "sparsity": None if self.sparsity is None else self.sparsity.to_dict(layers),
                "sanity": None if self.sanity is None else self.sanity.to_dict(),
                "clean": {"n": self.n, "correct": self.clean_correct, "accuracy": rounded(self.clean_accuracy),
                          "test_set_official": self.test_set_official},
                "claimed": self.claimed, "efficiency": self.efficiency}

    def render_text(self, layers: bool = True) -> str:
        entry = self.entry
        pin = "pinned in the manifest" if self.sha256_pinned else "NOT pinned (computed now; run apb lock)"
        lines = [f"apb check {self.model_key}",
                 f"model       {entry['architecture']} on {entry['dataset']}, {entry['structure']} sparsity "
                 f"{entry['sparsity']}%",
                 f"checkpoint  sha256 {self.sha256} ({pin})"]
        loading = entry.get("loading")
        if loading:
            rules = ", ".join(f"{name}: {value}" for name, value in loading["key_rules"].items())
            lines.append(f"loading     variant {loading['variant']}; {rules}")
        lines.append(self.compliance.render_text())
        if self.sparsity is not None:
            lines.append(self.sparsity.render_text(layers))
        if self.sanity is not None:
            lines.append(self.sanity.render_text())
        if self.efficiency is not None:
            lines.append(efficiency_text(self.efficiency))
        if self.clean_accuracy is not None:
            claimed = (self.claimed or {}).get("clean_accuracy")
            note = "" if claimed is None else f" (claimed {claimed}% on the full test set)"
            data = "" if self.test_set_official else " [test file is not the official one]"
            lines.append(f"clean acc   {self.clean_accuracy:.2f}% ({self.clean_correct}/{self.n}) on the first "
                         f"{self.n} {entry['dataset']} test samples{note}{data}")
        lines += [f"FLAGGED     {warning}" for warning in self.warnings() if not warning.startswith("outputs:")]
        lines.append("result      PASSED" if self.ok else
                     "result      FAILED\n" + "\n".join(f"    {failure}" for failure in self.failures()))
        return "\n".join(lines)


def check_entry(entry: ModelEntry, *, data_dir: Path, n: int = 10000, device: str = "cpu", batch_size: int = 256,
                cache_dir: Path | None = None, download: bool = False, progress: bool = True) -> CheckReport:
    """Fetch, verify, load and check one manifest entry (no attacks). The test set is read first, so a missing
    data directory fails before a long download."""
    from evaluator.run.datasets import load_test_set
    from evaluator.checkpoint.load import load_state_dict, read_entry

    test_set = load_test_set(entry.dataset, Path(data_dir), n, download=download)
    checkpoint = read_entry(entry, cache_dir=cache_dir, progress=progress)
    return check_loaded(entry, checkpoint.sha256, load_state_dict(checkpoint, entry), test_set, device=device,
                        batch_size=batch_size, progress=progress)


def check_loaded(entry: ModelEntry, sha256: str, state: dict[str, torch.Tensor], test_set: Any, *, device: str = "cpu",
                 batch_size: int = 256, progress: bool = True) -> CheckReport:
    """The checks of ``check_entry`` on a checkpoint and test set the caller has already loaded (``apb evaluate``
    reuses them for the attacks instead of reading them twice). Compliance is computed once and the model built
    once: a report that passed carries the checked model (``report.model``) for the attacks."""
    from evaluator.checkpoint.load import build_checked_model
    from evaluator.repository.manifest import loading_summary

    report = CheckReport(
        model_key=entry.model_key,
        entry={"ap_key": entry.ap_key, "architecture": entry.architecture, "dataset": entry.dataset,
               "structure": entry.structure, "sparsity": entry.sparsity, "url": entry.url,
               "loading": loading_summary(entry)},
        sha256=sha256, sha256_pinned=entry.sha256 is not None,
        compliance=check_compliance(state, entry.variant, entry.classes), n=len(test_set),
        claimed=None if entry.claimed is None else dict(entry.claimed),
        test_set_official=test_set.official)
    if not report.compliance.ok:
        return report
    network = build_checked_model(entry, state, compliance=report.compliance).to(device)
    report.model = network
    report.sparsity = measure_sparsity(network, entry.structure, entry.sparsity)
    report.efficiency = efficiency_summary(network, entry.structure, test_set.batch(slice(0, 1))[0].shape[1:])
    from evaluator.registry.variants import variants

    report.sanity = check_outputs(network, test_set.batch(slice(0, min(SANITY_IMAGES, len(test_set))))[0].to(device),
                                  variants()[entry.variant].outputs(entry.classes))
    report.clean_correct = int(clean_predictions(network, test_set, batch_size=batch_size, device=device,
                                                 progress=progress).sum())
    report.causes = likely_causes(entry, report.sparsity)
    return report


