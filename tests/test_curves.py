"""Security curves: robust accuracy semantics (0, inf, the eps boundary), the figure's content, and PNG bytes
that do not change between renders, processes or user matplotlib settings."""
from __future__ import annotations

import os
from fractions import Fraction
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from evaluator.record.records import PerSample
from evaluator.registry.norms import threat_model
from evaluator.render.curves import (curve_summary, eps_label, legend_label, png_bytes, robust_accuracy, save_png,
                                     security_curve)

REPO = Path(__file__).resolve().parents[1]
EPS = 8 / 255
LINF_8 = threat_model("Linf", Fraction(8, 255))
TOLERANCE = LINF_8.tolerance
EPS_GRID = LINF_8.curve.budgets


def sample_distances(seed: int, n: int = 400, zeros: int = 40, infs: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    found = rng.exponential(0.03, n - zeros - infs).astype(np.float32)
    return np.concatenate([np.zeros(zeros, np.float32), found, np.full(infs, np.inf, np.float32)])


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG file, checking signature and CRCs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, payload = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + payload) == crc
        chunks.append((kind, payload))
        offset += 12 + length
    return chunks


def test_robust_accuracy_counts_zero_as_broken_inf_as_robust_and_the_boundary_as_broken():
    distances = np.array([0.0, 0.01, EPS, 0.05, np.inf], dtype=np.float32)
    assert robust_accuracy(distances, 0.0, TOLERANCE) == pytest.approx(4 / 5)  # only the misclassified one is broken
    assert robust_accuracy(distances, EPS, TOLERANCE) == pytest.approx(2 / 5)  # distance == eps is not robust (d > eps)
    assert robust_accuracy(distances, 1e6, TOLERANCE) == pytest.approx(1 / 5)  # inf stays robust at every budget
    assert list(robust_accuracy(distances, np.array([0.0, 0.02, 0.1]), TOLERANCE)) == pytest.approx([0.8, 0.6, 0.2])


def test_robust_accuracy_at_eps_equals_the_per_sample_hofmn_robust_flag():
    distances = sample_distances(1)
    per_sample = PerSample(np.arange(distances.size), clean_correct=distances > 0,
                           aa_robust=distances > 0, hofmn_distance=distances)
    assert robust_accuracy(distances, EPS, TOLERANCE) == per_sample.hofmn_robust(LINF_8).mean()


def test_curve_summary_is_the_robust_accuracy_at_every_k_over_1020():
    distances = sample_distances(3)
    summary = curve_summary(distances, LINF_8)
    assert summary.dtype == np.uint16 and summary.shape == EPS_GRID.shape and EPS_GRID[-1] == pytest.approx(38 / 255)
    assert LINF_8.curve.index(EPS) == 32 and EPS_GRID[32] == EPS
    assert summary[32] == round(10000 * float(robust_accuracy(distances, EPS, TOLERANCE)))
    assert summary[0] == round(10000 * float((distances > 0).mean())) and list(summary) == sorted(summary, reverse=True)
    # at every grid budget, and for distances right at the float32 budgets (the boundary cases)
    at_budgets = np.asarray(EPS_GRID + 1e-6, dtype=np.float32)
    for values in (distances, at_budgets, np.nextafter(at_budgets, np.float32(1)), np.array([np.inf, 0.0, 1.0])):
        expected = np.rint(10000 * robust_accuracy(values, EPS_GRID, TOLERANCE)).astype(np.uint16)
        assert np.array_equal(curve_summary(values, LINF_8), expected)


def test_legend_names_accuracy_at_the_marked_eps_and_samples_without_adversarial():
    distances = np.array([0.0, 0.5, np.inf, np.inf], dtype=np.float32)
    assert legend_label("HYDRA", distances, LINF_8) == "HYDRA – 75.00% (2 with no adversarial found)"
    assert legend_label("HARP", np.array([0.0, 0.5]), LINF_8) == "HARP – 50.00%"
    assert eps_label(8 / 255) == "8/255" and eps_label(0.1) == "0.1"


@pytest.mark.parametrize("bad", [np.array([]), np.array([0.1, np.nan]), np.array([-0.1, 0.2])])
def test_bad_distances_are_refused(bad):
    with pytest.raises(ValueError, match="distances of 'x'"):
        security_curve({"x": bad}, LINF_8)


