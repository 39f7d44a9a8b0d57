"""FMN (Linf and L2, HO-FMN variant): exactness on a linear model, the variants, the pure pieces, the errors."""
import math

import pytest
import torch
from torch import nn

from evaluator.attacks.common import ce_loss, dlr_loss, frozen_for_attack, logit_loss
from evaluator.attacks.fmn import (
    cosine_anneal, fmn, optimizer_kwargs, project_box_, project_l2_, project_linf_, updated_epsilon,
)
from evaluator.attacks.verify import verified_distances
from evaluator.errors import APBError
from tests.support.tiny_models import L2, LINF, exact_distances, interior_inputs, linear_classifier, tiny_cnn


@pytest.fixture(scope="module")
def linear_case():
    model = linear_classifier()
    inputs = interior_inputs(32)
    labels = model(inputs).argmax(1)
    labels[:4] = (labels[:4] + 1) % 10  # four misclassified samples
    exact = exact_distances(model, inputs, labels)
    assert exact[:4].eq(0).all() and exact[4:].gt(0).all() and exact.max() < 0.25  # box never binds
    return model, inputs, labels, exact


@pytest.mark.parametrize("loss", ["LL", "DLR"])
def test_fmn_finds_the_exact_linf_distance_of_a_linear_model(linear_case, loss):
    model, inputs, labels, exact = linear_case
    adv = fmn(model, inputs, labels, steps=200, loss=loss, optimizer_params={"lr": 0.05}, p=math.inf)
    found = verified_distances(model, inputs, labels, adv, norm=LINF)
    assert torch.equal(adv[:4], inputs[:4]) and found[:4].eq(0).all()
    relative = found[4:] / exact[4:] - 1
    assert relative.min() > -1e-4                    # never below the true minimum (that would be a bug)
    assert relative.median() < 0.01 and relative.max() < 0.05


def test_fmn_finds_the_exact_l2_distance_of_a_linear_model(linear_case):
    """p = 2 (adv_lib's check): the minimal L2 distance of a linear model is ``min_j margin_j / ||w_y - w_j||_2``."""
    model, inputs, labels, _ = linear_case
    exact = exact_distances(model, inputs, labels, p=2)
    weight = model.linear.weight.detach()
    spread = max(float((weight[i] - weight[j]).abs().max() / (weight[i] - weight[j]).norm())
                 for i in range(10) for j in range(10) if i != j)
    assert exact[4:].gt(0).all() and exact.max() * spread < 0.25  # no coordinate moves 0.25: the box never binds
    adv = fmn(model, inputs, labels, steps=200, loss="LL", optimizer_params={"lr": 0.05}, p=2)
    found = verified_distances(model, inputs, labels, adv, norm=L2)
    assert found[:4].eq(0).all()
    assert torch.allclose(found[4:], torch.linalg.vector_norm((adv - inputs)[4:].flatten(1), dim=1))
    relative = found[4:] / exact[4:] - 1
    assert relative.min() > -1e-4                    # never below the true minimum
    assert relative.median() < 0.01 and relative.max() < 0.05
    linf = verified_distances(model, inputs, labels, adv, norm=LINF)
    assert (linf[4:] < found[4:]).all()  # an L2 attack, not a Linf one: its Linf size is smaller than its L2 size


def test_l2_projection_scales_onto_the_ball_and_leaves_points_inside():
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    project_l2_(delta, torch.tensor([1.0, 1.0, math.inf]))
    assert torch.allclose(delta, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def test_fmn_refuses_a_p_it_has_no_projection_for(linear_case):
    model, inputs, labels, _ = linear_case
    with pytest.raises(APBError, match="no projection and step for p = 1"):
        fmn(model, inputs, labels, steps=1, p=1)


@pytest.mark.parametrize("loss", ["LL", "DLR", "CE"])
@pytest.mark.parametrize("optimizer,params", [("SGD", {"lr": 0.1, "momentum": 0.5, "dampening": 0.1,
                                                        "weight_decay": 0.1}),
                                              ("Adam", {"lr": 0.1, "beta1": 0.8, "beta2": 0.99})])
@pytest.mark.parametrize("scheduler", ["cosine", "none"])
def test_every_variant_breaks_a_tiny_cnn(loss, optimizer, params, scheduler):
    model = tiny_cnn()
    inputs = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = model(inputs).argmax(1)
    adv = fmn(model, inputs, labels, steps=20, loss=loss, optimizer=optimizer, optimizer_params=params,
                   scheduler=scheduler, p=math.inf)
    distances = verified_distances(model, inputs, labels, adv, norm=LINF)
    assert adv.shape == inputs.shape and adv.min() >= 0 and adv.max() <= 1
    assert torch.isfinite(distances).all() and distances.gt(0).all()


def test_fmn_is_deterministic_and_batch_independent():
    model = tiny_cnn()
    inputs = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = model(inputs).argmax(1)
    whole = fmn(model, inputs, labels, steps=10, p=math.inf)
    again = fmn(model, inputs, labels, steps=10, p=math.inf)
    halves = torch.cat([fmn(model, inputs[:3], labels[:3], steps=10, p=math.inf),
                        fmn(model, inputs[3:], labels[3:], steps=10, p=math.inf)])
    assert torch.equal(whole, again)
    assert torch.allclose(whole, halves, atol=1e-6)


def test_starting_points_start_on_the_boundary(linear_case):
    model, inputs, labels, exact = linear_case
    far = fmn(model, inputs[4:], labels[4:], steps=30, optimizer_params={"lr": 0.2}, p=math.inf)
    assert verified_distances(model, inputs[4:], labels[4:], far, norm=LINF).isfinite().all()
    adv = fmn(model, inputs[4:], labels[4:], steps=30, starting_points=far, optimizer_params={"lr": 0.01}, p=math.inf)
    distances = verified_distances(model, inputs[4:], labels[4:], adv, norm=LINF)
    assert distances.isfinite().all() and (distances <= (far - inputs[4:]).flatten(1).abs().amax(1) + 1e-6).all()
    with pytest.raises(APBError, match="starting_points"):
        fmn(model, inputs[4:], labels[4:], steps=2, starting_points=inputs[4:], p=math.inf)


def test_the_model_is_left_as_it_was():
    model = tiny_cnn().train()
    model.head.weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    inputs = torch.rand(2, 3, 16, 16)
    fmn(model, inputs, model.eval()(inputs).argmax(1), steps=2, p=math.inf)
    model.train()
    with frozen_for_attack(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.training and [p.requires_grad for p in model.parameters()] == before


def test_objectives_share_one_sign_convention():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]], requires_grad=True)
    labels = torch.tensor([0, 0])                                   # first correct, second misclassified
    assert logit_loss(logits, labels).tolist() == [-2.0, 2.0]
    assert dlr_loss(logits, labels).detach().tolist() == pytest.approx([-2 / 3, 2 / 1.5])
    assert ce_loss(logits, labels).detach().tolist() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels, reduction="none").tolist())
    with pytest.raises(APBError, match="3 classes"):
        dlr_loss(logits[:, :2], labels)


