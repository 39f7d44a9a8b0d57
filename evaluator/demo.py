"""``apb demo``: the whole benchmark, offline, on a small example submission built on the spot.

The demo writes into its output folder a throwaway benchmark repository and runs the real code paths on it:

1. build: three VGG16 checkpoints (``torch.save`` of a state dict) behind ``file://`` URLs with their real
   sha256, the example AP's ``taxonomy.json`` and ``manifest.yaml`` (``evaluator/demo_example/``), the
   taxonomy vocabulary and schema, and a small test set in the real CIFAR-10 format;
2. validate the folder (``file://`` URLs allowed there, never under the benchmark's ``submissions/``);
3. evaluate each model under the ``smoke-v1`` protocol: fetch (``file://``) -> check -> clean -> AutoAttack ->
   HO-FMN -> record;
4. render the leaderboard of the folder (smoke records are shown here only, by asking for that protocol);
5. draw the security curves of the evaluated models.

Everything is seeded: the same seed gives the same checkpoints, data and results. The example models are
not trained (that would take too long on a laptop CPU): each is a VGG16 whose first convolution holds 64
random 3x3 filters, magnitude-pruned to the entry's sparsity; the other convolutions pass those 64 channels
through (one non-zero tap each), BatchNorm is the identity, so the features are the image-wide maxima of the
filter responses (the other convolutions' weights on always-zero channels make up the claimed density and
change nothing); the classifier passes them on and its last layer is a least-squares fit on synthetic
training images. The test images are synthetic too: a faint class-specific 6x6 pattern on a grey
background. The numbers show the pipeline, not a pruning method.
"""
from __future__ import annotations

import io
import shutil
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR
from evaluator.record.records import METRICS, metric_label
from evaluator.record.types import Record

EXAMPLE_DIR = PACKAGE_DIR / "demo_example"
PROTOCOL = "smoke-v1"
FEATURES = 64  # random filters of the first convolution, passed through the network
CLASSES = 10
PATTERN = 6  # side of the class pattern, pixels
TRAIN_IMAGES = 100
TEST_IMAGES = 32
MARKER = ".apb-demo"


@dataclass(frozen=True)
class Example:
    """The example submission the demo built: where it is and its model keys (in manifest order)."""

    root: Path
    ap_key: str
    model_keys: list[str]
    data_dir: Path


# ------------------------------------------------------------------------------------------------ the data


def class_patterns(generator: torch.Generator) -> torch.Tensor:
    """One random 3 x 6 x 6 pattern per class, values in [0, 1]."""
    return torch.rand(CLASSES, 3, PATTERN, PATTERN, generator=generator)