def test_figure_draws_one_curve_per_model_the_marked_line_and_the_axes_ranges():
    named = {"A": sample_distances(1), "B": sample_distances(2, infs=0)}
    figure = security_curve(named, LINF_8, title="CIFAR10 · ResNet18 90%")
    axes = figure.axes[0]
    labels = [legend_label(name, distances, LINF_8) for name, distances in named.items()]
    curves = [line for line in axes.get_lines() if line.get_label() in labels]
    assert [line.get_label() for line in curves] == labels
    for line, distances in zip(curves, named.values()):
        x, y = line.get_data()
        assert x[0] == 0.0 and x[-1] == pytest.approx(38 / 255)
        assert np.array_equal(y, 100.0 * robust_accuracy(distances, x, TOLERANCE))
    marked = [line for line in axes.get_lines() if np.allclose(line.get_xdata(), EPS)]
    assert len(marked) == 1
    assert axes.get_xlim() == pytest.approx((0.0, 38 / 255)) and axes.get_ylim() == pytest.approx((0.0, 100.0))
    assert axes.get_ylabel() == "robust accuracy (%)" and axes.get_xlabel() == "Linf perturbation budget ε"
    assert [t.get_text() for t in axes.get_xticklabels()][:3] == ["0", "4/255", "8/255"]
    assert axes.get_title() == "CIFAR10 · ResNet18 90%"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [line.get_label() for line in curves]


def test_png_is_byte_identical_across_renders_and_has_no_metadata(tmp_path):
    named = {"A": sample_distances(1), "B": sample_distances(2)}
    first = png_bytes(security_curve(named, LINF_8, title="t"))
    second = png_bytes(security_curve(named, LINF_8, title="t"))
    assert first == second
    kinds = [kind for kind, _ in png_chunks(first)]
    assert not {b"tEXt", b"iTXt", b"zTXt", b"tIME"} & set(kinds), kinds  # no software name, no timestamp
    path = save_png(security_curve(named, LINF_8, title="t"), tmp_path / "sub" / "curve.png")
    assert path.read_bytes() == first
    assert png_bytes(security_curve(named, LINF_8, title="other")) != first  # the bytes do depend on the content


SUBPROCESS_RENDER = """
import hashlib, sys
import numpy as np
from fractions import Fraction
from evaluator.registry.norms import threat_model
from evaluator.render.curves import png_bytes, security_curve
distances = np.load(sys.argv[1])
data = png_bytes(security_curve({"A": distances["a"], "B": distances["b"]}, threat_model("Linf", Fraction(8, 255)),
                                title="t"))
print(hashlib.sha256(data).hexdigest(), "torch" in sys.modules)
"""


