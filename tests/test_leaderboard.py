"""``apb leaderboard``: the published tables reproduce the 154 published cells; evaluated records (in a
temporary copy of a small repository, with real record and sidecar files) add HO-FMN and worst-case tables,
daggers, provenance pages and security curves; smoke records never show; ``--check`` names stale, missing
and extra files; rendering is byte-for-byte repeatable and every generated link resolves."""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest

from evaluator.cli import main
from evaluator.registry.model_keys import parse_model_key
from evaluator.paths import records_dir
from evaluator.record.records import iter_record_paths, read_record, record_stem, wilson_interval, write_record
from evaluator.render import render_all
from tests.support.leaderboard_repo import PROTOCOL, THREE_APS, add_evaluated, efficiency, flags_result, make_repo

REPO = Path(__file__).resolve().parents[1]
SEED_CSV = REPO.parent / "shared" / "seed" / "published-results.csv"
LEADERBOARD = Path("leaderboard/README.md")


# ------------------------------------------------------------------------------------------ markdown parsing

def model_path(model_key: str) -> Path:
    """Where a model's page is generated: in its AP's folder."""
    return Path("leaderboard/models") / parse_model_key(model_key).ap_key / f"{model_key}.md"


def github_slug(heading: str) -> str:
    """GitHub's heading anchor (independent of the code under test): lower case, drop punctuation, spaces to -."""
    return re.sub(r"[^a-z0-9_\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set(re.findall(r'<a id="([^"]+)"></a>', markdown))
    for line in markdown.splitlines():
        if line.startswith("#"):
            slug = github_slug(line.lstrip("#"))
            result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return result


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables(markdown: str) -> list[tuple[str, str, list[dict[str, str]]]]:
    """``(## heading, ### heading, rows as {column: cell})`` of every pipe table."""
    found, section, subsection, lines = [], "", "", markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section, subsection = line[3:], ""
        elif line.startswith("### "):
            subsection = line[4:]
        elif line.startswith("|"):
            header = split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, split_row(lines[i]))))
                i += 1
            found.append((section, subsection, rows))
            continue
        i += 1
    return found


LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def parse_cell(cell: str) -> dict:
    """``[80.54/**43.68**](target)<sub>±0.97</sub>†⚠`` -> clean, robust, link, bold, dagger, flag, spread."""
    spread = re.search(r"<sub>±([0-9.]+)</sub>", cell)
    cell = re.sub(r"<sub>±[0-9.]+</sub>", "", cell)
    bare = cell.rstrip("†⚠")
    match = LINK.fullmatch(bare)
    text = match.group(1) if match else bare
    clean, robust = text.split("/")
    return {"clean": clean, "robust": robust.replace("**", ""), "link": match.group(2) if match else None,
            "bold": "**" in robust, "dagger": "†" in cell[len(bare):], "flag": "⚠" in cell[len(bare):],
            "spread": spread.group(1) if spread else None}


NOT_CELLS = ("#", "AP", "Paper", "Year")


def ap_of(cell: str) -> str:
    """The AP name of a row's AP cell (after its anchor)."""
    cell = re.sub(r'^<a id="[^"]+"></a>', "", cell)
    return LINK.match(cell).group(1) if cell.startswith("[") else cell.split(" (")[0]


def published_cells(readme: str) -> dict[tuple, tuple[str, str]]:
    """(name, dataset, kind, architecture, sparsity) -> (clean, robust) of every published table."""
    cells = {}
    for section, subsection, rows in tables(readme):
        if not subsection.startswith("Published"):
            continue
        dataset, rest = section.split(", ")
        kind = rest[rest.index("(") + 1:-1]
        for row in rows:
            for column, cell in row.items():
                if column in NOT_CELLS or column.startswith("mean") or cell == "-":
                    continue
                architecture, sparsity = column.rstrip("%").split(" ")
                parsed = parse_cell(cell)
                assert not parsed["dagger"] and parsed["link"] is None
                where = (ap_of(row["AP"]), dataset, kind, architecture, int(sparsity))
                cells[where] = (parsed["clean"], parsed["robust"])
    return cells


def check_links(files: dict[Path, bytes], root: Path) -> int:
    """Every relative link of every generated Markdown file reaches a generated or existing file, and its
    anchor a heading there. Returns the number of links checked."""
    checked = 0
    for path, data in files.items():
        if path.suffix != ".md":
            continue
        for _, target in LINK.findall(data.decode()):
            if target.startswith("https://"):
                continue
            file_part, _, anchor = target.partition("#")
            normal = Path(os.path.normpath(path.parent / file_part)) if file_part else path
            assert not normal.is_absolute() and ".." not in normal.parts, f"{path}: {target} leaves the repository"
            hand_written = normal.parts[0] == "docs" and (REPO / normal).is_file()  # the docs every repository has
            assert normal in files or (root / normal).exists() or hand_written, f"{path}: broken link {target}"
            if anchor:
                assert anchor in anchors(files[normal].decode()), f"{path}: {target}: no such anchor"
            checked += 1
    return checked


# ------------------------------------------------------------------------------------------ the real repository

@pytest.fixture(scope="module")
def real() -> dict[Path, bytes]:
    return render_all(REPO)


def committed_published() -> dict[tuple, tuple[str, str]]:
    names = {p.parent.name: read_record_name(p) for p in (REPO / "submissions").glob("*/taxonomy.json")}
    cells = {}
    for path in iter_record_paths(REPO):
        record = read_record(path)
        if record["source"] != "published":
            continue
        key = parse_model_key(record["model_key"])
        architecture = {"resnet18": "ResNet18", "vgg16": "VGG16"}[key.architecture]
        cells[(names[key.ap_key], key.dataset, key.structure_kind, architecture, key.sparsity)] = (
            f"{record['metrics']['clean_accuracy']:.2f}", f"{record['metrics']['aa_robust_accuracy']:.2f}")
    return cells


