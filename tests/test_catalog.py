"""The render's rows on disk (:mod:`evaluator.render.catalog`) and the file sink of ``apb leaderboard``: rows
come back equal, every lookup equals a scan of the same rows in a list, Python memory does not grow with the
number of rows, the tables made one AP at a time equal the tables made from the whole group, and the
temporary database is deleted however the stage ends."""
from __future__ import annotations

import os
import random
import tracemalloc
from pathlib import PurePosixPath
from statistics import fmean

import numpy as np
import pytest

from evaluator.commands.leaderboard import GeneratedFiles
from evaluator.render.catalog import BATCH, Catalog
from evaluator.render.layout import LEADERBOARD_README, architecture_sort_key, group_sort_key
from evaluator.render.readme import EVALUATED_TABLES, AUTOATTACK, GroupTables, RankedTable, evaluated_cells, \
    published_cells
from evaluator.render.rows import Row
from evaluator.spill import MAX_PARAMETERS
from evaluator.render.tables import ApLabel, best_per_column, rank_rows

DATASETS, KINDS, ARCHITECTURES = ("CIFAR10", "SVHN"), ("US", "S"), ("resnet18", "vgg16")


def random_row(rng: random.Random, index: int, *, ap_count: int = 12) -> Row:
    source = rng.choice(("evaluated", "evaluated", "published"))
    has_curve = rng.random() < 0.7
    return Row(
        model_key=f"Ap{index % ap_count}_Doe2020Synthetic{index}_R18_CIFAR10_US_90", ap_key=f"Ap{index % ap_count}",
        dataset=rng.choice(DATASETS),
        structure_kind=rng.choice(KINDS), architecture=rng.choice(ARCHITECTURES), sparsity=rng.choice((50, 90, 99)),
        source=source,
        protocol="published-2024" if source == "published" else rng.choice(("linf-8-255-v1", "linf-8-255-v2")),
        n_samples=rng.choice((0, 500, 10_000)),
        metrics=tuple(rng.choice((None, round(rng.uniform(0, 100), 2), rng.randint(0, 100))) for _ in range(4)),
        flags=rng.choice(((), ("aa_only",), ("aa_only", "no_adversarial"))),
        efficiency=rng.choice((None, (100, 50, 1000, rng.choice((0, 400))))),
        curve_bytes=np.arange(rng.randint(1, 5), dtype=np.uint16).tobytes() if has_curve else None,
        sample_range=rng.choice((None, (0, 500))), distance_counts=rng.choice((None, (500, 3, 1))),
        date=rng.choice((None, "", "2026-01-0%d" % rng.randint(1, 9))), commit=rng.choice((None, "abc123")),
        reference=rng.choice((None, "", "arXiv:2409.01249", "doi:x")) if source == "published" else None)


@pytest.fixture
def rows() -> list[Row]:
    rng = random.Random(7)
    return [random_row(rng, i) for i in range(600)]


@pytest.fixture
def catalog(rows):
    with Catalog() as made:
        for start in range(0, len(rows), 24):
            made.add(rows[start:start + 24])
        yield made


def without_curve(row: Row) -> Row:
    return Row(**{**{name: getattr(row, name) for name in Row.__slots__}, "curve_bytes": None})


def test_rows_come_back_equal_in_the_order_they_were_added(rows, catalog):
    assert len(catalog) == len(rows)
    assert list(catalog.iter_rows(curves=True)) == rows
    assert list(catalog.iter_rows()) == [without_curve(r) for r in rows]
    assert all(type(a.metrics[i]) is type(b.metrics[i]) for a, b in zip(catalog.iter_rows(), rows) for i in range(4))


