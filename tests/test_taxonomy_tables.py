"""taxonomy/README.md: the three pipeline tables (the seed README's tables, from the repository's
taxonomy.json files), the legend from the vocabulary, entries whose anchors the tables and the leaderboard
link to, and new APs placed after the listed rows."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from evaluator.render import render_all
from evaluator.render.labels import ap_labels
from evaluator.render.taxonomy_tables import detailed_columns, render_taxonomy_readme
from evaluator.repository.submissions import iter_taxonomies
from evaluator.repository.taxonomy import legend, load_vocabulary, table_columns

REPO = Path(__file__).resolve().parents[1]
SEED_README = REPO.parent / "shared" / "seed" / "benchmark-readme.txt"
LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table as rows of cells (header first, alignment row dropped); links reduced to their text."""
    found, current = [], None
    for line in text.splitlines() + [""]:
        if current is not None and line and set(line) <= set("|:- "):  # an alignment row: its header above
            if len(current) > 1:  # starts a new table (the seed writes its tables without blank lines)
                found.append(current[:-1])
                current = current[-1:]
            continue
        if line.startswith("|") or (line.endswith("|") and " | " in line):
            cells = [LINK.sub(r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if not all(set(c) <= set(":-") for c in cells):
                current = (current or []) + [cells]
        elif current is not None:
            found.append(current)
            current = None
    return found


@pytest.fixture(scope="module")
def readme() -> str:
    return render_all(REPO)[Path("taxonomy/README.md")].decode()


def test_rows_are_the_vocabulary_columns_of_every_committed_entry(readme):
    vocabulary = load_vocabulary(REPO)
    entries = list(iter_taxonomies(REPO))
    assert len(entries) == 26
    rendered = [row for table in markdown_tables(readme) for row in table[1:]]
    assert rendered == [list(detailed_columns(entry, vocabulary).values()) for entry in entries]
    # what the files hold beyond the seed's tables: the adversarial-training attack and the granularity
    without_details = [[re.sub(r" \([^)]*\)", "", cell) for cell in row] for row in rendered]
    assert without_details == [list(table_columns(entry, vocabulary).values()) for entry in entries]
    rows = {row[0]: row for row in rendered}
    assert rows["HYDRA"][1:3] == ["AT (TRADES)", "AT (TRADES)"] and rows["HARP"][4] == "S (channels), US"
    assert rows["Deadwooding"][2] == "KD + AT (FGSM)" and rows["RFP"][1:3] == ["AT", "AT"]  # no attack named
    assert [table[0] for table in markdown_tables(readme)] == [
        [c["title"] for c in spec["columns"]] for spec in vocabulary["pipelines"].values()]


def test_tables_reproduce_the_seed_readme_with_the_pwoa_structure_correction(readme):
    if not SEED_README.is_file():
        pytest.skip(f"{SEED_README} not present; the committed entries are compared in the test above")
    seed = [t for t in markdown_tables(SEED_README.read_text()) if t[0][0] == "Name" and "S/US" in t[0]]
    # The foundation issue: PwoA is listed as unstructured only, yet has structured checkpoints and results.
    for table in seed:
        for row in table:
            if row[0] == "PwoA":
                row[table[0].index("S/US")] = "S, US"
    tables = [[[re.sub(r" \([^)]*\)", "", cell) for cell in row] for row in table]
              for table in markdown_tables(readme)[:3]]
    assert tables == seed  # our tables add the attack and granularity in brackets


def test_names_link_to_entry_headings_and_the_legend_is_the_vocabularys(readme):
    files = render_all(REPO)
    pages = {path: data.decode() for path, data in files.items() if path.parent == Path("leaderboard/taxonomy")}
    assert sorted(p.name for p in pages) == ["after-training.md", "before-training.md", "during-training.md"]
    headings = {(f"../leaderboard/taxonomy/{path.name}", line[4:].lower())
                for path, text in pages.items() for line in text.splitlines() if line.startswith("### ")}
    targets = [tuple(target.split("#")) for _, target in LINK.findall(readme.split("## Legend")[0])]
    assert len(targets) == 26 and set(targets) == headings  # each name links to its entry on its stage's page
    assert "### " not in readme and all(len(data) < 500 * 1024 for data in files.values())
    legend_lines = readme.split("## Legend\n\n")[1].split("\n\n")[0].splitlines()
    assert legend_lines == [f"- {a}: {d}" for a, d in legend(load_vocabulary(REPO))]
    assert legend_lines[0] == "- AT: Adversarial Training" and "- n.s.: Not Specified" in legend_lines


def entry(ap_key: str, name: str, stage: str, year: int, code_url: str | None = None) -> dict:
    pipeline = {"after-training": {"pretraining": {"methods": ["AT"]}, "finetuning": {"methods": ["KD", "AT"]},
                                   "schedule": ["IT", "1S"]},
                "during-training": {"training_step": {"methods": ["AT"]}}}[stage]
    return {"schema_version": 1, "ap_key": ap_key, "name": name, "title": f"Title of {name}", "year": year,
            "paper_url": "https://example.org/paper.pdf", "pipeline": {"stage": stage, **pipeline},
            "code_url": code_url, "structure": ["US", "S"], "locality": ["G"], "criterion": "LIS"}


def test_new_aps_follow_the_listed_rows(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "taxonomy", root / "taxonomy", ignore=shutil.ignore_patterns("README.md"))
    entries = [entry("Zeta_Doe2025Pruning", "Zeta", "during-training", 2025, code_url="https://example.org/zeta"),
               entry("Alpha_Roe2024Pruning", "Alpha", "during-training", 2024),
               entry("HYDRA_Sehwag2020Hydra", "HYDRA", "after-training", 2020),
               entry("TwinRep_Li2023Learning", "TwinRep", "during-training", 2023)]
    for item in entries:
        (root / "submissions" / item["ap_key"]).mkdir(parents=True)
        (root / "submissions" / item["ap_key"] / "taxonomy.json").write_text(json.dumps(item))
    vocabulary = load_vocabulary(root)
    rows = {"HYDRA_Sehwag2020Hydra": [("CIFAR10, unstructured (US)", "../leaderboard/README.md#ap-x")]}
    text = render_taxonomy_readme(iter_taxonomies(root), vocabulary, rows)
    tables = markdown_tables(text)
    assert [row[0] for row in tables[0][1:]] == ["HYDRA"]
    assert tables[0][1][1:4] == ["AT", "KD + AT", "1S, IT"]  # vocabulary display order
    assert [row[0] for row in tables[1][1:]] == ["TwinRep", "Alpha", "Zeta"]  # listed first, then by year
    assert len(tables) == 2 and "## Pruning before training" not in text  # no entries, no table
    hydra, zeta = text.split("### HYDRA_Sehwag2020Hydra")[1], text.split("### Zeta_Doe2025Pruning")[1]
    assert "leaderboard: [CIFAR10, unstructured (US)](../leaderboard/README.md#ap-x)" in hydra.split("###")[0]
    assert "leaderboard" not in zeta and "[code](https://example.org/zeta)" in zeta
    assert render_taxonomy_readme(iter_taxonomies(root), vocabulary, rows) == text


def test_labels_disambiguate_shared_names_with_the_ap_key():
    labels = ap_labels([entry("A_X2020a", "Same", "during-training", 2020),
                        entry("B_Y2021b", "Same", "during-training", 2021),
                        entry("C_Z2022c", "Own", "during-training", 2022, code_url="https://example.org/c")])
    names = [labels[k].name for k in ("A_X2020a", "B_Y2021b", "C_Z2022c")]
    assert names == ["Same (A_X2020a)", "Same (B_Y2021b)", "Own"]
    assert labels["C_Z2022c"].taxonomy_anchor == "c_z2022c" and labels["C_Z2022c"].code_url == "https://example.org/c"


def test_a_pipe_in_a_value_stays_inside_its_cell():
    odd = entry("Odd_Doe2025Pruning", "Odd", "during-training", 2025)
    odd["criterion"] = "LIS|LWM"  # the schema refuses this, but the table must not break on it
    table = markdown_tables(render_taxonomy_readme([odd], load_vocabulary(REPO), {}))[0]
    assert table[1] == ["Odd", "AT", "S, US", "G", r"LIS\|LWM"]


def test_an_entry_without_a_title_says_so_instead_of_none():
    """Issue 22: Luo23 and FSRP have no title in the seed; their entries rendered as "*None* (2023)"."""
    from evaluator.render.taxonomy_tables import entry_section

    untitled = {"ap_key": "Luo23_Luo2023Towards", "name": "Luo23", "title": None, "year": 2023, "venue": None,
                "paper_url": "https://ieeexplore.ieee.org/document/10332249", "code_url": None}
    text = "\n".join(entry_section(untitled, []))
    assert "None" not in text and "**Luo23** (2023); title not recorded yet (see the paper)" in text
    titled = "\n".join(entry_section({**untitled, "title": "A Title", "venue": "TNNLS"}, []))
    assert "**Luo23**: *A Title* (TNNLS)" in titled and "not recorded" not in titled
    pages = sorted((REPO / "leaderboard" / "taxonomy").glob("*.md"))
    assert pages and all("*None*" not in page.read_text(encoding="utf-8") for page in pages)