def read_record_name(taxonomy_json: Path) -> str:
    return read_record(taxonomy_json)["name"]


def test_published_tables_hold_every_committed_published_record(real):
    committed = committed_published()
    assert len(committed) == 154  # the test cannot pass on an empty repository
    assert published_cells(real[LEADERBOARD].decode()) == committed


def test_published_tables_equal_the_seed_csv(real):
    if not SEED_CSV.is_file():
        pytest.skip(f"{SEED_CSV} not present (the seed is outside the repository); the committed records "
                    "are compared in the test above")
    with open(SEED_CSV, newline="") as handle:
        seed = {(row["ap"], row["dataset"], row["structure"], row["architecture"], int(row["sparsity"])):
                (f"{float(row['clean_accuracy']):.2f}", f"{float(row['aa_robust_accuracy']):.2f}")
                for row in csv.DictReader(handle)}
    assert len(seed) == 154
    assert published_cells(real[LEADERBOARD].decode()) == seed


def test_real_repository_rows_are_ranked_bold_is_the_column_best_and_links_resolve(real):
    readme = real[LEADERBOARD].decode()
    for _, subsection, rows in tables(readme):
        means = [row[[c for c in row if c.startswith("mean")][0]] for row in rows]
        ranked = [float(m.split(" ")[0]) for m in means if not m.startswith("–")]
        assert ranked == sorted(ranked, reverse=True)
        assert [m.startswith("–") for m in means] == sorted(m.startswith("–") for m in means)  # unranked last
        for row, mean in zip(rows, means):  # a ranked row has every cell; an unranked one misses some
            cells = [row[c] for c in row if c not in NOT_CELLS and not c.startswith("mean")]
            n = sum(c != "-" for c in [row[k] for k in row if k not in NOT_CELLS and not k.startswith("mean")
                                       and any(r[k] != "-" for r in rows)])
            columns = sum(any(r[k] != "-" for r in rows) for k in row if k not in NOT_CELLS and not k.startswith("mean"))
            assert mean.endswith(f"({n}/{columns})") and (mean.startswith("–") == (n < columns)), (row, cells)
        for column in rows[0]:
            if column in NOT_CELLS or column.startswith("mean"):
                continue
            parsed = [parse_cell(row[column]) for row in rows if row[column] != "-"]
            best = max(float(p["robust"]) for p in parsed)
            assert [p["bold"] for p in parsed] == [float(p["robust"]) == best for p in parsed]
    assert "HO-FMN" not in readme.split("## Contents")[1]  # no evaluated records in the repository yet
    svhn = {ap_of(row["AP"]): row for section, _, rows in tables(readme) if section == "SVHN, unstructured (US)"
            for row in rows}
    assert svhn["RADMM"]["#"] == svhn["MAD"]["#"] == "–" and svhn["Li20"]["#"] != "–"  # the example
    assert svhn["HYDRA"]["Paper"] == "[NeurIPS 2020](https://arxiv.org/pdf/2002.10509.pdf)" and svhn["HYDRA"]["Year"] == "2020"
    assert readme.count("Last updated: no evaluated record yet") == 1
    assert check_links(real, REPO) > 50
    assert set(real) >= {LEADERBOARD, Path("taxonomy/README.md")}


def test_rendering_twice_gives_identical_bytes(real):
    assert render_all(REPO) == real


# ------------------------------------------------------------------------------------------ a small repository

HARP_90 = "HARP_Zhao2023Holistic_R18_CIFAR10_US_90"
HYDRA_90 = "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90"
HYDRA_95 = "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_95"


@pytest.fixture
def evaluated_repo(tmp_path) -> tuple[Path, dict[str, dict]]:
    root = make_repo(tmp_path)
    records = {key: add_evaluated(root, key, seed=i) for i, key in enumerate([HARP_90, HYDRA_90])}
    add_evaluated(root, HYDRA_95, protocol="smoke-v1", seed=7)  # never rendered
    return root, records


