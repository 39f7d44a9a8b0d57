"""The security-curve PNGs of the leaderboard: for each leaderboard protocol and each (dataset, structure,
architecture, sparsity) with per-sample distances, one figure comparing its APs."""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Mapping

import numpy as np
from tqdm import tqdm

from evaluator.render.curves import png_bytes, robust_accuracy, security_curve
from evaluator.render.inputs import Result, Results
from evaluator.render.layout import curve_file, group_of, group_title
from evaluator.render.tables import ApLabel, column_title


def curve_members(results: Results) -> dict[PurePosixPath, tuple[str, list[Result]]]:
    """Curve file -> (protocol, evaluated results with a sidecar that it compares), sorted by path."""
    members: dict[PurePosixPath, tuple[str, list[Result]]] = {}
    for protocol in sorted(results.evaluated):
        for model_key in sorted(results.evaluated[protocol]):
            result = results.evaluated[protocol][model_key]
            if result.record.get("per_sample"):
                path = curve_file(protocol, group_of(result.key), result.key.architecture, result.key.sparsity)
                members.setdefault(path, (protocol, []))[1].append(result)
    return dict(sorted(members.items()))


def render_curves(results: Results, labels: Mapping[str, ApLabel],
                  marked_eps: Mapping[str, float]) -> dict[PurePosixPath, bytes]:
    """PNG bytes of every curve; legend entries ranked by robust accuracy at the protocol's eps, then name."""
    members = curve_members(results)
    rendered = {}
    for path, (protocol, group) in tqdm(members.items(), desc="security curves", unit="png", disable=None):
        eps = marked_eps[protocol]
        named = {labels[r.key.ap_key].name: results.per_sample(r).hofmn_distance for r in group}
        order = sorted(named, key=lambda name: (-float(robust_accuracy(named[name], eps)), name))
        first = group[0].key
        title = (f"{group_title(group_of(first))} · {column_title((first.architecture, first.sparsity))} · "
                 f"{protocol}")
        figure = security_curve({name: np.asarray(named[name]) for name in order}, marked_eps=eps, title=title)
        rendered[path] = png_bytes(figure)
    return rendered
