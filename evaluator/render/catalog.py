"""Every :class:`Row` of a render, with the lookups the tables, figures and site need, and the "last updated"
facts (from record provenance, never from the clock)."""
from __future__ import annotations

from dataclasses import dataclass, field

from evaluator.keys import ARCHITECTURE_CODES
from evaluator.render.layout import Group, architecture_sort_key, group_sort_key
from evaluator.render.rows import Row
from evaluator.render.tables import Column


@dataclass
class Catalog:
    """The rows of one render, added one model at a time."""

    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def published(self) -> list[Row]:
        return [r for r in self.rows if r.published]

    def evaluated(self, protocol: str | None = None) -> list[Row]:
        return [r for r in self.rows if not r.published and (protocol is None or r.protocol == protocol)]

    def evaluated_protocols(self) -> list[str]:
        return sorted({r.protocol for r in self.rows if not r.published})

    def published_protocols(self) -> list[str]:
        return sorted({r.protocol for r in self.rows if r.published})

    def groups(self) -> list[Group]:
        return sorted({r.group for r in self.rows}, key=group_sort_key)

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(dataset for dataset, _ in self.groups()))

    def in_group(self, group: Group) -> list[Row]:
        return [r for r in self.rows if r.group == group]

    def columns(self, group: Group) -> list[Column]:
        """Both architectures, each with every sparsity any record of the group has."""
        rows = self.in_group(group)
        architectures = sorted({r.architecture for r in rows} | set(ARCHITECTURE_CODES), key=architecture_sort_key)
        sparsities = sorted({r.sparsity for r in rows})
        return [(architecture, sparsity) for architecture in architectures for sparsity in sparsities]

    def curve_columns(self) -> dict[tuple[str, Group, Column], list[Row]]:
        """(protocol, group, column) -> rows with a curve summary, sorted by key."""
        found: dict[tuple[str, Group, Column], list[Row]] = {}
        for row in self.rows:
            if row.curve is not None:
                found.setdefault((row.protocol, row.group, row.column), []).append(row)
        return dict(sorted(found.items(), key=lambda item: (item[0][0], group_sort_key(item[0][1]),
                                                            architecture_sort_key(item[0][2][0]), item[0][2][1])))

    def references(self) -> list[str]:
        """The sources named by the published records (e.g. ``arXiv:2409.01249``)."""
        return sorted({r.reference for r in self.rows if r.published and r.reference})

    def newest(self) -> Row | None:
        """The evaluated row with the latest provenance date (ties: the largest model key), if any."""
        dated = [r for r in self.rows if not r.published and r.date]
        return max(dated, key=lambda r: (r.date, r.model_key, r.protocol)) if dated else None


def last_updated(catalog: Catalog, references: str) -> str:
    """The "last updated" line: date and evaluator commit of the newest evaluated record."""
    newest = catalog.newest()
    if newest is None:
        return (f"Last updated: no evaluated record yet; the published numbers are those of {references}.")
    commit = f"evaluator commit `{newest.commit[:12]}`" if newest.commit else "evaluator commit unknown"
    return (f"Last updated: {(newest.date or '')[:10]}, {commit} (newest record: `{newest.model_key}`, "
            f"protocol `{newest.protocol}`).")