def test_evaluated_records_add_tables_daggers_pages_and_curves(evaluated_repo):
    root, records = evaluated_repo
    files = render_all(root)
    readme = files[LEADERBOARD].decode()
    found = {(section, subsection): rows for section, subsection, rows in tables(readme)}
    group = "CIFAR10, unstructured (US)"
    titles = [s for (g, s) in found if g == group]
    assert titles == [f"AutoAttack, protocol `{PROTOCOL}`", f"HO-FMN, protocol `{PROTOCOL}`",
                      f"Worst case (AutoAttack and HO-FMN), protocol `{PROTOCOL}`", "Published (arXiv:2409.01249)"]
    metric_of = {titles[0]: "aa_robust_accuracy", titles[1]: "hofmn_robust_accuracy",
                 titles[2]: "worst_case_robust_accuracy"}
    published = committed_published()
    for title, metric in metric_of.items():
        rows = {ap_of(row["AP"]): row for row in found[(group, title)]}
        for model_key, record in records.items():
            cell = parse_cell(rows[model_key.split("_")[0]]["ResNet18 90%"])
            assert (cell["clean"], cell["robust"]) == (f"{record['metrics']['clean_accuracy']:.2f}",
                                                       f"{record['metrics'][metric]:.2f}")
            assert cell["link"] == f"models/{parse_model_key(model_key).ap_key}/{model_key}.md#evaluated-{PROTOCOL}" \
                and not cell["dagger"]
        if metric == "aa_robust_accuracy":  # published numbers fill the gaps, marked with a dagger
            other = parse_cell(rows["HYDRA"]["ResNet18 95%"])
            assert other["dagger"] and other["link"] is None
            assert (other["clean"], other["robust"]) == published[("HYDRA", "CIFAR10", "US", "ResNet18", 95)]
            assert "RADMM" in rows
        else:  # HO-FMN and worst case exist only for evaluated models
            assert set(rows) == {"HARP", "HYDRA"} and rows["HYDRA"]["ResNet18 95%"] == "-"
    assert "† Published only" in readme
    # the published table keeps the published numbers of the evaluated models
    assert published_cells(readme)[("HYDRA", "CIFAR10", "US", "ResNet18", 90)] == published[
        ("HYDRA", "CIFAR10", "US", "ResNet18", 90)]
    # a page per evaluated model, with its provenance; none for the smoke record
    pages = sorted(p.name for p in files if p.parent.parent == Path("leaderboard/models"))
    assert pages == [f"{HARP_90}.md", f"{HYDRA_90}.md"]
    page = files[model_path(HYDRA_90)].decode()
    record = records[HYDRA_90]
    for text in (PROTOCOL, record["checkpoint_sha256"], "2025-01-02T03:04:05Z", "0123abc", "hofmn-no-adversarial",
                 '"measured": 90.01', record["per_sample"]["sha256"], "4 with no adversarial found",
                 "{:.2f}–{:.2f}".format(*record["intervals"]["aa_robust_accuracy"]),
                 f"{record['counts']['hofmn_robust']} / {record['n_samples']}", "## Published: published-2024",
                 '"zero_weights": 1555', "<details><summary>Provenance</summary>"):
        assert text in page, text
    # one curve for the evaluated column (inline under the group's tables) and one per model page, highlighted;
    # the smoke record's column has none
    curves = sorted(p.as_posix() for p in files if p.suffix == ".svg")
    assert curves == [f"leaderboard/curves/{PROTOCOL}/CIFAR10_US_R18_90.svg",
                      f"leaderboard/curves/{PROTOCOL}/published_vs_evaluated.svg",  # both models were published
                      f"leaderboard/curves/models/{HARP_90.split('_R18')[0]}/{HARP_90}__{PROTOCOL}.svg",
                      f"leaderboard/curves/models/{HYDRA_90.split('_R18')[0]}/{HYDRA_90}__{PROTOCOL}.svg"]
    group_curve = files[Path(curves[0])].decode()
    assert group_curve.startswith("<svg") and ">4/255<" in group_curve and ">100%<" in group_curve
    assert f'<img src="curves/{PROTOCOL}/CIFAR10_US_R18_90.svg"' in readme
    own = files[Path(curves[2])].decode()
    assert own.count('stroke-width="3"') == 2 and f"HYDRA – {record['metrics']['hofmn_robust_accuracy']:.2f}%" in own
    assert page.index("curves/models/") < page.index("<details><summary>Check")  # summary and curve first
    assert page.index("<details><summary>Check") < page.index("<details><summary>Provenance")
    assert "smoke-v1" not in readme and all(b"smoke-v1" not in data for data in files.values())
    assert check_links(files, root) > 20
    assert render_all(root) == files


def test_the_demo_can_render_a_non_leaderboard_protocol_on_request(evaluated_repo):
    root, _ = evaluated_repo
    files = render_all(root, protocols=["smoke-v1"])
    assert model_path(HYDRA_95) in files and model_path(HYDRA_90) not in files
    assert "HO-FMN, protocol `smoke-v1`" in files[LEADERBOARD].decode()


def test_only_published_records_give_no_evaluated_tables_and_no_daggers(tmp_path):
    files = render_all(make_repo(tmp_path))
    readme = files[LEADERBOARD].decode()
    assert [s for _, s, _ in tables(readme)] == ["Published (arXiv:2409.01249)"]
    assert "†" not in readme.split("## Contents")[1] and not any(p.suffix == ".svg" for p in files)


# ------------------------------------------------------------------------------------------ the command

def run_apb(*args: str) -> int:
    return main(["leaderboard", *args])


def test_command_writes_checks_and_names_each_stale_missing_and_extra_file(evaluated_repo, capsys):
    root, _ = evaluated_repo
    assert run_apb("--root", str(root), "--check") == 1  # nothing generated yet: every file is missing
    assert "leaderboard/README.md: missing" in capsys.readouterr().err
    assert run_apb("--root", str(root)) == 0
    assert run_apb("--root", str(root), "--check") == 0
    readme, page = root / LEADERBOARD, root / model_path(HYDRA_90)
    readme.write_text(readme.read_text().replace("HARP", "HARP (best!)"))  # a hand edit
    page.unlink()
    (root / "leaderboard/notes.md").write_text("extra")
    capsys.readouterr()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert run_apb("--root", str(root), "--check") == 1
    err = capsys.readouterr().err
    assert "error: leaderboard/README.md: stale" in err
    assert f"error: {model_path(HYDRA_90).as_posix()}: missing" in err
    assert "error: leaderboard/notes.md: extra" in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # --check wrote nothing
    assert run_apb("--root", str(root)) == 0
    assert run_apb("--root", str(root), "--check") == 0 and not (root / "leaderboard/notes.md").exists()