def test_png_bytes_do_not_depend_on_the_process_or_the_users_matplotlibrc(tmp_path):
    import hashlib

    np.savez(tmp_path / "d.npz", a=sample_distances(1), b=sample_distances(2))
    here = hashlib.sha256(png_bytes(security_curve({"A": sample_distances(1), "B": sample_distances(2)}, LINF_8,
                                                   title="t"))).hexdigest()
    config = tmp_path / "mplconfig"
    config.mkdir()
    (config / "matplotlibrc").write_text("font.size: 20\nlines.linewidth: 6\nfigure.dpi: 300\nfont.family: serif\n"
                                         "axes.linewidth: 4\naxes.facecolor: 0.5\nxtick.major.size: 12\n"
                                         "legend.framealpha: 0.1\nsavefig.pad_inches: 1\n")
    env = {**os.environ, "MPLCONFIGDIR": str(config), "MPLBACKEND": "pdf"}
    out = subprocess.run([sys.executable, "-c", SUBPROCESS_RENDER, str(tmp_path / "d.npz")], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [here, "False"]  # same bytes under a hostile matplotlibrc; torch never imported


def test_curve_band_is_the_wilson_interval_of_the_samples_at_each_budget():
    """A published-style curve of 128 samples, half of them never broken: its band is Wilson(64, 128), about
    ±8.5 points, at every budget; at 10,000 samples about ±1."""
    from evaluator.record.records import wilson_interval
    from evaluator.render.curve_set import PERCENT_AXIS, curve_band
    from evaluator.render.rows import Row
    from evaluator.render.svg import y_pixels

    def row(n: int) -> Row:
        distances = np.where(np.arange(n) < n // 2, np.inf, 0.0).astype(np.float32)
        return Row("m", "A", "CIFAR10", "US", "resnet18", 90, "published", "p", n, (None,) * 4, (), None,
                   curve_summary(distances, LINF_8).tobytes(), None, (n, n - n // 2, n // 2), None, None, None)

    for n, width in ((128, 8.5), (10_000, 1.0)):
        low, high = wilson_interval(n // 2, n)
        assert 100 * (high - low) / 2 == pytest.approx(width, abs=0.05)
        ys = {int(point.split(",")[1]) for point in curve_band(row(n), LINF_8).split()}
        assert ys == {int(y_pixels(np.array([100 * high]), PERCENT_AXIS)[0]),
                      int(y_pixels(np.array([100 * low]), PERCENT_AXIS)[0])}
    assert curve_band(Row("m", "A", "CIFAR10", "US", "resnet18", 90, "published", "p", 0, (None,) * 4, (), None,
                          None, None, None, None, None, None), LINF_8) is None


def test_pareto_front_is_the_best_accuracy_at_each_cost():
    from evaluator.render.curve_set import pareto_front

    points = [(10.0, 30.0, "a"), (20.0, 25.0, "b"), (20.0, 40.0, "c"), (5.0, 10.0, "d"), (40.0, 40.0, "e"),
              (50.0, 41.0, "f"), (5.0, 10.0, "g")]
    # d beats nothing cheaper; a is better than d; b loses to a (more MACs, less accuracy); e ties c at more MACs
    assert [p[2] for p in pareto_front(points)] == ["d", "a", "c", "f"]
    assert pareto_front([]) == []


def test_the_efficiency_figure_draws_its_pareto_front_as_a_staircase_through_the_front_points():
    """The front is drawn, not only named in the legend: a staircase from the cheapest front point, right at the
    accuracy it reaches, up at the next front point's cost, through every front point and no other."""
    import re

    from evaluator.render.curve_set import efficiency_svg
    from evaluator.render.tables import ApLabel

    points = [(10e6, 30.0, "A"), (20e6, 25.0, "B"), (40e6, 35.0, "C"), (80e6, 34.0, "D"), (160e6, 50.0, "E")]
    labels = {key: ApLabel(key, key) for _, _, key in points}
    svg, alt = efficiency_svg({"resnet18": points}, "p", ("CIFAR10", "US"), "AutoAttack", labels)
    markers = [(float(cx), float(cy)) for cx, cy in re.findall(r'<circle cx="([0-9.]+)" cy="([0-9.]+)"', svg)]
    a, _, c, _, e = markers  # the markers' pixels, in the points' order: the front is A, C, E
    staircase = re.findall(r'<polyline [^>]*stroke="#222"[^>]*points="([^"]+)"', svg)
    assert len(staircase) == 1, "the Pareto front is not drawn"
    vertices = [tuple(map(float, vertex.split(","))) for vertex in staircase[0].split()]
    expected = [a, (c[0], a[1]), c, (e[0], c[1]), e]
    assert len(vertices) == len(expected)
    assert [v for vertex in vertices for v in vertex] == pytest.approx([v for p in expected for v in p], abs=0.11)
    assert svg.index("<polyline") < svg.index("<circle")  # under the markers
    assert "Pareto front (best accuracy at each cost): A 10M MACs 30.00%; C 40M MACs 35.00%; E 160M MACs 50.00%" in alt


def test_kendall_tau_b_matches_scipy_and_ranks_share_displayed_ties():
    from scipy.stats import kendalltau

    from evaluator.render.stability import competition_ranks, kendall_tau_b

    rng = np.random.default_rng(3)
    for x, y in ((rng.random(40), rng.random(40)), (np.round(rng.random(30), 1), np.round(rng.random(30), 1)),
                 ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])):
        assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert np.isnan(kendall_tau_b([1.0, 1.0], [1.0, 2.0]))
    assert competition_ranks([50.0, 49.999, 40.0, 60.0]) == [2, 2, 4, 1]


def test_competition_ranks_count_the_values_shown_higher():
    from evaluator.render.stability import competition_ranks

    rng = np.random.default_rng(7)
    for size in (0, 1, 2, 50, 300):
        values = (np.round(rng.random(size) * 20, 3) + rng.choice([0.0, 0.001, 0.004], size)).tolist()  # ties
        shown = [round(v, 2) for v in values]
        assert competition_ranks(values) == [1 + sum(other > mine for other in shown) for mine in shown]


def test_curve_measures_read_the_curve_at_each_budget_and_average_it_up_to_16_255():
    from evaluator.render.stability import curve_measures

    distances = np.full(100, np.inf, np.float32)
    distances[:60] = 0.02  # broken between 4/255 (0.0157) and 8/255 (0.0314)
    at4, at8, at16, area = curve_measures(curve_summary(distances, LINF_8), LINF_8)[0]
    assert (at4, at8, at16) == (100.0, 40.0, 40.0)
    assert area == pytest.approx(40 + 60 * 0.02 / (16 / 255), abs=0.5)  # 100% up to 0.02, then 40%


def test_column_figures_show_the_top_of_the_autoattack_table_in_its_order_not_the_hofmn_order(tmp_path):
    """Nine APs in one column, AutoAttack and HO-FMN in opposite orders: the figure shows the AutoAttack table's
    top 8 (its ranks in the legend), not the 8 best at the marked ε; a model page's grey curves are that table's
    top 5."""
    import re

    from evaluator.render import render_all
    from evaluator.render.curve_set import CONTEXT_K, TOP_K
    from tests.support.leaderboard_repo import PROTOCOL, add_evaluated, make_repo

    aps = ("HARP_Zhao2023Holistic", "HYDRA_Sehwag2020Hydra", "RADMM_Ye2019Adversarial", "MAD_Lee2022Masking",
           "PwoA_Jian2022Pruning", "Li20_Li2020Towards", "RST_Fu2021Drawing", "TwinRep_Li2023Learning",
           "FlyingBird_Chen2021Sparsity")
    assert len(aps) == TOP_K + 1
    root = make_repo(tmp_path, aps)
    n = 10_000
    names = []
    for i, ap_key in enumerate(aps):  # AutoAttack: aps[0] best; HO-FMN at 8/255: aps[-1] best
        clean = np.arange(n) < 8000
        distances = np.where(np.arange(n) < 2000 + 100 * i, np.inf, np.where(clean, 0.003, 0.0)).astype(np.float32)
        add_evaluated(root, f"{ap_key}_R18_CIFAR10_US_90", flags=False,
                      per_sample=PerSample(np.arange(n), clean_correct=clean, aa_robust=np.arange(n) < 3000 - 100 * i,
                                           hofmn_distance=distances))
        names.append(ap_key.split("_")[0])
    files = render_all(root)
    figure = files[Path(f"leaderboard/curves/{PROTOCOL}/CIFAR10_US_R18_90.svg")].decode()
    legend = re.findall(r">(?:(#\S+) )?(\S+) – ([0-9.]+)%<", figure)
    assert [name for _, name, _ in legend] == names[:TOP_K]  # not names[:0:-1], the 8 best at 8/255
    assert [rank for rank, _, _ in legend] == [f"#{i + 1}" for i in range(TOP_K)]
    assert [float(value) for _, _, value in legend] == [20.0 + i for i in range(TOP_K)]  # HO-FMN at 8/255, rising
    assert ">order: AutoAttack table<" in figure and ">its top 8 of 9<" in figure  # the legend's title lines
    page = files[Path(f"leaderboard/curves/models/{aps[-1]}/{aps[-1]}_R18_CIFAR10_US_90__{PROTOCOL}.svg")].decode()
    shown = re.findall(r">(#\S+) (\S+) – [0-9.]+%<", page)
    assert shown == [(f"#{i + 1}", names[i]) for i in range(CONTEXT_K)] + [("#9", names[-1])]
    readme = files[Path("leaderboard/README.md")].decode()
    assert "the models of the top 8 APs of the AutoAttack table above, in its order" in readme


def test_a_figure_text_never_claims_more_than_its_room():
    """A text wider than its room (as DejaVu Sans sets it) is squeezed to exactly the room; one that fits keeps
    its own width. The widths are the font's: 'MMMM' at 10 px is 34.5 px, bold 'WWWW' 44.1 px (Chromium lays
    them out at 34.5 and 44.1)."""
    import re

    from evaluator.render.svg import _text, text_width

    assert (round(text_width("MMMM", 10), 1), round(text_width("WWWW", 10, bold=True), 1)) == (34.5, 44.1)
    assert text_width("\u4e00", 10) == text_width("W", 10, bold=True)  # unlisted: the widest listed (bold W)
    assert text_width("i" * 10, 10) < text_width("M" * 10, 10) / 2
    rng = np.random.default_rng(5)
    for _ in range(300):
        text = "".join(rng.choice(list("MWil1_-ab ·…%"), size=int(rng.integers(1, 120))))
        size, room, bold = float(rng.choice([9, 9.5, 10, 12.5])), float(rng.integers(20, 640)), bool(rng.integers(2))
        element = _text(0, 0, text, size=size, bold=bold, room=room)
        length = re.search(r'textLength="([0-9.]+)" lengthAdjust="spacingAndGlyphs"', element)
        assert (length is None) == (text_width(text, size, bold) <= room), element
        assert length is None or float(length.group(1)) == pytest.approx(room, abs=0.05)


def test_the_figure_font_table_is_dejavu_sans():
    """figure_font.yaml states DejaVu Sans' advances: every value equals the font file's (matplotlib's copy)."""
    import os

    import matplotlib
    from matplotlib.ft2font import FT2Font

    try:
        from matplotlib.ft2font import LoadFlags
        no_scale = LoadFlags.NO_SCALE
    except ImportError:  # matplotlib < 3.10
        from matplotlib.ft2font import LOAD_NO_SCALE as no_scale

    from evaluator.untrusted.safeio import load_yaml

    table, _ = load_yaml(REPO / "evaluator" / "render" / "figure_font.yaml")
    widest = 0
    for face, file in (("regular", "DejaVuSans.ttf"), ("bold", "DejaVuSans-Bold.ttf")):
        font = FT2Font(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", file))
        assert font.units_per_EM == table["units_per_em"]
        for char, advance in table[face].items():
            assert font.load_char(ord(char), flags=no_scale).horiAdvance == advance, (face, char)
            widest = max(widest, advance)
        assert set(map(chr, range(32, 127))) <= set(table[face])
    assert table["fallback"] == widest


def test_fitted_text_keeps_head_and_tail_and_fits_its_room():
    """A legend line keeps its rank and value and a title its protocol: only the middle gives way, with one
    ellipsis, the whole fits its room, and more room never keeps less."""
    from evaluator.render.svg import fitted, text_width

    rng = np.random.default_rng(11)
    for _ in range(300):
        middle = "".join(rng.choice(list("MWil1_ abHOR"), size=int(rng.integers(1, 80))))
        head, tail, size, bold = "#12 ", " – 41.85%", float(rng.choice([9.5, 12.5])), bool(rng.integers(2))
        keep_end = bool(rng.integers(2))
        room = text_width(head + "M…" + tail, size, bold) + float(rng.integers(0, 400))
        text = fitted(head, middle, tail, room, size, bold, keep_end=keep_end)
        assert text.startswith(head) and text.endswith(tail) and text_width(text, size, bold) <= room
        if text == head + middle + tail:
            continue
        kept = text[len(head):len(text) - len(tail)]
        assert kept.count("…") == 1 and len(kept) - 1 < len(middle)
        longer = fitted(head, middle, tail, text_width(head + kept + "MMM" + tail, size, bold) + 50, size, bold,
                        keep_end=keep_end)
        assert len(longer) >= len(text)  # more room never keeps less
    assert fitted("#1 ", "HARP", " – 41.85%", 163, 9.5, True) == "#1 HARP – 41.85%"
    assert fitted("", "W" * 40 + "_R18_CIFAR10_US_90", "", 200, 12.5, keep_end=True).endswith("_US_90")