def synthetic_images(count: int, patterns: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uint8 images (N x 3 x 32 x 32) and labels: a grey background with noise in [0.45, 0.55] and
    the class pattern at 30% contrast pasted at a random place; labels cycle through the classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % CLASSES
    images = 0.45 + 0.1 * torch.rand(count, 3, 32, 32, generator=generator)
    corners = torch.randint(0, 32 - PATTERN + 1, (count, 2), generator=generator)
    for i, (row, col) in enumerate(corners.tolist()):
        images[i, :, row:row + PATTERN, col:col + PATTERN] = 0.5 + 0.3 * (patterns[labels[i]] - 0.5)
    return (images * 255).round().to(torch.uint8), labels


# ----------------------------------------------------------------------------------------------- the model


def prune_by_magnitude_(weight: torch.Tensor, sparsity: float) -> None:
    """Zero the ``sparsity`` share (0-1) of ``weight``'s entries with the smallest magnitude, in place."""
    count = round(sparsity * weight.numel())
    if count:
        order = weight.abs().flatten().argsort(stable=True)
        weight.view(-1)[order[:count]] = 0.0


def fill_unused_inputs_(convs: list[nn.Conv2d], sparsity: int) -> None:
    """Give the convolutions as many non-zero weights as *sparsity* leaves (the check compares the measured
    sparsity with the claim in both directions), all on input channels beyond the first ``FEATURES``: those
    channels are always zero, so the weights change no output. Their positions come from a generator of their
    own, so the rest of the example (and its numbers) is what it was without them."""
    generator = torch.Generator().manual_seed(sparsity)
    total = sum(conv.weight.numel() for conv in convs)
    missing = round((1 - sparsity / 100) * total) - sum(int((conv.weight != 0).sum()) for conv in convs)
    for conv in convs[1:]:
        unused = conv.weight[:, FEATURES:]
        count = min(missing, unused.numel())
        if count <= 0:
            continue
        flat = torch.zeros(unused.numel())
        flat[torch.randperm(unused.numel(), generator=generator)[:count]] = 0.01
        conv.weight[:, FEATURES:] = flat.view_as(unused)
        missing -= count


def example_model(architecture: str, sparsity: int, generator: torch.Generator) -> nn.Module:
    """The untrained example VGG16 (module docstring) before its last layer is fitted."""
    from evaluator.registry.variants import build_model

    model = build_model(architecture)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.weight.fill_(1.0)
                module.bias.zero_()
        convs[0].weight.copy_(torch.randn(convs[0].weight.shape, generator=generator) / 27 ** 0.5)
        prune_by_magnitude_(convs[0].weight, sparsity / 100)
        for conv in convs[1:]:
            conv.weight.zero_()
            conv.weight[torch.arange(FEATURES), torch.arange(FEATURES), 1, 1] = 1.0
        fill_unused_inputs_(convs, sparsity)
        positions = linears[0].in_features // convs[-1].out_channels  # the 2 x 2 average pool's cells
        for linear, stride in ((linears[0], positions), (linears[1], 1)):
            linear.weight.zero_()
            linear.bias.zero_()
            linear.weight[torch.arange(FEATURES), torch.arange(FEATURES) * stride] = 1.0
    return model.eval()


def fit_last_layer_(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ridge: float = 1.0) -> None:
    """Least-squares fit (ridge, on standardized features) of the last Linear layer to one-hot labels."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model(images.float() / 255)
    hook.remove()
    features = captured[0][:, :FEATURES].double()
    mean, std = features.mean(0), features.std(0) + 1e-6
    design = torch.cat([(features - mean) / std, torch.ones(len(features), 1, dtype=torch.float64)], 1)
    targets = F.one_hot(labels, CLASSES).double()
    solution = torch.linalg.solve(design.T @ design + ridge * torch.eye(design.shape[1], dtype=torch.float64),
                                  design.T @ targets)
    weight = (solution[:FEATURES] / std[:, None]).T
    with torch.no_grad():
        last.weight.zero_()
        last.weight[:, :FEATURES] = weight.float()
        last.bias.copy_((solution[FEATURES] - weight @ mean).float())


# ------------------------------------------------------------------------------------------ the submission


def _checkpoint_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def build_example(out: Path, *, seed: int = 0, root: Path | None = None) -> Example:
    """Write the example submission (checkpoints, manifest, taxonomy, test set) into ``out``; deterministic."""
    import hashlib

    from evaluator.run.datasets import write_cifar10_test
    from evaluator.registry.model_keys import model_key_maker
    from evaluator.paths import MANIFEST, TAXONOMY, ap_dir, repo_root
    from evaluator.untrusted.safeio import atomic_write_bytes, load_yaml
    from evaluator.repository.taxonomy import SCHEMA_FILE, VOCABULARY_FILE

    out = Path(out).resolve()
    template, _ = load_yaml(EXAMPLE_DIR / MANIFEST)
    ap_key = template["ap_key"]
    generator = torch.Generator().manual_seed(seed)
    patterns = class_patterns(generator)
    train_images, train_labels = synthetic_images(TRAIN_IMAGES, patterns, seed + 1)
    test_images, test_labels = synthetic_images(TEST_IMAGES, patterns, seed + 2)
    data_dir = out / "data"
    write_cifar10_test(data_dir, test_images.permute(0, 2, 3, 1).numpy(), test_labels.tolist())
    fills, model_keys = {}, []
    for model in template["models"]:
        key = model_key_maker(ap_key, model["architecture"], model["dataset"], model["structure"], model["sparsity"])
        network = example_model(model["architecture"], model["sparsity"], generator)
        fit_last_layer_(network, train_images, train_labels)
        data = _checkpoint_bytes(network)
        path = out / "checkpoints" / f"{key}.pt"
        atomic_write_bytes(path, data)
        fills[f"url_{model['sparsity']}"] = path.as_uri()
        fills[f"sha256_{model['sparsity']}"] = hashlib.sha256(data).hexdigest()
        model_keys.append(key)
    submission = ap_dir(out, ap_key)
    manifest = string.Template((EXAMPLE_DIR / MANIFEST).read_text(encoding="utf-8")).substitute(fills)
    atomic_write_bytes(submission / MANIFEST, manifest.encode("utf-8"))
    atomic_write_bytes(submission / TAXONOMY, (EXAMPLE_DIR / TAXONOMY).read_bytes())
    source = Path(root) if root is not None else repo_root()
    for relative in (VOCABULARY_FILE, SCHEMA_FILE):
        if not (source / relative).is_file():
            raise APBError(f"{source / relative} is missing: the demo copies the taxonomy vocabulary and schema "
                           "from the benchmark repository; run it from a checkout", file=str(source / relative))
        atomic_write_bytes(out / relative, (source / relative).read_bytes())
    return Example(out, ap_key, model_keys, data_dir)


# ------------------------------------------------------------------------------------------------ the run


def _say(message: str = "") -> None:
    print(message, flush=True)


def _relative(path: Path) -> str:
    """``path`` relative to the current directory where it lies below it (shorter to print)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _model_line(record: Record) -> str:
    metrics, check = record["metrics"], record["check"] or {}
    sparsity = (check.get("sparsity") or {}).get("message", "")
    flags = ", ".join(flag["code"] for flag in record["flags"]) or "none"
    numbers = ", ".join(f"{metric_label(metric, 'short')} {metrics[metric]:.1f}%" for metric in METRICS
                        if metrics.get(metric) is not None)
    return (f"      {record['model_key']}: check {'PASSED' if check.get('ok') else 'FAILED'} ({sparsity}); "
            f"{numbers}; flags: {flags}")


def run_demo(out: Path = Path("demo-out"), *, models: int | None = None, seed: int = 0, device: str = "cpu",
             progress: bool = True, root: Path | None = None) -> dict[str, Path]:
    """Build the example, validate, evaluate ``models`` of its checkpoints (default all) under smoke-v1,
    render the leaderboard and the security curves; returns the main output files by name."""
    from evaluator.run.evaluate import evaluate_model
    from evaluator.protocol import load_protocol
    from evaluator.paths import manifest_path, records_dir, submissions_dir
    from evaluator.record.records import PerSample, record_stem
    from evaluator.untrusted.safeio import atomic_write_bytes
    from evaluator.render import render_all
    from evaluator.render.layout import LEADERBOARD_README
    from evaluator.render.curves import save_png, security_curve
    from evaluator.repository.validate import validate_paths

    out = Path(out).resolve()
    protocol = load_protocol(PROTOCOL).require_evaluable()
    prepare_output(out)
    _say(f"apb demo: an example submission, checked, evaluated and rendered in {_relative(out)}/")
    example = build_example(out, seed=seed, root=root)
    chosen = example.model_keys[:models] if models else example.model_keys
    _say(f"  [1/5] built {example.ap_key}: {len(example.model_keys)} VGG16 checkpoints behind file:// URLs, "
         f"{TEST_IMAGES} test images in the CIFAR-10 format")
    problems = validate_paths(out, allow_file_urls=True)
    if problems:
        raise APBError(problems)
    _say(f"  [2/5] validated {_relative(submissions_dir(out))}/: no problems")
    _say(f"  [3/5] check and evaluate under protocol {protocol.id} ({protocol.n_samples} samples, "
         f"AutoAttack {protocol.autoattack.version}, HO-FMN {protocol.hofmn.tuning.trials} trials):")
    evaluated_dir = out / "records"
    shown_dir = records_dir(out, example.ap_key)
    distances = {}
    for model_key in chosen:
        outcome = evaluate_model(model_key, protocol=protocol, root=out, data_dir=example.data_dir, device=device,
                                 out_dir=evaluated_dir, cache_dir=out / "cache", progress=progress)
        stem = record_stem(model_key, protocol.id)
        record = outcome.record
        if record is None:
            raise APBError(Problem(model_key, "the evaluation wrote no record"))
        _say(_model_line(record))
        for suffix in (".json", ".npz"):  # the demo's own repository shows its smoke records
            atomic_write_bytes(shown_dir / f"{stem}{suffix}", (evaluated_dir / f"{stem}{suffix}").read_bytes())
        reference = record["per_sample"]
        assert reference is not None  # apb evaluate writes the sidecar with its record
        distances[model_key] = PerSample.load(evaluated_dir / reference["file"]).hofmn_distance
    rendered = render_all(out, protocols=[protocol.id])
    for relative, data in rendered.items():
        atomic_write_bytes(out / relative, data)
    leaderboard = out / LEADERBOARD_README
    _say(f"  [4/5] rendered the leaderboard: {_relative(leaderboard)} ({len(rendered)} files)")
    curve = save_png(security_curve(distances, protocol.threat_model,
                                    title=f"apb demo: HO-FMN security curves ({protocol.id})"),
                     out / "security_curve.png")
    _say(f"  [5/5] drew the security curves: {_relative(curve)}")
    files = {"leaderboard": leaderboard, "security curve": curve, "records": evaluated_dir,
             "manifest": manifest_path(out, example.ap_key),
             "checkpoints": out / "checkpoints", "test set": example.data_dir}
    _say("files:")
    for name, path in files.items():
        _say(f"  {name + ':':<16} {_relative(path)}")
    return files


def prepare_output(out: Path) -> None:
    """Make ``out`` an empty demo folder: create it, or clear what an earlier demo left there. A folder that
    holds other things (no ``.apb-demo`` marker) is refused, so the demo never deletes anything else."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise APBError(f"{out} is not empty and was not made by apb demo; give a new or empty folder with --out",
                       file=str(out))
    if out.exists():
        for item in out.iterdir():
            if item.name != MARKER:
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by apb demo; everything in this folder is rebuilt by the next run\n")


if __name__ == "__main__":  # pragma: no cover
    run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-out"))