def test_command_removes_pages_and_curves_no_longer_rendered(evaluated_repo):
    root, _ = evaluated_repo
    assert run_apb("--root", str(root)) == 0
    curve = root / f"leaderboard/curves/{PROTOCOL}/CIFAR10_US_R18_90.svg"
    assert curve.is_file()
    for key in (HARP_90, HYDRA_90):
        for path in records_dir(root, parse_model_key(key).ap_key).glob(f"{record_stem(key, PROTOCOL)}.*"):
            path.unlink()
    assert run_apb("--root", str(root)) == 0
    assert not curve.exists() and not (root / "leaderboard/curves").exists()
    assert not (root / "leaderboard/models").exists()
    assert run_apb("--root", str(root), "--check") == 0


def test_out_folder_receives_the_files_and_the_repository_is_untouched(evaluated_repo, tmp_path):
    root, _ = evaluated_repo
    out = tmp_path / "out"
    assert run_apb("--root", str(root), "--out", str(out)) == 0
    assert (out / LEADERBOARD).is_file() and (out / "taxonomy/README.md").is_file()
    assert not (root / "leaderboard").exists() and not (root / "taxonomy/README.md").exists()
    assert run_apb("--root", str(root), "--out", str(out), "--check") == 0


def test_bad_sidecar_or_unknown_protocol_fails_naming_the_record_and_writes_nothing(evaluated_repo, capsys):
    root, records = evaluated_repo
    sidecar = records_dir(root, "HYDRA_Sehwag2020Hydra") / records[HYDRA_90]["per_sample"]["file"]
    sidecar.write_bytes(sidecar.read_bytes() + b"tampered")
    assert run_apb("--root", str(root)) == 1
    err = capsys.readouterr().err
    assert f"{record_stem(HYDRA_90, PROTOCOL)}.json: per_sample.sha256" in err
    assert not (root / "leaderboard").exists()
    sidecar.unlink()
    assert run_apb("--root", str(root)) == 1
    assert "is missing" in capsys.readouterr().err
    record = records[HYDRA_90]
    write_record({**record, "per_sample": {**record["per_sample"], "file": "../../HARP_Zhao2023Holistic/x.npz"}},
                 records_dir(root, "HYDRA_Sehwag2020Hydra"))
    assert run_apb("--root", str(root)) == 1
    assert "per_sample.file: sidecar name '../../HARP_Zhao2023Holistic/x.npz' must be a plain file name" in (
        capsys.readouterr().err)
    add_evaluated(root, HYDRA_90, protocol="linf-4-255-v9")
    for stale in records_dir(root, "HYDRA_Sehwag2020Hydra").glob(f"{record_stem(HYDRA_90, PROTOCOL)}.*"):
        stale.unlink()
    assert run_apb("--root", str(root)) == 1
    assert "linf-4-255-v9" in capsys.readouterr().err and not (root / "leaderboard").exists()


