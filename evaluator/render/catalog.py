"""Every :class:`Row` of a render, kept on disk (a :class:`~evaluator.spill.Spill` database), with the
lookups the tables, figures and site need, and the "last updated" facts (from record provenance, never from
the clock).

A leaderboard of 1,000 APs has 24,000 rows; held as Python objects they made the render's memory grow by
about 2 KB per record. Here each lookup reads back only what it needs: one group's rows without their
curves for the tables, one column's rows for its figures, a few numbers per row for the efficiency plot and
the analysis, so memory does not grow with the number of records. Rows come back in the order they were
added (the records' order), as the renderers expect."""
from __future__ import annotations

import itertools
import sqlite3
from typing import Iterable, Iterator, Sequence

from evaluator.record.records import METRICS
from evaluator.render.inputs import PUBLISHED
from evaluator.render.layout import Group, architecture_sort_key, group_sort_key
from evaluator.render.rows import Row, split_parts
from evaluator.render.tables import Column
from evaluator.spill import MAX_PARAMETERS, Spill

CurveColumn = tuple[str, Group, Column]  # (protocol, (dataset, structure kind), (architecture, sparsity))
METRIC_COLUMNS = tuple(f"metric_{name}" for name in METRICS)
FIELDS = ("model_key", "ap_key", "dataset", "structure_kind", "architecture", "sparsity", "source", "protocol",
          "n_samples", *METRIC_COLUMNS, "flags", "params_total", "params_nonzero", "macs_dense", "macs_effective",
          "curve", "range_start", "range_stop", "samples", "distance_zero", "distance_inf", "date", "git_commit",
          "reference", "agree_both", "agree_aa_only", "agree_hofmn_only", "part_bits")
LIGHT = ("curve", "part_bits")  # the large fields, read only where asked for
SCHEMA = (f"CREATE TABLE rows (id INTEGER PRIMARY KEY, {', '.join(FIELDS)});\n"
          "CREATE INDEX rows_by_group ON rows (dataset, structure_kind, ap_key);\n"
          "CREATE INDEX rows_by_column ON rows (protocol, dataset, structure_kind, architecture, sparsity);")
INSERT = f"INSERT INTO rows ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})"
FLAG_SEPARATOR = "\x1f"
BATCH = 512  # rows written per statement
EVALUATED = f"source != '{PUBLISHED}'"


def _stored(row: Row) -> tuple:
    """A row as the values of ``FIELDS``."""
    efficiency = row.efficiency or (None, None, None, None)
    sample_range = row.sample_range or (None, None)
    counts = row.distance_counts or (None, None, None)
    return (row.model_key, row.ap_key, row.dataset, row.structure_kind, row.architecture, row.sparsity, row.source,
            row.protocol, row.n_samples, *row.metrics, FLAG_SEPARATOR.join(row.flags), *efficiency,
            row.curve_bytes, *sample_range, *counts, row.date, row.commit, row.reference,
            *(row.agreement or (None, None, None)), None if row.part_bits is None else b"".join(row.part_bits))


_METRICS = slice(9, 9 + len(METRICS))
_REST = 9 + len(METRICS)


def _row(values: tuple) -> Row:
    """The :class:`Row` stored as *values* (in ``FIELDS`` order)."""
    model_key, ap_key, dataset, structure_kind, architecture, sparsity, source, protocol, n_samples = values[:9]
    (flags, total, nonzero, dense, effective, curve, start, stop, samples, zero, inf, date, commit, reference,
     both, aa_only, hofmn_only, part_bits) = values[_REST:]
    return Row(model_key=model_key, ap_key=ap_key, dataset=dataset, structure_kind=structure_kind,
               architecture=architecture, sparsity=sparsity, source=source, protocol=protocol, n_samples=n_samples,
               metrics=values[_METRICS], flags=tuple(flags.split(FLAG_SEPARATOR)) if flags else (),
               efficiency=None if total is None else (total, nonzero, dense, effective), curve_bytes=curve,
               sample_range=None if start is None else (start, stop),
               distance_counts=None if samples is None else (samples, zero, inf), date=date, commit=commit,
               reference=reference, part_bits=None if part_bits is None else split_parts(part_bits),
               agreement=None if both is None else (both, aa_only, hofmn_only))


