"""Verified per-sample distances and robust flags: the rules in evaluator.attacks.verify."""
import math

import pytest
import torch

from evaluator.attacks.verify import robust_within, verified_distances, within_eps
from evaluator.errors import APBError
from tests.support.tiny_models import LINF, exact_distances, interior_inputs, linear_classifier

SHAPE = (3, 4, 4)


@pytest.fixture()
def setup():
    model = linear_classifier(SHAPE)
    inputs = interior_inputs(6, SHAPE)
    labels = model(inputs).argmax(1)
    labels[0] = (labels[0] + 1) % 10          # sample 0: misclassified clean
    return model, inputs, labels


def adversarial_along_best_direction(model, x, label, scale):
    """x moved by ``scale`` times its exact Linf distance along the optimal sign direction."""
    weight = model.linear.weight.detach()
    logits = model(x[None]).detach()[0]
    distance = exact_distances(model, x[None], label[None])[0]
    others = [j for j in range(10) if j != int(label)]
    margins = torch.stack([(logits[label] - logits[j]) / (weight[label] - weight[j]).abs().sum() for j in others])
    target = others[int(margins.argmin())]
    direction = torch.sign(weight[target] - weight[label]).view_as(x)
    return x + scale * distance * direction, float(distance)


def test_distances_cover_each_case(setup):
    model, inputs, labels = setup
    adv = inputs.clone()
    adv[1], d1 = adversarial_along_best_direction(model, inputs[1], labels[1], 1.01)   # found
    adv[2], _ = adversarial_along_best_direction(model, inputs[2], labels[2], 0.5)     # not adversarial
    adv[3, 0, 0, 0] = float("nan")                                                     # broken output
    adv[4], _ = adversarial_along_best_direction(model, inputs[4], labels[4], 1.01)
    adv[4, 0, 0, 0] = 1.5                                                              # outside the box
    distances = verified_distances(model, inputs, labels, adv, batch_size=4, norm=LINF)
    assert distances.dtype == torch.float32
    assert distances[0] == 0                        # misclassified clean, whatever adv is
    assert distances[1] == pytest.approx(1.01 * d1, rel=1e-5)
    assert math.isinf(distances[2]) and math.isinf(distances[3]) and math.isinf(distances[4])
    assert math.isinf(distances[5])                 # adv == input: nothing found


def test_robust_within_counts_only_adversarials_inside_eps(setup):
    model, inputs, labels = setup
    adv = inputs.clone()
    adv[1], d1 = adversarial_along_best_direction(model, inputs[1], labels[1], 1.01)
    robust_small = robust_within(model, inputs, labels, adv, eps=d1, norm=LINF)         # adv just outside eps
    robust_large = robust_within(model, inputs, labels, adv, eps=1.02 * d1, norm=LINF)  # inside
    assert robust_small.tolist() == [False, True, True, True, True, True]
    assert robust_large.tolist() == [False, False, True, True, True, True]


def test_tolerance_is_absolute_and_tiny():
    distances = torch.tensor([0.0, 8 / 255, 8 / 255 + LINF.tolerance / 2, 8 / 255 + 2 * LINF.tolerance, math.inf])
    assert within_eps(distances, 8 / 255, LINF).tolist() == [True, True, True, False, False]


def test_shape_mismatch_is_an_error(setup):
    model, inputs, labels = setup
    with pytest.raises(APBError, match="shape"):
        verified_distances(model, inputs, labels, inputs[:3], norm=LINF)
