"""Model keys: the seed's format, round trips over the repository's entries, and one ap_key form everywhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.registry.model_keys import AP_KEY_PATTERN, model_key_maker, parse_model_key
from evaluator.repository.schema import load_schema
from evaluator.repository.submissions import iter_entries

ROOT = Path(__file__).resolve().parents[1]


def test_every_manifest_entry_round_trips_through_its_key():
    entries = list(iter_entries(ROOT))
    assert entries
    for entry in entries:
        parsed = parse_model_key(entry.model_key)
        assert parsed == (entry.ap_key, entry.architecture, entry.dataset, entry.structure_kind, entry.sparsity)


def test_filters_and_channels_share_the_structured_key():
    filters = model_key_maker("HARP_Zhao2023Holistic", "vgg16", "CIFAR10", "filters", "75")
    channels = model_key_maker("HARP_Zhao2023Holistic", "vgg16", "CIFAR10", "channels", 75)
    assert filters == channels == "HARP_Zhao2023Holistic_V16_CIFAR10_S_75"


@pytest.mark.parametrize("args", [
    ("HYDRA_Sehwag2020Hydra", "resnet50", "CIFAR10", "weights", "90"),
    ("HYDRA_Sehwag2020Hydra", "resnet18", "ImageNet", "weights", "90"),
    ("HYDRA_Sehwag2020Hydra", "resnet18", "CIFAR10", "kernels", "90"),
    ("../x", "resnet18", "CIFAR10", "weights", "90"),
    ("BCSP_\u00d6zdenizc2021Training", "resnet18", "CIFAR10", "weights", "90"),
])
def test_key_maker_refuses_unknown_parts(args):
    with pytest.raises(ValueError):
        model_key_maker(*args)


@pytest.mark.parametrize("key", ["HYDRA_Sehwag2020Hydra_R18_CIFAR10_US", "a/b_R18_CIFAR10_US_90",
                                 "HYDRA_Sehwag2020Hydra_R50_CIFAR10_US_90", "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_100"])
def test_parse_refuses_malformed_keys(key):
    with pytest.raises(ValueError):
        parse_model_key(key)


def test_the_schemas_use_the_ap_key_form_of_keys_py():
    expected = f"^{AP_KEY_PATTERN}$"
    taxonomy = json.loads((ROOT / "taxonomy" / "taxonomy.schema.json").read_text())
    manifest, record = load_schema("manifest"), load_schema("record")
    assert taxonomy["properties"]["ap_key"]["pattern"] == expected
    assert manifest["$defs"]["ap_key"]["pattern"] == expected
    assert record["properties"]["ap_key"]["pattern"] == expected
    assert record["properties"]["model_key"]["pattern"].startswith(f"^{AP_KEY_PATTERN}_")


def test_is_ap_key_matches_the_whole_text():
    from evaluator.registry.model_keys import is_ap_key

    assert is_ap_key("HYDRA_Sehwag2020Hydra")
    for bad in ("HYDRA_Sehwag2020Hydra\n", "../x", "a/b", "HYDRA_Sehwag2020Hydra/..", "BCSP_Özdenizci2021Training", ""):
        assert not is_ap_key(bad), bad
