"""A threat model is data: an L2 protocol file (ε = 0.5) written in a temporary protocols folder evaluates a linear
model through the real path (AutoAttack L2, HO-FMN L2), whose record holds L2 distances and robust flags that agree
with them at ε = 0.5, and renders its own tables and curves, in L2 units, apart from the Linf published numbers."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.paths import records_dir
from evaluator.protocol import PROTOCOLS_DIR, PROTOCOLS_DIR_VARIABLE, list_protocols, load_protocol
from evaluator.record.records import PerSample
from evaluator.render import render_all
from evaluator.render.layout import LEADERBOARD_README, curve_file, reevaluation_file
from evaluator.render.tables import DAGGER
from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.run.evaluate import evaluate_loaded
from tests.support.evaluation import one_torch_thread  # noqa: F401  (fixture)
from tests.support.leaderboard_repo import make_repo
from tests.support.tiny_models import exact_distances, linear_classifier

PROTOCOL = "l2-half-test"
MODEL_KEY = "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90"  # an AP of the test repository, with published (Linf) numbers
L2_PROTOCOL = f"""id: {PROTOCOL}
leaderboard: true
description: >-
  L2 robustness at eps = 0.5 on the first 8 test samples: AutoAttack APGD-CE and APGD-T, HO-FMN.

threat_model:
  norm: L2
  eps: "1/2"

n_samples: 8
chunk_size: 4
seed: 0

autoattack:
  version: custom
  attacks: [apgd-ce, apgd-t]
  batch_size: 8

hofmn:
  loss: LL
  optimizer: SGD
  scheduler: cosine
  tuning:
    trials: 2
    startup_trials: 2
    steps: 100
    batch_size: 4
    samples: first-clean-correct
    search_space:
      lr: {{low: 0.02, high: 0.1, log: true}}
      momentum: {{low: 0, high: 0.5}}
  steps: 300
  batch_size: 8

sanity:
  max_aa_only: 0.02
  max_hofmn_only: 0.01
  max_no_adversarial: 0.01
"""


def linear_test_set(folder: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """A linear classifier on 3x32x32 and a CIFAR-10 test file of 8 interior images (the box never binds):
    2 misclassified, 3 whose exact L2 distance is under 0.4 and 3 over 0.6; returns the model and the exact L2
    distances of the 8 samples (0 where misclassified)."""
    model = linear_classifier((3, 32, 32), seed=0)
    images = np.random.default_rng(0).integers(64, 192, (4000, 32, 32, 3), dtype=np.uint8)
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    exact = exact_distances(model, inputs, labels, p=2)
    near, far = torch.nonzero(exact < 0.4).flatten()[:5], torch.nonzero(exact > 0.6).flatten()[:3]
    chosen = torch.cat([near[:2], near[2:], far])
    labels = labels[chosen].clone()
    labels[:2] = (labels[:2] + 1) % 10  # misclassified clean
    write_cifar10_test(folder, images[chosen.numpy()], labels.tolist())
    return model, exact_distances(model, inputs[chosen], labels, p=2)


@pytest.fixture(scope="module")
def l2_repo(tmp_path_factory):
    """The repository, the protocols folder (the shipped files and the L2 one) and the evaluated record."""
    base = tmp_path_factory.mktemp("l2")
    protocols = base / "protocols"
    shutil.copytree(PROTOCOLS_DIR, protocols)
    (protocols / f"{PROTOCOL}.yaml").write_text(L2_PROTOCOL, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROTOCOLS_DIR_VARIABLE, str(protocols))
        root = make_repo(base)
        model, exact = linear_test_set(base / "data")
        protocol = load_protocol(PROTOCOL).require_evaluable()
        outcome = evaluate_loaded(model, load_test_set("CIFAR10", base / "data", n=8), protocol, model_key=MODEL_KEY,
                                  checkpoint_sha256="cd" * 32, work_dir=base / "work",
                                  out_dir=records_dir(root, "HYDRA_Sehwag2020Hydra"), check={"ok": True},
                                  progress=False)
        rendered = render_all(root)
        yield root, protocol, exact, outcome, rendered


def test_the_protocol_folder_is_a_seam_and_the_l2_protocol_reads_its_threat_model(l2_repo):
    _, protocol, _, _, _ = l2_repo
    threat = protocol.threat_model
    assert (threat.norm.name, threat.norm.autoattack, threat.norm.p) == ("L2", "L2", 2.0)
    assert threat.eps_fraction == Fraction(1, 2) and protocol.leaderboard
    assert [label for _, label in threat.curve.ticks()][:3] == ["0", "0.25", "0.5"]
    assert PROTOCOL in {p.id for p in list_protocols()}  # read from $APB_PROTOCOLS_DIR, beside the shipped ones


def test_the_record_holds_l2_distances_and_robust_flags_that_agree_with_them(l2_repo):
    root, protocol, exact, outcome, _ = l2_repo
    record = outcome.record
    assert record["protocol"] == PROTOCOL and record["n_samples"] == 8
    per_sample = PerSample.load(records_dir(root, "HYDRA_Sehwag2020Hydra") / record["per_sample"]["file"])
    distances = torch.from_numpy(per_sample.hofmn_distance)
    assert per_sample.clean_correct.tolist() == [False] * 2 + [True] * 6
    assert (distances[:2] == 0).all()
    relative = distances[2:] / exact[2:] - 1  # HO-FMN finds the minimal L2 distance, never less (Linf's is ~50x less)
    assert relative.min() > -1e-4 and relative.max() < 0.05, relative
    robust = [False] * 5 + [True] * 3  # exact L2 distance under 0.4 or over 0.6, eps = 0.5
    assert per_sample.hofmn_robust(protocol.threat_model).tolist() == robust
    assert per_sample.aa_robust.tolist() == robust  # AutoAttack L2 at 0.5 (Linf at 0.5 would break every sample)
    assert record["counts"] == {"clean_correct": 6, "aa_robust": 3, "hofmn_robust": 3, "worst_case_robust": 3}


def test_the_protocol_renders_its_own_tables_and_curves_in_l2_units_apart_from_published_numbers(l2_repo):
    _, _, _, _, rendered = l2_repo
    readme = rendered[LEADERBOARD_README].decode()
    section = readme.split(f"AutoAttack, protocol `{PROTOCOL}`", 1)[1].split("\n### ", 1)[0]
    assert "HYDRA" in section and "37.50" in section  # its robust accuracy: 3 of 8
    assert DAGGER not in section and "HARP" not in section  # no published (Linf 8/255) number fills an L2 column
    assert reevaluation_file(PROTOCOL) not in rendered  # nor is compared with one
    curve = rendered[curve_file(PROTOCOL, ("CIFAR10", "US"), "resnet18", 90)].decode()
    assert "L2 perturbation budget ε" in curve and "ε = 0.5" in curve
    assert ">0.25<" in curve and ">2<" in curve and "/255" not in curve


def test_the_bot_compares_a_cell_with_published_numbers_only_within_their_threat_model(l2_repo):
    from evaluator.ci.cell import cell_line, published_numbers

    root, _, _, outcome, _ = l2_repo
    cells = published_numbers(root)
    measured = outcome.record["metrics"]["aa_robust_accuracy"]
    assert cell_line(MODEL_KEY, "linf-8-255-v1", measured, cells).startswith("published AA in this cell")
    assert cell_line(MODEL_KEY, PROTOCOL, measured, cells) is None
