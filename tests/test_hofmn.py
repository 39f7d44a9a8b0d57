"""HO-FMN tuning: seeded and deterministic, inside the search space given as data, honest objective."""
import math

import pytest
import torch

from evaluator.attacks.fmn import fmn
from evaluator.attacks.hofmn import (
    evaluate_params, hofmn_attack, median_distance, search_distributions, sobol_points, tune_fmn,
)
from evaluator.attacks.verify import verified_distances
from evaluator.errors import APBError
from tests.support.tiny_models import LINF, interior_inputs, linear_classifier

SPACE = {"lr": {"low": 0.0313725, "high": 10, "log": True}, "momentum": {"low": 0, "high": 0.9},
         "weight_decay": {"low": 0.01, "high": 1}, "dampening": {"low": 0, "high": 0.2}}


@pytest.fixture(scope="module")
def batch():
    model = linear_classifier()
    inputs = interior_inputs(12)
    labels = model(inputs).argmax(1)
    labels[0] = (labels[0] + 1) % 10
    return model, inputs, labels


def tune(batch, seed=0):
    model, inputs, labels = batch
    return tune_fmn(model, inputs, labels, search_space=SPACE, trials=6, steps=10, seed=seed, startup_trials=3,
                    progress=False, norm=LINF)


def test_tuning_is_deterministic_for_a_seed_and_stays_in_the_space(batch):
    first, second = tune(batch), tune(batch)
    assert first.trials == second.trials and first.best_params == second.best_params
    assert len(first.trials) == 6
    for params, _ in first.trials:
        assert set(params) == set(SPACE)
        assert all(SPACE[k]["low"] <= v <= SPACE[k]["high"] for k, v in params.items())
    assert first.best_value == min(value for _, value in first.trials)
    assert (first.best_params, first.best_value) in first.trials
    assert first.attack_seconds > 0 and first.engine_seconds > 0
    assert tune(batch, seed=1).trials != first.trials


def test_the_best_value_is_the_median_verified_distance_of_its_params(batch):
    model, inputs, labels = batch
    result = tune(batch)
    adv = hofmn_attack(model, inputs, labels, params=result.best_params, steps=10, norm=LINF)
    distances = verified_distances(model, inputs, labels, adv, norm=LINF)
    assert median_distance(distances) == result.best_value
    assert distances[0] == 0 and torch.equal(
        adv, fmn(model, inputs, labels, steps=10, optimizer_params=result.best_params, p=math.inf))


def test_misclassified_and_failed_count_as_infinite():
    assert median_distance(torch.tensor([0.0, 0.1, 0.2, 0.3])) == pytest.approx(0.2)
    assert median_distance(torch.tensor([0.0, 0.0, math.inf, 0.3])) == math.inf
    assert median_distance(torch.tensor([0.1, 0.3, 0.2])) == pytest.approx(0.2)


def test_a_failing_attack_scores_infinity(batch):
    model, inputs, labels = batch
    assert evaluate_params(model, inputs, labels, {"lr": 1e-6}, steps=2, loss="DLR", optimizer="SGD",
                           scheduler="none", norm=LINF) == math.inf


def test_sobol_start_covers_the_space_in_its_scale():
    distributions = search_distributions(SPACE, "SGD")
    points = sobol_points(distributions, 8, seed=0)
    assert points == sobol_points(distributions, 8, seed=0) and points != sobol_points(distributions, 8, seed=1)
    lrs = sorted(p["lr"] for p in points)
    assert all(SPACE["lr"]["low"] <= lr <= SPACE["lr"]["high"] for lr in lrs)
    assert lrs[0] < 0.2 and lrs[-1] > 2           # log scale: spread over decades, not crowded near 10


@pytest.mark.parametrize("space,match", [
    ({}, "non-empty"),
    ({"lr": {"low": 1}}, "search_space.lr"),
    ({"lr": {"low": 1, "high": 0.5}}, "low < high"),
    ({"lr": {"low": 0, "high": 1, "log": True}}, "log"),
    ({"lr": {"low": 0.1, "high": 1, "step": 0.1}}, "search_space.lr"),
    ({"lr": {"low": 0.1, "high": 1}, "betas_typo": {"low": 0, "high": 1}}, "betas_typo"),
])
def test_bad_search_spaces_are_named(space, match):
    with pytest.raises(APBError, match=match):
        search_distributions(space, "SGD")
