"""The closed vocabularies (datasets, architectures) are stated once, in their registries
(``evaluator/registry/datasets.yaml``, the ``architectures`` of ``evaluator/models/variants.yaml``): every
place that lists them agrees, no module restates them, and a new registry entry flows through."""
from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from evaluator.registry import datasets as dataset_registry
from evaluator.registry import model_keys
from evaluator.registry import variants as variant_registry
from evaluator.registry.datasets import datasets, get_dataset
from evaluator.registry.model_keys import STRUCTURE_KINDS, model_key_maker, parse_model_key
from evaluator.registry.variants import architectures, build_variant
from evaluator.repository.schema import load_schema, with_vocabularies

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = [ROOT / "evaluator" / "schemas" / "manifest.schema.json", ROOT / "evaluator" / "schemas" / "record.schema.json",
           ROOT / "evaluator" / "ci" / "schemas" / "plan.schema.json"]


def vocabulary_words() -> set[str]:
    """Every dataset name, architecture name and architecture code."""
    return set(datasets()) | set(architectures()) | {family.code for family in architectures().values()}


def string_literals(path: Path) -> list[str]:
    """The string constants of a module, docstrings left out (they explain; they list nothing apb checks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_each_vocabulary_word_is_a_string_literal_in_at_most_one_module():
    """A word (``CIFAR10``, ``resnet18``, ``R18``) written in a module's code, alone or in a list such as
    ``"resnet18 | vgg16"``, is a copy of the registry that the next dataset or architecture has to find; a
    model key given as an example (``..._R18_CIFAR10_US_90``) is one token and does not count."""
    words = vocabulary_words()
    modules: dict[str, set[str]] = {word: set() for word in words}
    for path in sorted((ROOT / "evaluator").rglob("*.py")):
        for text in string_literals(path):
            for token in set(re.split(r"[^A-Za-z0-9_]+", text)) & words:
                modules[token].add(path.relative_to(ROOT).as_posix())
    assert {word: sorted(found) for word, found in modules.items() if len(found) > 1} == {}


def test_the_schema_files_name_the_vocabularies_and_list_none_of_their_words():
    words = vocabulary_words()
    for path in SCHEMAS:
        raw = path.read_text(encoding="utf-8")
        assert "x-vocabulary" in raw, path
        without_published_cells = json.loads(raw)
        without_published_cells.get("$defs", {}).pop("published_cell", None)  # data: the published model keys
        listed = set(re.findall(r"[A-Za-z0-9]+", json.dumps(without_published_cells))) & words
        assert listed == set(), f"{path.name} lists {sorted(listed)}; write \"x-vocabulary\" instead"


def test_the_loaded_schemas_hold_the_registries_words():
    manifest, record = load_schema("manifest"), load_schema("record")
    model = manifest["$defs"]["model"]["properties"]
    assert model["architecture"]["enum"] == record["properties"]["architecture"]["enum"] == list(architectures())
    assert model["dataset"]["enum"] == record["properties"]["dataset"]["enum"] == list(datasets())
    assert model["structure"]["enum"] == list(STRUCTURE_KINDS)
    assert record["properties"]["structure_kind"]["enum"] == ["US", "S"]
    assert record["$defs"]["efficiency"]["properties"]["structure_kind"]["enum"] == ["US", "S"]
    pattern = record["properties"]["model_key"]["pattern"]
    plan = with_vocabularies(json.loads(SCHEMAS[2].read_text(encoding="utf-8")))
    assert plan["$defs"]["model_key"]["pattern"] == pattern
    for name, family in architectures().items():
        for dataset in datasets():
            key = model_key_maker("HYDRA_Sehwag2020Hydra", name, dataset, "weights", 90)
            assert key == f"HYDRA_Sehwag2020Hydra_{family.code}_{dataset}_US_90"
            assert re.fullmatch(pattern.strip("^$"), key) and parse_model_key(key).architecture == name
    for cell in record["$defs"]["published_cell"]["enum"]:
        assert re.fullmatch(pattern.strip("^$"), cell), cell


def test_the_commands_titles_and_figures_follow_the_registries(monkeypatch):
    from evaluator.commands import prepare
    from evaluator.render import curve_set
    from evaluator.render.tables import ApLabel, column_title

    parser = argparse.ArgumentParser()
    prepare.configure_parser(parser)
    choices = {action.dest: list(action.choices) for action in parser._actions if action.choices}
    assert choices["architecture"] == list(architectures()) and choices["dataset"] == list(datasets())
    assert choices["structure"] == list(STRUCTURE_KINDS)
    drawn: list = []
    monkeypatch.setattr(curve_set, "scatter_chart", lambda title, series, *args, **kwargs: drawn.extend(series) or "")
    points = {name: [(1e6 * (i + 1), 50.0, "HYDRA_Sehwag2020Hydra")] for i, name in enumerate(reversed(architectures()))}
    curve_set.efficiency_svg(points, "p", (next(iter(datasets())), "US"), "worst-case",
                             {"HYDRA_Sehwag2020Hydra": ApLabel("HYDRA_Sehwag2020Hydra", "HYDRA")})
    assert [(series.name, series.marker) for series in drawn] == [(family.title, family.marker)
                                                                 for family in architectures().values()]
    assert [column_title((name, 90)) for name in architectures()] == [f"{f.title} 90%" for f in architectures().values()]


def test_each_dataset_format_has_its_reader():
    from evaluator.run import datasets as readers

    assert set(dataset_registry.FORMATS) == set(readers._READERS)
    assert {dataset.format for dataset in datasets().values()} <= set(readers._READERS)


def test_the_largest_test_set_fits_a_sidecar():
    from evaluator.record.records import MAX_SIDECAR_SAMPLES

    assert max(dataset.test_size for dataset in datasets().values()) <= MAX_SIDECAR_SAMPLES


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """The dataset registry with one more dataset, TINY3 (3 classes), in a temporary copy."""
    copy = tmp_path / "datasets.yaml"
    shutil.copy(dataset_registry.DATASETS_FILE, copy)
    with copy.open("a", encoding="utf-8") as handle:
        handle.write("  TINY3:\n    classes: 3\n    test_size: 12\n"
                     "    torchvision: {class: CIFAR10, split: {train: false}}\n    format: cifar-pickle\n")
    caches = [datasets, model_keys._model_key]
    for cache in caches:
        cache.cache_clear()
    monkeypatch.setattr(dataset_registry, "DATASETS_FILE", copy)
    yield
    monkeypatch.undo()
    for cache in caches:
        cache.cache_clear()


def test_a_new_dataset_flows_through_keys_schemas_and_heads(tiny_registry):
    key = model_key_maker("HYDRA_Sehwag2020Hydra", "vgg16", "TINY3", "filters", 50)
    assert key == "HYDRA_Sehwag2020Hydra_V16_TINY3_S_50" and parse_model_key(key).dataset == "TINY3"
    schema = with_vocabularies(json.loads(SCHEMAS[1].read_text(encoding="utf-8")))
    assert schema["properties"]["dataset"]["enum"][-1] == "TINY3"
    assert re.fullmatch(schema["properties"]["model_key"]["pattern"].strip("^$"), key)
    classes = get_dataset("TINY3").classes
    with torch.inference_mode():
        assert build_variant("vgg16", classes).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    assert variant_registry.default_classes() == get_dataset("CIFAR10").classes  # a model named by no dataset
    from evaluator.checkpoint.compliance import check_compliance

    state = dict(build_variant("vgg16", classes).state_dict())
    assert check_compliance(state, "vgg16", classes).ok
    assert "has 3 rows" in check_compliance(state, "vgg16", get_dataset("CIFAR10").classes).suggestion


def test_a_registry_mistake_names_the_file_and_the_field(tmp_path, monkeypatch):
    from evaluator.errors import APBError

    broken = tmp_path / "datasets.yaml"
    broken.write_text("datasets:\n  CIFAR10:\n    classes: ten\n    test_size: 10000\n"
                      "    torchvision: {class: CIFAR10, split: {train: false}}\n    format: cifar-pickle\n")
    monkeypatch.setattr(dataset_registry, "DATASETS_FILE", broken)
    datasets.cache_clear()
    try:
        with pytest.raises(APBError, match=r"datasets\.CIFAR10: classes: must be a positive integer") as error:
            datasets()
        assert str(broken) in str(error.value)
    finally:
        monkeypatch.undo()
        datasets.cache_clear()


@pytest.mark.parametrize("registry, section, text, expected, line", [
    ("norms", "norms", "norms:\n  L2: {p: 0.5, autoattack: L2, tolerance: 1.0e-6, display: l2,\n"
                       "       curve: {step: '1/200', points: 401, tick_step: '1/4'}}\n", r"norms\.L2: p: must be inf or", 2),
    ("norms", "norms", "norms:\n  L2: {p: 2}\n", r"norms\.L2: needs exactly the fields", 2),
    ("variants", "architectures", "architectures:\n  resnet18: {code: R-18, title: ResNet18, marker: circle}\n"
                                  "variants: {}\n", r"architectures\.resnet18: code: must be ASCII", 2),
    ("variants", "variants", "architectures:\n  resnet18: {code: R18, title: ResNet18, marker: circle}\n"
                             "variants:\n  resnet18: {family: resnet18}\n", r"variants\.resnet18: needs family, builder", 4),
])
def test_every_registry_names_the_file_the_entry_and_the_field(registry, section, text, expected, line, tmp_path,
                                                               monkeypatch):
    """One reader of registry sections (registry/entries.py): each mistake names the file, its line and the entry."""
    from evaluator.errors import APBError
    from evaluator.registry import norms as norm_registry

    module, constant, reader = {"norms": (norm_registry, "NORMS_FILE", norm_registry.norms),
                                "variants": (variant_registry, "VARIANTS_FILE",
                                             variant_registry.variants if section == "variants"
                                             else variant_registry.architectures)}[registry]
    broken = tmp_path / f"{registry}.yaml"
    broken.write_text(text)
    monkeypatch.setattr(module, constant, broken)
    caches = [norm_registry.norms, variant_registry.architectures, variant_registry.variants]
    for cache in caches:
        cache.cache_clear()
    try:
        with pytest.raises(APBError, match=expected) as error:
            reader()
        assert f"{broken}:{line}: " in str(error.value)
    finally:
        monkeypatch.undo()
        for cache in caches:
            cache.cache_clear()


def test_each_structure_and_norm_name_is_a_string_literal_in_at_most_two_modules():
    """The structure kinds (``weights``, ``filters``, ``channels``) are written in their registry
    (registry/model_keys.py) and in the module that says what each measures (run/sparsity.py); a norm's name
    (``Linf``) in its registry file and where the published numbers' threat model is stated. Nowhere else is a
    literal that is the whole word."""
    from evaluator.registry.norms import norms

    words = set(STRUCTURE_KINDS) | set(norms())
    modules: dict[str, set[str]] = {word: set() for word in words}
    for path in sorted((ROOT / "evaluator").rglob("*.py")):
        for text in set(string_literals(path)) & words:
            modules[text].add(path.relative_to(ROOT).as_posix())
    assert {word: sorted(found) for word, found in modules.items() if len(found) > 2} == {}


def test_the_structure_registry_agrees_with_the_taxonomy_and_names_its_mistakes(tmp_path, monkeypatch):
    """structures.yaml's kinds are the taxonomy's S/US values and its structured structures are granularities the
    taxonomy defines; a structure of an unknown kind names the file, the line and the field."""
    from evaluator.errors import APBError
    from evaluator.registry import structures as structure_registry
    from evaluator.registry.model_keys import STRUCTURE_KIND_TITLES, STRUCTURED
    from evaluator.repository.taxonomy import load_vocabulary

    fields = load_vocabulary(ROOT)["fields"]
    assert set(STRUCTURE_KIND_TITLES) == set(fields["structure"]["values"])
    assert set(STRUCTURED) <= set(fields["granularity"]["values"])
    broken = tmp_path / "structures.yaml"
    broken.write_text("structures:\n  weights: {kind: US}\n  filters: {kind: X}\n"
                      "kinds:\n  US: {title: unstructured (US), structured: false}\n")
    monkeypatch.setattr(structure_registry, "STRUCTURES_FILE", broken)
    structure_registry.registry.cache_clear()
    try:
        with pytest.raises(APBError, match=r":3: structures\.filters\.kind: 'X' is not one of US"):
            structure_registry.registry()
    finally:
        monkeypatch.undo()
        structure_registry.registry.cache_clear()


def test_equal_threat_models_and_curve_grids_hash_alike_and_find_each_other_as_keys():
    """Their hashes are written by hand (cheap: the renderer keys caches on them per model); equal ones must still
    hash equal, whether built from one registry entry or field by field, and unequal ones stay distinct keys."""
    import dataclasses
    from fractions import Fraction

    from evaluator.registry.norms import threat_model

    linf = threat_model("Linf", Fraction(8, 255))
    rebuilt = dataclasses.replace(linf, eps_fraction=Fraction(16, 510),
                                  curve=dataclasses.replace(linf.curve, step=Fraction(3 * linf.curve.step.numerator,
                                                                                     3 * linf.curve.step.denominator)))
    assert rebuilt == linf and hash(rebuilt) == hash(linf) and hash(rebuilt.curve) == hash(linf.curve)
    other_eps, other_norm = threat_model("Linf", Fraction(4, 255)), threat_model("L2", Fraction(1, 2))
    finer = dataclasses.replace(linf, curve=dataclasses.replace(linf.curve, tick_step=linf.curve.tick_step / 2))
    keys = {linf: "linf", other_eps: "4/255", other_norm: "l2", finer: "finer ticks"}
    assert len(keys) == 4 and keys[rebuilt] == "linf" and keys[finer] == "finer ticks"