@pytest.mark.parametrize("break_it, reason", [
    ("duplicate key", "duplicate key 'flags'"),
    ("NaN", "NaN"),
    ("linked record", "symbolic links are not allowed"),
    ("linked sidecar", "is a symbolic link"),
    ("linked records folder", "symbolic links are not allowed"),
    ("linked taxonomy", "symbolic links are not allowed"),
    ("oversized sidecar", "larger than the 1,000,000-byte limit"),
])
def test_the_renderer_reads_records_and_sidecars_by_validates_rules(tmp_path, capsys, break_it, reason):
    """What apb validate refuses in a record's file (a duplicate key, NaN, a link to the record, its sidecar or its
    folder, or to the AP's taxonomy.json, a sidecar over the size cap that is otherwise a valid archive: extra
    members, each within the sample count's bound) the renderer refuses too, naming the file, and writes nothing:
    it reads them with validate's readers."""
    from evaluator.repository.validate import validate_repository

    root = make_repo(tmp_path)
    add_evaluated(root, HYDRA_90)
    folder = records_dir(root, "HYDRA_Sehwag2020Hydra")
    record, sidecar = (folder / f"{record_stem(HYDRA_90, PROTOCOL)}.{ext}" for ext in ("json", "npz"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if break_it == "duplicate key":
        record.write_text(record.read_text().replace('"schema_version": 1,', '"schema_version": 1, "flags": [],', 1))
    elif break_it == "NaN":
        record.write_text(record.read_text().replace('"wall_time_s": {', '"wall_time_s": {"queue": NaN, ', 1))
    elif break_it in ("linked record", "linked sidecar", "linked taxonomy"):
        target = {"linked record": record, "linked sidecar": sidecar,
                  "linked taxonomy": folder.parent / "taxonomy.json"}[break_it]
        target.rename(elsewhere / target.name)
        target.symlink_to(elsewhere / target.name)
    elif break_it == "oversized sidecar":
        import hashlib
        import zipfile

        with zipfile.ZipFile(sidecar, "a", compression=zipfile.ZIP_STORED) as archive:
            for index in range(16):
                archive.writestr(f"padding{index}.npy", os.urandom(75_000))
        data = read_record(record)
        data["per_sample"]["sha256"] = hashlib.sha256(sidecar.read_bytes()).hexdigest()
        write_record(data, folder)
    else:
        folder.rename(elsewhere / "records")
        folder.symlink_to(elsewhere / "records")
    assert any(reason in problem.message for problem in validate_repository(root).problems)
    assert run_apb("--root", str(root)) == 1
    err = capsys.readouterr().err
    assert "submissions/HYDRA_Sehwag2020Hydra/" in err and reason in err, err
    assert not (root / "leaderboard").exists()


def test_unreadable_record_or_missing_taxonomy_fails_naming_the_file(tmp_path, capsys):
    root = make_repo(tmp_path)
    broken = records_dir(root, "HARP_Zhao2023Holistic") / "HARP_Zhao2023Holistic_R18_CIFAR10_US_90__published-2024.json"
    broken.write_text("{")
    assert run_apb("--root", str(root)) == 1
    assert f"{broken.relative_to(root)}:1: cannot read this record (invalid JSON" in capsys.readouterr().err
    broken.unlink()
    (root / "submissions/RADMM_Ye2019Adversarial/taxonomy.json").unlink()
    assert run_apb("--root", str(root)) == 1
    assert "records of RADMM_Ye2019Adversarial but no taxonomy.json" in capsys.readouterr().err
    assert not (root / "leaderboard").exists()


# ------------------------------------------------------------------------------------------ ranking, marks, links

def r18(ap: str, sparsity: int) -> str:
    return f"{ap}_R18_CIFAR10_US_{sparsity}"


def test_a_row_with_fewer_cells_never_ranks_above_and_marks_and_links_are_in_the_cells(tmp_path):
    root = make_repo(tmp_path)
    harp, hydra, radmm = THREE_APS
    for sparsity in (90, 95):  # HARP: the most robust, but only two of the three evaluated columns
        add_evaluated(root, r18(harp, sparsity), seed=sparsity, scale=0.2, flags=False)
    for sparsity in (90, 95, 99):
        add_evaluated(root, r18(hydra, sparsity), seed=sparsity, scale=0.02, flags=False,
                      efficiency=efficiency(50_000_000 + sparsity))
        add_evaluated(root, r18(radmm, sparsity), seed=sparsity, scale=0.05, flags=sparsity == 99,
                      date=f"2025-03-0{ {90: 1, 95: 8, 99: 3}[sparsity]}T00:00:00Z", commit=f"c{sparsity:03d}" + "0" * 36)
    files = render_all(root)
    readme = files[LEADERBOARD].decode()
    found = {subsection: {ap_of(row["AP"]): row for row in rows} for _, subsection, rows in tables(readme)}
    hofmn = found[f"HO-FMN, protocol `{PROTOCOL}`"]
    harp_mean = np.mean([float(parse_cell(hofmn["HARP"][f"ResNet18 {s}%"])["robust"]) for s in (90, 95)])
    assert harp_mean > max(float(parse_cell(row[f"ResNet18 {s}%"])["robust"]) for row in hofmn.values()
                           for s in (90, 95) if row is not hofmn["HARP"])  # the best mean ...
    assert hofmn["HARP"]["#"] == "–" and hofmn["HARP"]["mean HO-FMN (k/n)"] == "– (2/3)"  # ... yet unranked
    assert (hofmn["RADMM"]["#"], hofmn["HYDRA"]["#"]) == ("1", "2")
    assert list(hofmn) == ["RADMM", "HYDRA", "HARP"]  # ranked rows first, then the rest
    # marks: RADMM 99 is flagged (mark, never bold); published-only cells carry a dagger and are not averaged
    flagged = parse_cell(hofmn["RADMM"]["ResNet18 99%"])
    assert flagged["flag"] and not flagged["bold"] and parse_cell(hofmn["HYDRA"]["ResNet18 99%"])["bold"]
    autoattack = found[f"AutoAttack, protocol `{PROTOCOL}`"]
    dagger = parse_cell(autoattack["RADMM"]["VGG16 90%"])
    assert dagger["dagger"] and dagger["link"] is None and autoattack["RADMM"]["mean AA (k/n)"].endswith("(3/3)")
    evaluated = [float(parse_cell(autoattack["RADMM"][f"ResNet18 {s}%"])["robust"]) for s in (90, 95, 99)]
    assert autoattack["RADMM"]["mean AA (k/n)"] == f"{np.mean(evaluated):.2f} (3/3)"  # no published cell in it
    # links: evaluated cells to their model page's protocol section; AP to taxonomy; venue to the paper
    assert parse_cell(hofmn["HYDRA"]["ResNet18 90%"])["link"] == f"models/{hydra}/{r18(hydra, 90)}.md#evaluated-{PROTOCOL}"
    assert "(taxonomy/after-training.md#hydra_sehwag2020hydra)" in hofmn["HYDRA"]["AP"]  # its stage's entries page
    assert hofmn["HYDRA"]["Paper"].startswith("[NeurIPS 2020](https://") and hofmn["HYDRA"]["Year"] == "2020"
    taxonomy = files[Path("leaderboard/taxonomy/after-training.md")].decode()
    hydra_entry = taxonomy.split("### HYDRA_Sehwag2020Hydra")[1].split("###")[0]
    assert "[CIFAR10, unstructured (US)](../README.md#ap-hydra_sehwag2020hydra-cifar10-us)" in hydra_entry
    # last updated: the newest record's date and evaluator commit, from provenance
    assert f"Last updated: 2025-03-08, evaluator commit `c09500000000` (newest record: `{r18(radmm, 95)}`" in readme
    # efficiency: a table, a trade-off figure and the model page's line
    assert f"### Efficiency, protocol `{PROTOCOL}`" in readme and "[50M (9%)](models/" in readme
    assert f'<img src="curves/{PROTOCOL}/CIFAR10_US_efficiency.svg" width="50%" alt="AutoAttack robust accuracy ' \
           f'against effective multiply-accumulates per input, CIFAR10, unstructured (US), protocol {PROTOCOL}: 3 ' \
           'models; Pareto front (best accuracy at each cost): HYDRA 50M MACs ' in readme
    scatter = files[Path(f"leaderboard/curves/{PROTOCOL}/CIFAR10_US_efficiency.svg")].decode()
    assert scatter.count("<circle") == 3 and "3 models" in scatter and "Pareto front" in scatter
    front_line = re.search(r'<polyline [^>]*stroke="#222"[^>]*>', scatter).group(0)  # the README names its style
    assert f"the {'dashed' if 'stroke-dasharray' in front_line else 'solid'} staircase is the Pareto front" in readme
    page = files[model_path(r18(hydra, 95))].decode()
    assert "Efficiency: 1.12M of 11.2M parameters non-zero; 50M effective multiply-accumulates" in page
    assert "not measured" in files[model_path(r18(radmm, 95))].decode()
    assert check_links(files, root) > 50
    analysis = files[Path("leaderboard/analysis.md")].decode()
    assert f"## Protocol `{PROTOCOL}`" in analysis and "| AT (TRADES) | 2 |" in analysis


def test_readme_tables_are_cut_to_a_scrollable_length_with_every_row_on_the_group_page(tmp_path, monkeypatch):
    from evaluator.render import readme as readme_module

    monkeypatch.setattr(readme_module, "README_ROWS", 2)
    files = render_all(make_repo(tmp_path))
    readme = files[LEADERBOARD].decode()
    assert [len(rows) for _, _, rows in tables(readme)] == [2]
    assert "Showing 2 of 3 rows: [every row](groups/CIFAR10_US.md)" in readme
    assert [len(rows) for _, _, rows in tables(files[Path("leaderboard/groups/CIFAR10_US.md")].decode())] == [3]
    assert check_links(files, tmp_path / "repo") > 10


def test_every_readme_table_efficiency_included_is_cut_and_follows_the_autoattack_order(tmp_path, monkeypatch):
    """At 1,000 APs the efficiency table alone made the README 2.7 MB: it is cut like the others, its rows in
    the AutoAttack table's order, and the group page has all of them."""
    from evaluator.render import readme as readme_module

    monkeypatch.setattr(readme_module, "README_ROWS", 2)
    root = make_repo(tmp_path)
    for ap_key, scale in zip(THREE_APS, (0.01, 0.2, 0.05)):  # AutoAttack order: HYDRA, RADMM, HARP
        add_evaluated(root, r18(ap_key, 90), seed=1, scale=scale, flags=False, efficiency=efficiency(40_000_000))
    files = render_all(root)
    readme = files[LEADERBOARD].decode()
    found = {subsection: [ap_of(row["AP"]) for row in rows] for _, subsection, rows in tables(readme)}
    assert found[f"AutoAttack, protocol `{PROTOCOL}`"] == ["HYDRA", "RADMM"]
    assert found[f"Efficiency, protocol `{PROTOCOL}`"] == ["HYDRA", "RADMM"]
    assert readme.count("Showing 2 of 3 rows: [every row](groups/CIFAR10_US.md)") == 5  # 3 evaluated, efficiency, published
    group = files[Path("leaderboard/groups/CIFAR10_US.md")].decode()
    efficiency_rows = [rows for _, subsection, rows in tables(group) if subsection.startswith("Efficiency")][0]
    assert [ap_of(row["AP"]) for row in efficiency_rows] == ["HYDRA", "RADMM", "HARP"]


def test_model_page_json_is_json_dumps_indent_2_byte_for_byte():
    """The fast indented JSON of the model pages (C-encoded leaves) is exactly json.dumps(indent=2)."""
    import json
    import random

    from evaluator.render.pages import indented_json

    rng = random.Random(0)
    scalars = [None, True, False, 0, -3, 1.5, 1e-7, 1e20, 90.0, "", "ü\n\t\"", "```", 2 ** 70, float("inf"),
               float("-inf"), float("nan"), "\u202e\x00"]

    def value(depth: int = 0):
        choice = rng.random()
        if depth < 4 and choice < 0.25:
            keys = ["a", "é", 'x"y', "1", 3, 1.5, True, None] if rng.random() < 0.1 else ["a", "é", 'x"y', "1"]
            return {rng.choice(keys) if not isinstance(k := rng.choice(keys), str) else f"{k}{i}": value(depth + 1)
                    for i in range(rng.randint(0, 4))}
        if depth < 4 and choice < 0.45:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return rng.choice(scalars)

    for _ in range(5000):
        data = value()
        assert indented_json(data) == json.dumps(data, indent=2, ensure_ascii=False)


def test_group_pages_are_paged_by_rank_with_every_row_once_and_working_links(tmp_path, monkeypatch):
    """A group page of 1,000 APs would be about 3 MB, past what GitHub renders: group pages hold
    GROUP_PAGE_ROWS ranks of each table per page, linked to each other; across the pages every AP's row of every
    table appears exactly once, in rank order, and every link (taxonomy anchors included) resolves."""
    from evaluator.render import readme as readme_module

    monkeypatch.setattr(readme_module, "README_ROWS", 1)
    monkeypatch.setattr(readme_module, "GROUP_PAGE_ROWS", 2)
    root = make_repo(tmp_path)
    for ap_key, scale in zip(THREE_APS, (0.01, 0.2, 0.05)):
        add_evaluated(root, r18(ap_key, 90), seed=1, scale=scale, flags=False, efficiency=efficiency(40_000_000))
    files = render_all(root)
    pages = [Path("leaderboard/groups/CIFAR10_US.md"), Path("leaderboard/groups/CIFAR10_US_2.md")]
    assert sorted(p for p in files if "groups" in p.parts) == pages
    first, second = (files[p].decode() for p in pages)
    assert "Page 1 of 2 (ranks 2 per page): **1** · [2](CIFAR10_US_2.md)" in first
    assert "Page 2 of 2 (ranks 2 per page): [1](CIFAR10_US.md) · **2**" in second
    assert "Rows 1–2 of 3." in first and "Rows 3–3 of 3." in second
    by_table: dict[str, list[str]] = {}
    for text in (first, second):
        for _, subsection, rows in tables(text):
            by_table.setdefault(subsection, []).extend(ap_of(row["AP"]) for row in rows)
    assert by_table[f"AutoAttack, protocol `{PROTOCOL}`"] == ["HYDRA", "RADMM", "HARP"]
    assert by_table[f"Efficiency, protocol `{PROTOCOL}`"] == ["HYDRA", "RADMM", "HARP"]
    assert all(sorted(aps) == ["HARP", "HYDRA", "RADMM"] for aps in by_table.values()), by_table
    readme = files[LEADERBOARD].decode()
    assert "Showing 1 of 3 rows: [every row](groups/CIFAR10_US.md)" in readme
    taxonomy = "".join(data.decode() for path, data in files.items() if path.parent == Path("leaderboard/taxonomy"))
    assert all(f"#ap-{ap_key.lower()}-cifar10-us)" in taxonomy for ap_key in THREE_APS)  # the entries' row links
    assert check_links(files, root) > 20  # the taxonomy's row links included, wherever each row's anchor landed


def test_rank_groups_share_a_rank_where_the_paired_test_finds_no_difference(tmp_path):
    """HARP and HYDRA differ by 5 of 30,000 paired samples (p = 0.06): one group, rank 1 in every evaluated table.
    RADMM is 500 samples per cell behind: rank 3. The published table has no per-sample data: ranked as before
    (distinct means, distinct ranks)."""
    root = make_repo(tmp_path)
    harp, hydra, radmm = THREE_APS
    n = 10_000
    for sparsity in (90, 95, 99):
        add_evaluated(root, r18(harp, sparsity), flags=False, per_sample=flags_result(n, 3000 + 2 * (sparsity == 90)
                                                                                     + 3 * (sparsity == 95)))
        add_evaluated(root, r18(hydra, sparsity), flags=False, per_sample=flags_result(n, 3000))
        add_evaluated(root, r18(radmm, sparsity), flags=False, per_sample=flags_result(n, 2500))
    files = render_all(root)
    readme = files[LEADERBOARD].decode()
    found = {subsection: {ap_of(row["AP"]): row for row in rows} for _, subsection, rows in tables(readme)}
    for title, ranking in (("AutoAttack", "mean AA (k/n)"), ("HO-FMN", "mean HO-FMN (k/n)"),
                           ("Worst case (AutoAttack and HO-FMN)", "mean worst case (k/n)")):
        table = found[f"{title}, protocol `{PROTOCOL}`"]
        assert list(table) == ["HARP", "HYDRA", "RADMM"]
        assert [table[ap]["#"] for ap in table] == ["1", "1", "3"], title
        assert table["HARP"][ranking] == "30.02 (3/3)" and table["HYDRA"][ranking] == "30.00 (3/3)"
        low, high = wilson_interval(3000, 10_000)  # HYDRA's cells: 3,000 robust of 10,000
        assert parse_cell(table["HYDRA"]["ResNet18 90%"])["spread"] == f"{50 * (high - low):.2f}" == "0.90"
    published = next(rows for _, subsection, rows in tables(readme) if subsection.startswith("Published"))
    means = [row["mean AA (k/n)"] for row in published]
    assert [row["#"] for row in published] == [str(i + 1) for i in range(len(published))]
    assert len(set(means)) == len(means)  # distinct means: as before, no group without per-sample data
    ranked_tables = [(subsection, list(rows[0])) for _, subsection, rows in tables(readme) if "#" in rows[0]]
    assert len(ranked_tables) == 4  # AutoAttack, HO-FMN, worst case, published
    for subsection, header in ranked_tables:  # rank, AP and the ranked mean first: in view when a table scrolls
        assert header[:2] == ["#", "AP"] and header[2].startswith("mean ") and header[2].endswith(" (k/n)"), subsection
    harp_published = next(row for row in published if ap_of(row["AP"]) == "HARP")["ResNet18 90%"]
    assert parse_cell(harp_published)["robust"] == "45.40"  # 4,540 of the protocol's 10,000 samples: Wilson
    assert parse_cell(harp_published)["spread"] == "0.98"   # 44.43-46.38 (by hand), so the cell shows its ±0.98


def test_rank_groups_need_the_flags_of_every_ranked_cell(tmp_path, monkeypatch):
    """Without per-sample flags (what published cells have) the same rows fall back to the displayed means."""
    from evaluator.render import rows as rows_module

    root = make_repo(tmp_path)
    harp, hydra, _ = THREE_APS
    for sparsity in (90, 95, 99):
        add_evaluated(root, r18(harp, sparsity), flags=False, per_sample=flags_result(10_000, 3003))
        add_evaluated(root, r18(hydra, sparsity), flags=False, per_sample=flags_result(10_000, 3000))
    original = rows_module.row_of
    monkeypatch.setattr(rows_module, "row_of",
                        lambda root, result, threat: dataclasses.replace(original(root, result, threat), part_bits=None))
    readme = render_all(root)[LEADERBOARD].decode()
    table = {ap_of(row["AP"]): row for _, subsection, rows in tables(readme) for row in rows
             if subsection == f"AutoAttack, protocol `{PROTOCOL}`"}
    assert (table["HARP"]["#"], table["HYDRA"]["#"]) == ("1", "2")


def test_model_pages_show_where_autoattack_and_hofmn_disagree(tmp_path):
    from evaluator.record.records import PerSample

    root = make_repo(tmp_path)
    n = 10_000
    clean = np.arange(n) < 8000
    aa = np.arange(n) < 3000
    distances = np.where(clean, 0.003, 0.0).astype(np.float32)
    distances[:2990] = np.inf  # HO-FMN broke 10 samples AutoAttack did not ...
    distances[3000:3005] = 0.5  # ... and missed 5 that AutoAttack broke
    model_key = r18(THREE_APS[0], 90)
    add_evaluated(root, model_key, flags=False, per_sample=PerSample(np.arange(n), clean_correct=clean,
                                                                     aa_robust=aa, hofmn_distance=distances))
    files = render_all(root)
    page = files[model_path(model_key)].decode()
    assert "| AutoAttack: robust | 2990 | 10 |" in page and "| AutoAttack: broken | 5 | 6995 |" in page
    assert "The attacks disagree on 15 of 10000 samples (0.15%)" in page
    # the model's figure: AutoAttack's 30.00% at eps (a square over the HO-FMN curve at 29.95%), with its interval
    from evaluator.record.records import wilson_interval
    from evaluator.render.layout import model_curve_file

    figure = files[Path(model_curve_file(model_key, PROTOCOL))].decode()
    assert "AutoAttack – 30.00%</text>" in figure and "disagree on 15 samples</text>" in figure
    y_of = lambda percent: 350 - 320 * percent / 100  # noqa: E731  (the percent axis: 0 at 350 px, 100 at 30 px)
    x, y = (float(v) for v in re.search(r'<rect x="([0-9.]+)" y="([0-9.]+)" width="6" height="6" fill="#222"/>',
                                         figure).groups())
    eps_line = float(re.search(r'<line x1="([0-9.]+)" y1="30" x2="[0-9.]+" y2="350" stroke="#555" '
                               r'stroke-dasharray', figure).group(1))
    assert (x + 3, y + 3) == pytest.approx((eps_line, y_of(30.0)), abs=0.06)  # on the dashed line at eps
    low, high = wilson_interval(3000, n)
    bar = re.search(rf'<line x1="{x + 3:.1f}" y1="([0-9.]+)" x2="{x + 3:.1f}" y2="([0-9.]+)" stroke="#222"', figure)
    assert tuple(map(float, bar.groups())) == pytest.approx((y_of(100 * low), y_of(100 * high)), abs=0.06)


def test_analysis_shows_whether_the_order_holds_at_other_budgets(tmp_path):
    """HARP resists small budgets (60% at 4/255) but falls at 8/255 (10%); HYDRA holds 30% up to 16/255: the
    order at 4/255 is the reverse of the one at 8/255 (τ = -1), the one at 16/255 and by area the same."""
    from evaluator.record.records import PerSample

    root = make_repo(tmp_path)
    n = 10_000
    index = np.arange(n)
    harp = np.where(index < 5000, 0.02, np.where(index < 6000, np.inf, 0.0)).astype(np.float32)
    hydra = np.where(index < 3000, 0.1, np.where(index < 8000, 0.003, 0.0)).astype(np.float32)
    for ap, distances in ((THREE_APS[0], harp), (THREE_APS[1], hydra)):
        robust = distances > 8 / 255
        for sparsity in (90, 95):
            add_evaluated(root, r18(ap, sparsity), flags=False,
                          per_sample=PerSample(index, clean_correct=distances > 0,
                                               aa_robust=robust, hofmn_distance=distances))
    analysis = render_all(root)[Path("leaderboard/analysis.md")].decode()
    section = analysis.split("## Rank stability across ε")[1].split(f"### `{PROTOCOL}` · CIFAR10, unstructured (US)")[1]
    assert ("2 complete rows over 2 columns; Kendall's τ with the 8/255 order: ε = 4/255: -1.00, ε = 16/255: 1.00, "
            "area to 16/255: 1.00.") in section
    rows = {ap_of(row["AP"]): row for _, subsection, rows in tables(analysis) for row in rows
            if subsection == f"`{PROTOCOL}` · CIFAR10, unstructured (US)"}
    assert list(rows) == ["HYDRA", "HARP"]  # by the 8/255 rank
    assert rows["HARP"]["rank (ε = 4/255, %)"] == "1 (60.00)" and rows["HARP"]["rank (ε = 8/255, %)"] == "2 (10.00)"
    assert rows["HYDRA"]["rank (area to 16/255, %)"] == "1 (32.73)"  # 30% throughout, 80% below 0.003


def test_analysis_compares_published_and_re_evaluated_numbers(tmp_path):
    root = make_repo(tmp_path)
    harp, hydra, _ = THREE_APS
    published = {key: read_record(records_dir(root, parse_model_key(key).ap_key) / f"{record_stem(key, 'published-2024')}.json")
                 ["metrics"]["aa_robust_accuracy"] for key in (r18(harp, 90), r18(hydra, 90))}
    # HARP re-evaluated at its published number; HYDRA 10 points below it (far outside a ±1 point interval)
    add_evaluated(root, r18(harp, 90), flags=False, per_sample=flags_result(10_000, round(published[r18(harp, 90)] * 100)))
    add_evaluated(root, r18(hydra, 90), flags=False,
                  per_sample=flags_result(10_000, round((published[r18(hydra, 90)] - 10) * 100)))
    files = render_all(root)
    analysis = files[Path("leaderboard/analysis.md")].decode()
    assert f"### `{PROTOCOL}`\n\n2 models with both records; re-evaluated minus published: median -5.00 points; 1 " \
           "published values lie outside the re-evaluation's 95% interval." in analysis
    figure = files[Path(f"leaderboard/curves/{PROTOCOL}/published_vs_evaluated.svg")].decode()
    assert figure.count("<circle") == 2 and figure.count('stroke="#555" stroke-width="1"') == 2  # points, bars
    assert f'<img src="curves/{PROTOCOL}/published_vs_evaluated.svg"' in analysis
