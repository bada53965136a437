"""The run history: every result recorded in SQLite, the cache, the comparison with a baseline.

It depends only on the result model (and the input key's parts), and the run
sees it only through `nixtest.run.cache.ResultCache`.

    store.HistoryStore     the database: runs, results, queries
    cache.HistoryCache     the cache protocol over the store
    compare                a run against a baseline: a run id, junit.xml or report.json
"""

from __future__ import annotations

from pathlib import Path

#: the database's file name in the state folder
DATABASE = "history.sqlite"


def database_path(state: Path) -> Path:
    return Path(state) / DATABASE