def test_every_lookup_equals_a_scan_of_the_rows(rows, catalog):
    evaluated = [r for r in rows if not r.published]
    assert catalog.protocols() == sorted({r.protocol for r in rows})
    assert catalog.evaluated_protocols() == sorted({r.protocol for r in evaluated})
    assert catalog.published_protocols() == ["published-2024"]
    assert catalog.groups() == sorted({r.group for r in rows}, key=group_sort_key)
    assert catalog.references() == sorted({r.reference for r in rows if r.published and r.reference})
    dated = [r for r in evaluated if r.date]
    newest = max(dated, key=lambda r: (r.date, r.model_key, r.protocol))
    assert catalog.newest() == without_curve(newest)
    for group in catalog.groups():
        members = [r for r in rows if r.group == group]
        sparsities = sorted({r.sparsity for r in members})
        assert catalog.columns(group) == [(a, s) for a in sorted(ARCHITECTURES, key=architecture_sort_key)
                                          for s in sparsities]
        for protocol in ("linf-8-255-v1", "linf-8-255-v2", "published-2024"):
            assert catalog.has_evaluated(group, protocol) == any(r.protocol == protocol for r in evaluated
                                                                 if r.group == group)
        by_ap = list(catalog.group_rows_by_ap(group))
        assert [ap for ap, _ in by_ap] == sorted({r.ap_key for r in members})
        for ap_key, found in by_ap:
            assert found == [without_curve(r) for r in members if r.ap_key == ap_key]
        chosen = ["Ap3", "Ap5", "nobody"]
        assert catalog.rows_of_aps(group, chosen) == [without_curve(r) for r in members if r.ap_key in chosen]
    keys = {(r.protocol, r.group, r.column) for r in rows if r.curve_bytes is not None}
    assert set(catalog.curve_columns()) == keys and len(catalog.curve_columns()) == len(keys)
    for key in catalog.curve_columns():
        assert catalog.column_rows(key) == [r for r in rows if (r.protocol, r.group, r.column) == key
                                            and r.curve_bytes is not None]
    for protocol in catalog.evaluated_protocols():
        for group in [(dataset, kind) for dataset in DATASETS for kind in KINDS]:
            series: dict = {}
            for r in evaluated:
                if r.protocol == protocol and r.group == group and r.macs_effective \
                        and r.metric("aa_robust_accuracy") is not None:
                    series.setdefault(r.architecture, []).append(
                        (float(r.macs_effective), float(r.metric("aa_robust_accuracy")), r.ap_key))
            found = catalog.efficiency_points(protocol, group, "aa_robust_accuracy")
            assert found == {key: sorted(points) for key, points in series.items()}
            assert all(type(v) is float for points in found.values() for point in points for v in point[:2])
    assert list(catalog.metric_values("hofmn_robust_accuracy")) == [
        (r.protocol, r.ap_key, r.dataset, r.metric("hofmn_robust_accuracy")) for r in rows
        if r.metric("hofmn_robust_accuracy") is not None]
    expected: dict[str, set[str]] = {}
    for r in rows:
        expected.setdefault(r.protocol, set()).add(r.ap_key)
    assert catalog.aps_by_protocol() == expected


def test_rows_of_many_aps_are_read_in_several_queries():
    rng = random.Random(3)
    made = [random_row(rng, i, ap_count=MAX_PARAMETERS * 2 + 7) for i in range(MAX_PARAMETERS * 2 + 7)]
    made = [Row(**{**{n: getattr(r, n) for n in Row.__slots__}, "dataset": "CIFAR10", "structure_kind": "US"})
            for r in made]
    with Catalog() as catalog:
        catalog.add(made)
        keys = [r.ap_key for r in made]
        assert catalog.rows_of_aps(("CIFAR10", "US"), keys) == [without_curve(r) for r in made]


