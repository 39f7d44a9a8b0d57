"""A private SQLite database in a temporary file, for what a long stage must not hold in memory: the rows of a
render (:mod:`evaluator.render.catalog`) and the names of the files it wrote (``apb leaderboard``'s sink).
SQLite keeps a page cache of ``CACHE_KIB`` and filters and sorts on disk, so the memory of such a stage does
not grow with the number of records; the file is deleted when the database is closed."""
from __future__ import annotations

import os
import sqlite3
import tempfile
from types import TracebackType

MAX_PARAMETERS = 500  # values bound in one statement (SQLite allows 999 in older builds)
CACHE_KIB = 1024  # SQLite's page cache (its default is 2,000 KiB); the rest of the database stays on disk


class Spill:
    """A fresh database made from *schema* (SQL statements), in one transaction that is never committed to
    a journal: nothing here outlives the process, so nothing is synced or journaled."""

    def __init__(self, schema: str) -> None:
        descriptor, self.path = tempfile.mkstemp(prefix="apb-spill-", suffix=".sqlite")
        os.close(descriptor)
        self.closed = False
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.executescript(f"PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                                  f"PRAGMA locking_mode = EXCLUSIVE; PRAGMA temp_store = FILE; "
                                  f"PRAGMA cache_size = -{CACHE_KIB};\n{schema}")
            self.db.execute("BEGIN")  # one transaction for the database's life: no commit per statement
        except BaseException:
            os.unlink(self.path)
            raise

    def close(self) -> None:
        """Close the database and delete its file (idempotent)."""
        if not self.closed:
            self.closed = True
            self.db.close()
            os.unlink(self.path)

    def __enter__(self) -> "Spill":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
