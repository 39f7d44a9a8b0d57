"""``apb site`` without a browser: the downloads hold every record as committed, the pages load nothing from
elsewhere, and the output folder is only ever replaced when an earlier ``apb site`` wrote it."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from evaluator.cli import main
from evaluator.record.records import iter_record_paths, read_record, wilson_interval
from evaluator.registry.home import home
from tests.support.leaderboard_repo import THREE_APS, add_evaluated, make_repo


def test_downloads_hold_every_record_and_pages_reference_only_their_own_files(tmp_path, capsys):
    root = make_repo(tmp_path)
    add_evaluated(root, f"{THREE_APS[0]}_R18_CIFAR10_US_90")
    add_evaluated(root, f"{THREE_APS[1]}_R18_CIFAR10_US_95", protocol="smoke-v1")  # never shown
    out = tmp_path / "site"
    assert main(["site", "--root", str(root), "--out", str(out)]) == 0
    shown = [read_record(p) for p in iter_record_paths(root) if read_record(p)["protocol"] != "smoke-v1"]
    assert json.loads((out / "data/records.json").read_text()) == shown
    with open(out / "data/records.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model_key"] for r in rows] == [r["model_key"] for r in shown] and len(rows) == 19
    assert {r["ap_name"] for r in rows} == {"HARP", "HYDRA", "RADMM"}
    for row, record in zip(rows, shown):  # the 95% intervals of the JSON in the CSV; a published number's from it and n
        for metric in ("clean_accuracy", "aa_robust_accuracy", "hofmn_robust_accuracy", "worst_case_robust_accuracy"):
            value, n = (record.get("metrics") or {}).get(metric), record["n_samples"]
            expected = (record.get("intervals") or {}).get(metric) or (
                [""] * 2 if value is None else [round(100 * b, 4) for b in wilson_interval(round(value * n / 100), n)])
            assert [row[f"{metric}_low"], row[f"{metric}_high"]] == [str(v) for v in expected]
    assert rows[[r["source"] for r in rows].index("evaluated")]["aa_robust_accuracy_low"] != ""
    published = next(r for r in rows if r["model_key"] == "HARP_Zhao2023Holistic_R18_CIFAR10_US_90"
                     and r["source"] == "published")
    assert published["aa_robust_accuracy"] == "45.4"  # 4,540 of 10,000: Wilson 44.43-46.38 (by hand)
    assert [round(float(published[f"aa_robust_accuracy_{end}"]), 2) for end in ("low", "high")] == [44.43, 46.38]
    assert published["hofmn_robust_accuracy_low"] == ""  # no number, no interval
    for page in ("index.html", "compare.html", "analysis.html"):
        html = (out / page).read_text()
        assert "Content-Security-Policy" in html and "default-src 'self'" in html
        for reference in re.findall(r'(?:src|<link [^>]*href)="([^"]+)"', html):  # what the page loads
            assert reference.startswith("data:") or (out / reference).is_file(), (page, reference)
        links = re.findall(r'<a href="([^"]+)"', html)  # what a reader may follow: own files, the paper, the repository
        assert all((out / link.split("#")[0]).is_file() or link == home().paper_url
                   or link.startswith(home().repository_url) for link in links), links
        assert f"{home().repository_url}/blob/HEAD/docs/leaderboard.md#tables" in links  # no --source-url: home.yaml
    assert (out / "assets/plotly.min.js").stat().st_size > 1_000_000
    assert list((out / "data/curves").iterdir()) == [out / "data/curves/linf-8-255-v1__CIFAR10_US_R18_90.js"]
    rows_js = (out / "data/rows.js").read_text()
    assert rows_js.startswith("window.APB = {") and "smoke-v1" not in rows_js and "</" not in rows_js
    # a second run replaces its own output; a folder apb site did not write is refused untouched
    assert main(["site", "--root", str(root), "--out", str(out)]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["site", "--root", str(root), "--out", str(other)]) == 1
    assert "is not empty" in capsys.readouterr().err and (other / "notes.txt").read_text() == "keep"


def test_box_statistics_by_hand_and_large_panels_are_summarized():
    from evaluator.site import POINTS_CAP, analysis_panel, box_statistics

    # quartiles by linear interpolation (plotly's default): 2, 3, 4; whiskers reach 1.5 IQR = 3: 100 is outside
    assert box_statistics([4, 1, 100, 3, 2]) == {"n": 5, "q1": 2.0, "median": 3.0, "q3": 4.0, "lowerfence": 1.0,
                                                  "upperfence": 4.0, "mean": 22.0}
    small = analysis_panel("Stage", "p", {("a", "CIFAR10"): [1.0, 2.0]})
    assert small == {"dimension": "Stage", "protocol": "p", "values": [["a", "CIFAR10", [1.0, 2.0]]]}
    large = analysis_panel("Stage", "p", {("a", "CIFAR10"): [float(i % 7) for i in range(POINTS_CAP + 1)]})
    assert "values" not in large and large["summary"][0][2]["n"] == POINTS_CAP + 1


def test_the_site_s_metric_columns_come_from_metrics_yaml():
    """The rows' metric fields and the columns site.js draws are metrics.yaml's views.site, in display order:
    a metric added there adds a field and a column, and shifts no other field."""
    from evaluator.record.records import METRIC_TABLE, METRICS
    from evaluator.site import ROW_FIELDS, headline_field, site_metrics

    fields = [METRIC_TABLE[m].views["site"] for m in METRICS]
    start = ROW_FIELDS.index("source") + 1
    assert list(ROW_FIELDS[start:start + len(METRICS)]) == fields == ["clean", "aa", "hofmn", "worst"]
    assert site_metrics() == [["clean_accuracy", "clean", "clean"], ["aa_robust_accuracy", "aa", "AA"],
                              ["hofmn_robust_accuracy", "hofmn", "HO-FMN"],
                              ["worst_case_robust_accuracy", "worst", "worst case"]]
    assert headline_field() == "aa"
    script = (Path(__file__).parents[1] / "evaluator/site/site.js").read_text()
    assert not re.search(r'FIELD\.(clean|aa|hofmn|worst)\b|"HO-FMN"|"worst case"', script)  # no hand-written list
