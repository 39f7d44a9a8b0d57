"""Everything ``apb leaderboard`` generates, rendered in memory from the repository's data.

:func:`render_all` returns ``{path relative to the root: bytes}`` for ``leaderboard/README.md``, the
per-model pages ``leaderboard/models/<model_key>.md``, the security curves
``leaderboard/curves/<protocol>/<dataset>_<US|S>_<R18|V16>_<sparsity>.png`` and ``taxonomy/README.md``.
Same data, same bytes: iteration is sorted everywhere and nothing reads the clock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from evaluator.errors import APBError, Problem

GENERATED_DIRS = ("leaderboard",)  # every file under these is generated (and removed when no longer rendered)


def render_all(root: Path, *, protocols: Collection[str] | None = None) -> dict[Path, bytes]:
    """Render every generated file of the repository at *root*.

    Evaluated records are shown for protocols marked ``leaderboard: true``; *protocols* overrides that
    choice (the demo renders its ``smoke-v1`` records this way). Published records are always shown.
    """
    from evaluator.protocol import list_protocols
    from evaluator.render.curve_set import render_curves
    from evaluator.render.inputs import load_results
    from evaluator.render.labels import ap_labels
    from evaluator.render.layout import LEADERBOARD_README, TAXONOMY_README, as_path, model_page
    from evaluator.render.pages import pages_to_render, render_model_page
    from evaluator.render.readme import render_readme
    from evaluator.render.taxonomy_tables import render_taxonomy_readme
    from evaluator.submissions import iter_taxonomies
    from evaluator.taxonomy import load_vocabulary

    root = Path(root)
    settings = {protocol.id: protocol for protocol in list_protocols()}
    if protocols is not None:
        unknown = sorted(set(protocols) - set(settings))
        if unknown:
            raise APBError(Problem("apb leaderboard", f"unknown protocol(s) {', '.join(unknown)}; choose from "
                                                      f"{', '.join(sorted(settings))}", field="protocols"))

    def shown(protocol: str) -> bool:
        if protocol not in settings:
            raise APBError(Problem("evaluator/protocols", f"records name protocol {protocol!r}, which has no "
                                                          f"evaluator/protocols/{protocol}.yaml; fix the records' "
                                                          "protocol field", field="protocol"))
        return settings[protocol].leaderboard

    results = load_results(root, shown, protocols)
    entries, vocabulary = list(iter_taxonomies(root)), load_vocabulary(root)
    labels = ap_labels(entries)
    with_results = {r.key.ap_key for r in results.all()}
    missing = sorted(with_results - set(labels))
    if missing:
        raise APBError(Problem("submissions", f"records of {', '.join(missing)} but no taxonomy.json for them; "
                                              "add submissions/<ap_key>/taxonomy.json", field="ap_key"))
    curves = render_curves(results, labels, {p: settings[p].eps for p in results.evaluated})
    descriptions = {protocol.id: protocol.description for protocol in settings.values()}
    files = {LEADERBOARD_README: render_readme(results, labels, set(curves), descriptions).encode("utf-8"),
             TAXONOMY_README: render_taxonomy_readme(entries, vocabulary, with_results).encode("utf-8")}
    for model_key in pages_to_render(results):
        page = render_model_page(model_key, results, labels, set(curves), descriptions)
        files[model_page(model_key)] = page.encode("utf-8")
    files.update(curves)
    return {as_path(path): data for path, data in sorted(files.items())}