class Catalog:
    """The rows of one render, added one model at a time, read back by lookup. Close it (or use it as a
    context manager) to delete its file."""

    def __init__(self) -> None:
        self._spill = Spill(SCHEMA)
        self._db = self._spill.db
        self._count = 0
        self._pending: list[tuple] = []  # rows added but not yet written
        self._with_curve = ", ".join(field if field not in LIGHT[1:] else "NULL" for field in FIELDS)
        self._without_curve = ", ".join(field if field not in LIGHT else "NULL" for field in FIELDS)
        self._with_bits = ", ".join(field if field != "curve" else "NULL" for field in FIELDS)

    def close(self) -> None:
        self._spill.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

    def add(self, rows: Iterable[Row]) -> None:
        """Store *rows* (one model's, say); they are written in batches of ``BATCH``."""
        before = len(self._pending)
        self._pending += map(_stored, rows)
        self._count += len(self._pending) - before
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._db.executemany(INSERT, self._pending)
            self._pending = []

    def _execute(self, query: str, parameters: tuple = ()) -> sqlite3.Cursor:
        """Run a query over every row added so far."""
        self._flush()
        return self._db.execute(query, parameters)

    def _rows(self, where: str = "1", parameters: tuple = (), *, curves: bool, order: str = "id",
              bits: bool = False) -> Iterator[Row]:
        fields = self._with_bits if bits else self._with_curve if curves else self._without_curve
        for values in self._execute(f"SELECT {fields} FROM rows WHERE {where} ORDER BY {order}", parameters):
            yield _row(values)

    def iter_rows(self, *, curves: bool = False) -> Iterator[Row]:
        """Every row, one at a time (with its curve summary only when *curves*)."""
        return self._rows(curves=curves)

    def _distinct(self, expression: str, where: str = "1", parameters: tuple = ()) -> list:
        return [values if len(values) > 1 else values[0] for values in
                self._execute(f"SELECT DISTINCT {expression} FROM rows WHERE {where}", parameters)]

    def protocols(self) -> list[str]:
        return sorted(self._distinct("protocol"))

    def evaluated_protocols(self) -> list[str]:
        return sorted(self._distinct("protocol", EVALUATED))

    def published_protocols(self) -> list[str]:
        return sorted(self._distinct("protocol", f"source = '{PUBLISHED}'"))

    def groups(self) -> list[Group]:
        return sorted(self._distinct("dataset, structure_kind"), key=group_sort_key)

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(dataset for dataset, _ in self.groups()))

    def has_evaluated(self, group: Group, protocol: str) -> bool:
        """Whether the group has an evaluated row of *protocol*."""
        return bool(self._execute(f"SELECT EXISTS (SELECT 1 FROM rows WHERE dataset = ? AND structure_kind = ? "
                                     f"AND protocol = ? AND {EVALUATED})", (*group, protocol)).fetchone()[0])

    def group_rows_by_ap(self, group: Group) -> Iterator[tuple[str, list[Row]]]:
        """``(ap_key, its rows)`` for each AP of a group, by AP key, one AP at a time (no curve summaries)."""
        rows = self._rows("dataset = ? AND structure_kind = ?", group, curves=False, order="ap_key, id")
        for ap_key, members in itertools.groupby(rows, key=lambda row: row.ap_key):
            yield ap_key, list(members)

    def rows_of_aps(self, group: Group, ap_keys: Sequence[str]) -> list[Row]:
        """The rows of some APs in a group (no curve summaries)."""
        found: list[Row] = []
        for start in range(0, len(ap_keys), MAX_PARAMETERS):
            chosen = tuple(ap_keys[start:start + MAX_PARAMETERS])
            found += self._rows(f"dataset = ? AND structure_kind = ? AND ap_key IN ({', '.join('?' * len(chosen))})",
                                (*group, *chosen), curves=False)
        return found

    def robust_bits(self, group: Group, protocol: str, ap_key: str) -> list[Row]:
        """An AP's evaluated rows of *protocol* in a group with their bit-packed robust flags (no curves)."""
        return list(self._rows(f"dataset = ? AND structure_kind = ? AND ap_key = ? AND protocol = ? AND {EVALUATED}",
                               (*group, ap_key, protocol), curves=False, bits=True))

    def columns(self, group: Group) -> list[Column]:
        """The architectures any record of the group has (in the registry's order: a registered architecture
        without records adds no empty columns), each with every sparsity any record of the group has."""
        architectures = sorted(set(self._distinct("architecture", "dataset = ? AND structure_kind = ?", group)),
                               key=architecture_sort_key)
        sparsities = sorted(self._distinct("sparsity", "dataset = ? AND structure_kind = ?", group))
        return [(architecture, sparsity) for architecture in architectures for sparsity in sparsities]

    def curve_columns(self) -> list[CurveColumn]:
        """Every (protocol, group, column) with a row that has a curve summary, sorted."""
        found = self._distinct("protocol, dataset, structure_kind, architecture, sparsity", "curve IS NOT NULL")
        keys = [(protocol, (dataset, kind), (architecture, sparsity))
                for protocol, dataset, kind, architecture, sparsity in found]
        return sorted(keys, key=lambda key: (key[0], group_sort_key(key[1]), architecture_sort_key(key[2][0]),
                                             key[2][1]))

    def column_rows(self, key: CurveColumn) -> list[Row]:
        """The rows of one curve column that have a curve summary, with it."""
        protocol, (dataset, kind), (architecture, sparsity) = key
        return list(self._rows("protocol = ? AND dataset = ? AND structure_kind = ? AND architecture = ? AND "
                               "sparsity = ? AND curve IS NOT NULL", (protocol, dataset, kind, architecture,
                                                                      sparsity), curves=True))

    def efficiency_points(self, protocol: str, group: Group, metric: str) -> dict[str, list[tuple[float, float, str]]]:
        """``architecture -> [(effective MACs, metric, ap_key), ...]``, sorted, of the evaluated rows of *protocol*
        in *group* with a non-zero effective MAC count and a value of *metric*."""
        column = METRIC_COLUMNS[METRICS.index(metric)]
        found: dict[str, list[tuple[float, float, str]]] = {}
        for architecture, macs, value, ap_key in self._execute(
                f"SELECT architecture, CAST(macs_effective AS REAL), CAST({column} AS REAL), ap_key FROM rows "
                f"WHERE {EVALUATED} AND protocol = ? AND dataset = ? AND structure_kind = ? AND macs_effective "
                f"AND {column} IS NOT NULL ORDER BY architecture, 2, 3, 4", (protocol, *group)):
            found.setdefault(architecture, []).append((macs, value, ap_key))
        return found

    def published_pairs(self, metric: str) -> Iterator[tuple[str, str, float, float, int]]:
        """``(protocol, ap_key, published value, evaluated value, evaluated samples)`` of *metric* for every model
        with both a published and an evaluated record, by protocol and model key."""
        column = METRIC_COLUMNS[METRICS.index(metric)]
        return iter(self._execute(
            f"SELECT e.protocol, e.ap_key, CAST(p.{column} AS REAL), CAST(e.{column} AS REAL), e.n_samples "
            f"FROM rows e JOIN rows p ON p.model_key = e.model_key AND p.source = '{PUBLISHED}' "
            f"WHERE e.{EVALUATED} AND p.{column} IS NOT NULL AND e.{column} IS NOT NULL "
            "ORDER BY e.protocol, e.model_key"))

    def metric_values(self, metric: str) -> Iterator[tuple[str, str, str, float]]:
        """``(protocol, ap_key, dataset, value)`` of every row with a value of *metric*, one at a time."""
        column = METRIC_COLUMNS[METRICS.index(metric)]
        return iter(self._execute(f"SELECT protocol, ap_key, dataset, {column} FROM rows WHERE {column} IS NOT "
                                     "NULL ORDER BY id"))

    def aps_by_protocol(self) -> dict[str, set[str]]:
        """protocol -> the APs with a row of it."""
        found: dict[str, set[str]] = {}
        for protocol, ap_key in self._distinct("protocol, ap_key"):
            found.setdefault(protocol, set()).add(ap_key)
        return found

    def references(self) -> list[str]:
        """The sources named by the published records (e.g. ``arXiv:2409.01249``)."""
        return sorted(self._distinct("reference", f"source = '{PUBLISHED}' AND reference IS NOT NULL "
                                                  "AND reference != ''"))

    def newest(self) -> Row | None:
        """The evaluated row with the latest provenance date (ties: the largest model key), if any."""
        return next(self._rows(f"id = (SELECT id FROM rows WHERE {EVALUATED} AND date IS NOT NULL AND date != '' "
                               "ORDER BY date DESC, model_key DESC, protocol DESC LIMIT 1)", curves=False), None)


def last_updated(catalog: Catalog, references: str) -> str:
    """The "last updated" line: date and evaluator commit of the newest evaluated record."""
    newest = catalog.newest()
    if newest is None:
        return (f"Last updated: no evaluated record yet; the published numbers are those of {references}.")
    commit = f"evaluator commit `{newest.commit[:12]}`" if newest.commit else "evaluator commit unknown"
    return (f"Last updated: {(newest.date or '')[:10]}, {commit} (newest record: `{newest.model_key}`, "
            f"protocol `{newest.protocol}`).")