def test_epsilon_update_rules():
    eps = torch.tensor([0.1, 0.1, math.inf, 0.1])
    is_adv = torch.tensor([True, False, False, True])
    found = torch.tensor([True, True, False, True])
    best = torch.tensor([0.05, 0.05, math.inf, 0.2])
    worst = torch.tensor([1.0, 1.0, 0.9, 0.08])
    new = updated_epsilon(eps, is_adv=is_adv, adv_found=found, best_norm=best, worst_norm=worst, gamma=0.1)
    assert new.tolist() == pytest.approx([0.05, 0.11, 0.9, 0.08])


def test_projections_and_schedule():
    delta = torch.tensor([[0.5, -0.5, 0.01], [0.5, -0.5, 0.01]])
    project_linf_(delta, torch.tensor([0.1, math.inf]))
    assert torch.allclose(delta, torch.tensor([[0.1, -0.1, 0.01], [0.5, -0.5, 0.01]]))
    inputs = torch.tensor([[0.9, 0.2, 0.5], [0.9, 0.2, 0.5]])
    project_box_(delta, inputs)
    assert torch.allclose(inputs + delta, torch.tensor([[1.0, 0.1, 0.51], [1.0, 0.0, 0.51]]))
    assert cosine_anneal(0.05, 0.001, 0, 10) == 0.05 and cosine_anneal(0.05, 0.001, 10, 10) == 0.001


@pytest.mark.parametrize("kwargs,match", [
    ({"loss": "MSE"}, "loss"), ({"optimizer": "RMSprop"}, "optimizer"), ({"scheduler": "step"}, "scheduler"),
    ({"optimizer_params": {"lr": 1, "nesterov_typo": 1}}, "nesterov_typo"), ({"steps": 0}, "steps"),
])
def test_bad_options_are_named(kwargs, match):
    model = tiny_cnn()
    inputs = torch.rand(2, 3, 16, 16)
    options = {"steps": 2, **kwargs}
    with pytest.raises(APBError, match=match):
        fmn(model, inputs, torch.tensor([0, 1]), **options, p=math.inf)


def test_inputs_outside_the_box_are_refused():
    with pytest.raises(APBError, match=r"\[0, 1\]"):
        fmn(tiny_cnn(), torch.full((1, 3, 16, 16), 2.0), torch.tensor([0]), steps=1, p=math.inf)


def test_adam_betas_come_from_beta1_beta2():
    assert optimizer_kwargs("Adam", {"lr": 0.1, "beta1": 0.5, "beta2": 0.9}) == {"lr": 0.1, "betas": (0.5, 0.9)}


class _MeanIntensity(nn.Module):
    """Classifies by mean intensity: autograd hands FMN an expanded (stride-0) input gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.sum(dim=(1, 2, 3)).unsqueeze(1) / x[0].numel())


def test_an_expanded_input_gradient_does_not_break_the_sign_step():
    torch.manual_seed(0)
    model = _MeanIntensity()
    inputs = torch.rand(4, 3, 8, 8)
    labels = model(inputs).argmax(1)
    adv = fmn(model, inputs, labels, steps=5, loss="CE", p=math.inf)
    assert adv.shape == inputs.shape and torch.isfinite(adv).all()


class _ChannelsLastCNN(nn.Module):
    """The tiny CNN run in channels_last: the same logits, an input gradient in channels_last strides."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def test_a_channels_last_input_gradient_steps_the_same_elements():
    torch.manual_seed(0)
    model = tiny_cnn(0)
    inputs = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    params = {"lr": 1.0, "momentum": 0.5, "weight_decay": 0.1, "dampening": 0.1}
    plain = fmn(model, inputs, labels, steps=10, loss="DLR", optimizer="SGD", optimizer_params=params, p=math.inf)
    strided = fmn(_ChannelsLastCNN(model), inputs, labels, steps=10, loss="DLR", optimizer="SGD",
                  optimizer_params=params, p=math.inf)
    assert torch.allclose(verified_distances(model, inputs, labels, strided, batch_size=8, norm=LINF),
                          verified_distances(model, inputs, labels, plain, batch_size=8, norm=LINF), atol=1e-5)
