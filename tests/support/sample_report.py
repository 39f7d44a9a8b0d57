"""The sample bot comment shown in CONTRIBUTING.md, made by the real collect + report code from seeded records.

    python -m tests.support.sample_report   # prints it, quoted as CONTRIBUTING.md shows it
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from evaluator.ci.collect import collect, leg_folder
from evaluator.ci.report import render_report
from evaluator.ci.report_input import load_report_input
from tests.support.ci_records import PROTOCOL, sha, write_evaluated

AP = "HYDRA_Sehwag2020Hydra"
HEAD = "4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
MODELS = {f"{AP}_R18_CIFAR10_US_90": "1", f"{AP}_R18_CIFAR10_US_95": "2", f"{AP}_V16_CIFAR10_US_90": "3"}
LOG = """HYDRA_Sehwag2020Hydra_V16_CIFAR10_US_90: fetch ok, sha256 verified
compliance  FAILED: the state dict does not load strictly into the base vgg16
    missing:    classifier.weight
    unexpected: classifier.0.weight
error: HYDRA_Sehwag2020Hydra_V16_CIFAR10_US_90: the check failed; nothing was evaluated
"""


def sample_plan() -> dict:
    legs = [{"model_key": key, "ap_key": AP, "sha256": sha(c), "protocol": PROTOCOL, "shard": None,
             "cache_key": f"apb-{PROTOCOL}-{key}-{sha(c)}-000000000000", "leg": key} for key, c in MODELS.items()]
    claims = {f"{AP}_R18_CIFAR10_US_90": {"clean_accuracy": 79.5, "aa_robust_accuracy": 47.5},
              f"{AP}_R18_CIFAR10_US_95": {"clean_accuracy": 80.0, "aa_robust_accuracy": 49.0}}
    skipped = [{"model_key": f"{AP}_V16_CIFAR10_US_95", "sha256": None,
                "reason": "no sha256: it cannot be evaluated; run `apb lock` to pin one"}]
    return {"format": "apb-ci-plan/1", "protocol": PROTOCOL, "base": "b" * 40, "head": HEAD, "merge_base": "b" * 40,
            "evaluate": True, "reason": "3 model(s) to evaluate in 3 leg(s)",
            "changed_files": [f"submissions/{AP}/manifest.yaml"], "blocked_files": [],
            "entries": {"added": [f"{AP}_R18_CIFAR10_US_95", f"{AP}_V16_CIFAR10_US_90", f"{AP}_V16_CIFAR10_US_95"],
                        "changed": [f"{AP}_R18_CIFAR10_US_90"], "removed": [],
                        "untouched": [f"{AP}_R18_CIFAR10_US_99"]},
            "models": {key: {"ap_key": AP, "sha256": sha(c), "url": "https://example.org/x.pt", "sparsity": 90,
                             "claimed": claims.get(key)} for key, c in MODELS.items()},
            "include": legs, "skipped": skipped, "problems": []}


def sample_report() -> str:
    plan = sample_plan()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        artifacts, legs = tmp_path / "artifacts", tmp_path / "legs"
        (artifacts / "apb-plan").mkdir(parents=True)
        (artifacts / "apb-plan" / "plan.json").write_text(json.dumps(plan))
        (artifacts / "apb-plan" / "validation.json").write_text(json.dumps({"ok": True, "problems": []}))
        keys = list(MODELS)
        for key in keys:
            leg_folder(legs, key).mkdir(parents=True)
        write_evaluated(leg_folder(legs, keys[0]), keys[0], sha("1"), n=10000, wall=3723.0)
        write_evaluated(leg_folder(legs, keys[1]), keys[1], sha("2"), seed=1, n=10000, wall=3540.0, flags=[
            {"code": "hofmn-weaker-than-aa", "message": "AutoAttack broke 2.31% of the samples within eps where "
                                                        "HO-FMN did not (limit 2.00%)"}])
        (leg_folder(legs, keys[2]) / "evaluate.log").write_text(LOG)
        collect(plan, legs, artifacts / "apb-records")
        report = load_report_input("evaluation", HEAD, artifacts,
                                   run_url="https://github.com/OWNER/REPO/actions/runs/123456789",
                                   root=Path(__file__).resolve().parents[2])
        return render_report(report)


def quoted(text: str) -> str:
    """*text* as a Markdown block quote (how CONTRIBUTING.md shows the comment)."""
    return "\n".join(f"> {line}".rstrip() for line in text.rstrip("\n").splitlines()) + "\n"


if __name__ == "__main__":
    print(quoted(sample_report()), end="")
