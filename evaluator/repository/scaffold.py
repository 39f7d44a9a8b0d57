"""``apb new``: the two files of a new submission, ``submissions/<ap_key>/taxonomy.json`` and a commented
``manifest.yaml``, from the templates in ``evaluator/templates/``. Existing files are never overwritten."""
from __future__ import annotations

import re
import string
from pathlib import Path

from evaluator.errors import APBError, Problem
from evaluator.paths import MANIFEST, PACKAGE_DIR, TAXONOMY, ap_dir

TEMPLATES_DIR = PACKAGE_DIR / "templates"
SCAFFOLD_FILES = (TAXONOMY, MANIFEST)
_KEY_PARTS = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9]*)_[A-Za-z]+(?P<year>[0-9]{4})")


def scaffold_files(ap_key: str) -> dict[str, str]:
    """File name -> text of a new submission for *ap_key* (name and year taken from the key)."""
    from evaluator.registry.datasets import dataset_names
    from evaluator.registry.model_keys import is_ap_key
    from evaluator.registry.variants import architecture_names

    match = _KEY_PARTS.match(ap_key)
    if not is_ap_key(ap_key) or match is None:
        raise APBError(Problem("ap_key", f"{ap_key!r} is not <Name>_<FirstAuthor><Year><FirstTitleWord> (ASCII, "
                                         "e.g. HYDRA_Sehwag2020Hydra)"))
    values = {"ap_key": ap_key, "name": match["name"], "year": match["year"],
              "architectures": " | ".join(architecture_names()), "datasets": " | ".join(dataset_names())}
    return {name: string.Template((TEMPLATES_DIR / name).read_text(encoding="utf-8")).substitute(values)
            for name in SCAFFOLD_FILES}


def write_scaffold(root: Path, ap_key: str) -> list[Path]:
    """Write the new submission's files under ``<root>/submissions/<ap_key>/``. An AP already in the taxonomy
    (``taxonomy.json`` there, no manifest) gets its manifest only, its taxonomy entry left alone; refuses when
    both exist."""
    from evaluator.untrusted.safeio import atomic_write_bytes

    files = scaffold_files(ap_key)
    folder = ap_dir(root, ap_key)
    if (folder / TAXONOMY).is_file() and not (folder / MANIFEST).exists():
        files = {MANIFEST: files[MANIFEST]}
    existing = [folder / name for name in files if (folder / name).exists()]
    if existing:
        raise APBError([Problem(str(path), "already exists; `apb new` never overwrites: edit it, or remove it first")
                        for path in existing])
    written = []
    for name, text in files.items():
        atomic_write_bytes(folder / name, text.encode("utf-8"))
        written.append(folder / name)
    return written


def write_manifest_scaffold(manifest: Path) -> Path:
    """Write the commented manifest of the AP named by *manifest*'s folder (``apb prepare --ap`` on an AP that
    has none yet); never overwrites."""
    from evaluator.untrusted.safeio import atomic_write_bytes

    if manifest.exists():
        raise APBError(Problem(str(manifest), "already exists; `apb new` never overwrites: edit it, or remove it first"))
    atomic_write_bytes(manifest, scaffold_files(manifest.parent.name)[MANIFEST].encode("utf-8"))
    return manifest
