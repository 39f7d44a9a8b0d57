"""The AutoAttack adapter gives the same per-sample results as calling the official code directly."""
import pytest
import torch
from torch import nn

from evaluator.attacks.autoattack import autoattack, load_implementation
from evaluator.errors import APBError
from tests.support.tiny_models import LINF, exact_distances, interior_inputs, linear_classifier

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def case():
    model = linear_classifier(SHAPE)
    inputs = interior_inputs(12, SHAPE)
    labels = model(inputs).argmax(1)
    labels[:2] = (labels[:2] + 1) % 10
    exact = exact_distances(model, inputs, labels)
    eps = float(exact[2:].median())          # about half of the clean-correct samples are robust
    return model, inputs, labels, exact, eps


def direct_flags(model, inputs, labels, eps, **options):
    """A plain pyautoattack run, as its README shows: robust where the returned label is still right."""
    pyautoattack = pytest.importorskip("pyautoattack")
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, seed=0, device="cpu", **options)
    adv, predicted = adversary.run_standard_evaluation(inputs, labels, batch_size=500)
    return adv, predicted == labels


def check_against_direct(case, **options):
    model, inputs, labels, exact, eps = case
    result = autoattack(model, inputs, labels, eps=eps, seed=0, **options, norm=LINF)
    adv, flags = direct_flags(model, inputs, labels, eps, **options)
    assert torch.equal(result.robust, flags) and torch.equal(result.adv, adv)
    assert not result.robust[:2].any()                                  # misclassified clean
    clear = (exact - eps).abs() > 0.05 * eps                            # not on the edge
    assert torch.equal(result.robust[clear], (exact > eps)[clear])      # agrees with the closed form
    assert 0 < int(result.robust.sum()) < len(inputs)
    return result


def test_adapter_equals_a_direct_call_cheap_custom_version(case):
    result = check_against_direct(case, version="custom", attacks=["apgd-ce", "apgd-t"])
    assert result.attacks_to_run == ["apgd-ce", "apgd-t"] and result.warnings == []
    assert result.implementation == load_implementation().__name__


@pytest.mark.slow
def test_adapter_equals_a_direct_call_standard_version(case):
    result = check_against_direct(case, version="standard")
    assert result.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]


class Softmaxed(nn.Module):
    """Outputs probabilities instead of logits: AutoAttack's range check must say so."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).softmax(dim=1)


def test_autoattack_own_checks_become_warnings(case):
    model, inputs, labels, _, eps = case
    result = autoattack(Softmaxed(model), inputs[:4], labels[:4], eps=eps, version="custom",
                             attacks=["apgd-ce"], norm=LINF)
    assert any("probability distribution" in message for message in result.warnings)
    assert len(result.warnings) == len(set(result.warnings))


def test_model_state_is_restored_and_attacks_need_custom(case):
    model, inputs, labels, _, eps = case
    model.train()
    autoattack(model, inputs[:2], labels[:2], eps=eps, version="custom", attacks=["apgd-ce"], norm=LINF)
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    with pytest.raises(APBError, match="custom"):
        autoattack(model, inputs, labels, eps=eps, attacks=["apgd-ce"], norm=LINF)


def test_the_git_module_fallback(case, monkeypatch):
    """Runs only where the official git ``autoattack`` module is importable (e.g. PYTHONPATH=auto-attack)."""
    official = pytest.importorskip("autoattack")
    model, inputs, labels, _, eps = case
    monkeypatch.setattr("evaluator.attacks.autoattack.IMPLEMENTATIONS", ("autoattack",))
    result = autoattack(model, inputs, labels, eps=eps, version="custom", attacks=["apgd-ce", "apgd-t"], norm=LINF)
    adversary = official.AutoAttack(model, norm="Linf", eps=eps, seed=0, verbose=False, version="custom",
                                    attacks_to_run=["apgd-ce", "apgd-t"], device="cpu")
    adv = adversary.run_standard_evaluation(inputs, labels, bs=500)
    assert result.implementation == "autoattack" and torch.equal(result.adv, adv)
