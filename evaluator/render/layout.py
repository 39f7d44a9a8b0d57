"""Where each generated file goes (paths relative to the repository root) and how pages link each other."""
from __future__ import annotations

import functools
import os
import posixpath
from pathlib import Path, PurePosixPath

from evaluator import paths
from evaluator.registry.datasets import dataset_names
from evaluator.registry.model_keys import STRUCTURE_KIND_NAMES, STRUCTURE_KIND_TITLES, ModelKey
from evaluator.registry.variants import architecture_names, architectures

LEADERBOARD_DIR = PurePosixPath(paths.LEADERBOARD_DIR)
LEADERBOARD_README = LEADERBOARD_DIR / "README.md"
TAXONOMY_README = PurePosixPath(paths.TAXONOMY_README)
MODELS_DIR = LEADERBOARD_DIR / "models"
CURVES_DIR = LEADERBOARD_DIR / "curves"
GROUPS_DIR = LEADERBOARD_DIR / "groups"
ANALYSIS_PAGE = LEADERBOARD_DIR / "analysis.md"
TAXONOMY_PAGES_DIR = LEADERBOARD_DIR / "taxonomy"
_MODELS, _MODEL_CURVES = MODELS_DIR.as_posix(), (CURVES_DIR / "models").as_posix()  # a path per model, made at once


Group = tuple[str, str]  # (dataset, structure kind)


def group_of(key: ModelKey) -> Group:
    return (key.dataset, key.structure_kind)


def group_sort_key(group: Group) -> tuple[int, int, str, str]:
    """Datasets and structure kinds in the order the model keys list them; unknown ones last, by name."""
    dataset, kind = group
    datasets = dataset_names()
    return (datasets.index(dataset) if dataset in datasets else len(datasets),
            STRUCTURE_KIND_NAMES.index(kind) if kind in STRUCTURE_KIND_NAMES else len(STRUCTURE_KIND_NAMES),
            dataset, kind)


def architecture_sort_key(architecture: str) -> tuple[int, str]:
    """Architectures in the registry's order (the leaderboard's columns); unknown ones last, by name."""
    order = architecture_names()
    return (order.index(architecture) if architecture in order else len(order), architecture)


def architecture_title(architecture: str) -> str:
    """The registry's title of *architecture* (``ResNet18``); an unknown one by its name."""
    known = architectures().get(architecture)
    return known.title if known else architecture


def group_title(group: Group) -> str:
    dataset, kind = group
    return f"{dataset}, {STRUCTURE_KIND_TITLES.get(kind, kind)}"


@functools.lru_cache(maxsize=4096)
def _ap_folder(model_key: str) -> str:
    """The folder of a model's generated files: its AP key (GitHub lists at most 1,000 entries of a folder, and
    1,000 APs have 24,000 models; an AP has at most a few dozen)."""
    from evaluator.registry.model_keys import parse_model_key

    return parse_model_key(model_key).ap_key


def model_page(model_key: str) -> PurePosixPath:
    """``leaderboard/models/<ap_key>/<model_key>.md``."""
    return PurePosixPath(f"{_MODELS}/{_ap_folder(model_key)}/{model_key}.md")  # one path made, not three


def model_link(page: PurePosixPath, model_key: str, anchor: str | None = None) -> str:
    """``relative_link(page, model_page(model_key), anchor)``, without path arithmetic per model."""
    target = f"{_models_folder_from(posixpath.dirname(str(page)) or '.')}{_ap_folder(model_key)}/{model_key}.md"
    return f"{target}#{anchor}" if anchor else target


@functools.lru_cache(maxsize=64)
def _models_folder_from(folder: str) -> str:
    return _relative_folder(folder, MODELS_DIR.as_posix()) + "/"


def curve_file(protocol: str, group: Group, architecture: str, sparsity: int) -> PurePosixPath:
    """``leaderboard/curves/<protocol>/<dataset>_<US|S>_<architecture code>_<sparsity>.svg``."""
    dataset, kind = group
    known = architectures().get(architecture)
    code = known.code if known else architecture
    return CURVES_DIR / protocol / f"{dataset}_{kind}_{code}_{sparsity}.svg"


def model_curve_file(model_key: str, protocol: str) -> PurePosixPath:
    """``leaderboard/curves/models/<ap_key>/<model_key>__<protocol>.svg``: one model's curve among its column's
    best."""
    return PurePosixPath(f"{_MODEL_CURVES}/{_ap_folder(model_key)}/{model_key}__{protocol}.svg")


def efficiency_file(protocol: str, group: Group) -> PurePosixPath:
    """``leaderboard/curves/<protocol>/<dataset>_<US|S>_efficiency.svg``: robust accuracy vs effective MACs."""
    dataset, kind = group
    return CURVES_DIR / protocol / f"{dataset}_{kind}_efficiency.svg"


def reevaluation_file(protocol: str) -> PurePosixPath:
    """``leaderboard/curves/<protocol>/published_vs_evaluated.svg``."""
    return CURVES_DIR / protocol / "published_vs_evaluated.svg"


def taxonomy_page(stage: str) -> PurePosixPath:
    """``leaderboard/taxonomy/<stage>.md``: the taxonomy entries of one pipeline stage (taxonomy/README.md keeps
    the tables; one page of 1,000 entries is more than GitHub renders)."""
    return TAXONOMY_PAGES_DIR / f"{stage}.md"


def group_page(group: Group, number: int = 1) -> PurePosixPath:
    """``leaderboard/groups/<dataset>_<US|S>.md``, then ``..._2.md``, ...: every row of a group's tables, in pages
    (the README shows the first rows)."""
    dataset, kind = group
    return GROUPS_DIR / (f"{dataset}_{kind}.md" if number == 1 else f"{dataset}_{kind}_{number}.md")


def relative_link(from_file: PurePosixPath, to_file: PurePosixPath, anchor: str | None = None) -> str:
    """A link from the page *from_file* to *to_file* (both relative to the root), with an optional anchor."""
    source, target_file = str(from_file), str(to_file)  # string arithmetic: no Path objects per link
    name = posixpath.basename(target_file)
    folder = _relative_folder(posixpath.dirname(source) or ".", posixpath.dirname(target_file) or ".")
    target = f"{folder}/{name}" if folder != "." else name
    return f"{target}#{anchor}" if anchor else target


@functools.lru_cache(maxsize=256)
def _relative_folder(from_folder: str, to_folder: str) -> str:
    return PurePosixPath(os.path.relpath(to_folder, from_folder)).as_posix()


def as_path(path: PurePosixPath) -> Path:
    return Path(*path.parts)