def test_python_memory_does_not_grow_with_the_rows_added():
    """20,480 rows (a leaderboard of about 850 APs) leave nothing on the Python heap: they are on disk, written
    in batches of ``BATCH`` rows (measured where no batch is pending)."""
    rng = random.Random(1)
    batch = [random_row(rng, i) for i in range(32)]
    assert BATCH % len(batch) == 0
    with Catalog() as catalog:
        for _ in range(BATCH // len(batch)):
            catalog.add(batch)
        tracemalloc.start()
        try:
            grown = []
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(2):
                for _ in range(10_240 // len(batch)):
                    catalog.add(batch)
                grown.append(tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()
        assert len(catalog) == BATCH + 20_480
        assert grown[1] < 64 * 1024 and grown[1] - grown[0] < 8 * 1024, f"the catalog kept {grown} bytes"
        assert os.path.getsize(catalog._spill.path) > 2_000_000  # the rows went to the file


def test_the_database_file_is_deleted_when_closed_and_when_the_stage_fails(tmp_path):
    catalog = Catalog()
    path = catalog._spill.path
    assert os.path.exists(path)
    catalog.close()
    catalog.close()
    assert not os.path.exists(path)
    with pytest.raises(RuntimeError):
        with Catalog() as failing:
            path = failing._spill.path
            raise RuntimeError("the render failed")
    assert not os.path.exists(path)


def test_tables_made_one_ap_at_a_time_equal_the_tables_of_the_whole_group(rows, catalog):
    labels = {f"Ap{i}": ApLabel(f"Ap{i}", f"Name {i % 5}") for i in range(12)}
    for group in catalog.groups():
        members = [r for r in rows if r.group == group]
        tables = GroupTables(catalog, group, labels, curves=set())
        shown = [p for p in tables.pieces if isinstance(p, RankedTable)]
        expected = []
        for protocol in catalog.evaluated_protocols():
            if not any(not r.published and r.protocol == protocol for r in members):
                continue
            for kind in EVALUATED_TABLES:
                cells = evaluated_cells(members, protocol, kind, LEADERBOARD_README, kind is AUTOATTACK)
                if any(not c.published_only for c in cells.values()):
                    expected.append(cells)
        published = published_cells(members)
        if published:
            expected.append(published)
        assert len(shown) == len(expected)
        for table, cells in zip(shown, expected):
            assert table.ranked == rank_rows(cells, labels)
            assert table.best == best_per_column(cells, tables.columns)
            assert table.flagged == any(c.flagged for c in cells.values())
            keys = [row.ap_key for row in table.ranked[:3]]
            window = table.cells_of(catalog.rows_of_aps(group, keys), LEADERBOARD_README)
            assert window == {k: c for k, c in cells.items() if k[0] in keys}


def test_rank_rows_averages_own_cells_over_the_ranked_columns():
    """Complete rows by mean (fsum-exact), ties on the displayed value share a rank; others by name."""
    from evaluator.render.tables import Cell

    cells = {("a", ("resnet18", 90)): Cell(80.0, 40.004), ("a", ("vgg16", 90)): Cell(80.0, 40.0),
             ("b", ("resnet18", 90)): Cell(80.0, 40.0), ("b", ("vgg16", 90)): Cell(80.0, 40.0),
             ("c", ("resnet18", 90)): Cell(80.0, 99.0), ("d", ("vgg16", 90)): Cell(80.0, 10.0, published_only=True)}
    labels = {k: ApLabel(k, k.upper()) for k in "abcd"}
    ranked = rank_rows(cells, labels)
    assert [(r.ap_key, r.rank, r.covered, r.of) for r in ranked] == [("a", 1, 2, 2), ("b", 1, 2, 2),
                                                                     ("c", None, 1, 2), ("d", None, 0, 2)]
    assert ranked[0].mean == fmean([40.004, 40.0])


def test_the_file_sink_finds_stale_missing_and_extra_files_and_deletes_its_database(tmp_path):
    out = tmp_path / "out"
    (out / "leaderboard").mkdir(parents=True)
    (out / "leaderboard" / "same.md").write_bytes(b"same")
    (out / "leaderboard" / "old.md").write_bytes(b"old")
    (out / "leaderboard" / "gone.md").write_bytes(b"gone")
    check = GeneratedFiles(out, check=True)
    database = check._spill.path
    check(PurePosixPath("leaderboard/same.md"), b"same")
    check(PurePosixPath("leaderboard/old.md"), b"new")
    check(PurePosixPath("leaderboard/new/file.md"), b"new")
    with pytest.raises(AssertionError, match="rendered twice"):
        check(PurePosixPath("leaderboard/same.md"), b"same")
    assert [(p.file, p.message.split(":")[0]) for p in check.problems()] == [
        ("leaderboard/old.md", "stale"), ("leaderboard/new/file.md", "missing"), ("leaderboard/gone.md", "extra")]
    check.close()
    assert not os.path.exists(database) and not (out / "leaderboard" / "new").exists()
    write = GeneratedFiles(out, check=False)
    for path, data in (("leaderboard/same.md", b"same"), ("leaderboard/old.md", b"new"),
                       ("leaderboard/new/file.md", b"new")):
        write(PurePosixPath(path), data)
    assert write.commit() == (2, 1, 1)
    assert not os.path.exists(write._spill.path)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "leaderboard/new/file.md", "leaderboard/old.md", "leaderboard/same.md"]
    assert (out / "leaderboard" / "old.md").read_bytes() == b"new"
    failed = GeneratedFiles(out, check=False)
    failed(PurePosixPath("leaderboard/other/new.md"), b"x")
    failed(PurePosixPath("leaderboard/old.md"), b"newer")
    failed.undo()
    assert not (out / "leaderboard" / "other").exists() and (out / "leaderboard" / "old.md").read_bytes() == b"new"
    assert not os.path.exists(failed._spill.path)


def test_a_group_has_columns_only_for_the_architectures_its_records_have():
    """A registered architecture without a record in a group adds no empty columns to its tables (adding an
    architecture to the registry leaves every existing table as it was)."""
    rng = random.Random(3)
    made_rows = [random_row(rng, i) for i in range(40)]
    for row in made_rows:
        row.dataset, row.structure_kind, row.architecture = "CIFAR10", "US", "vgg16"
    with Catalog() as made:
        made.add(made_rows)
        assert {architecture for architecture, _ in made.columns(("CIFAR10", "US"))} == {"vgg16"}
