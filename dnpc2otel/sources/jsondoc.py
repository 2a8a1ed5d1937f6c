"""Whole-document JSON sources (format kind `json`): one file is one JSON document, e.g. `sacct --json`.

The file is read by DuckDB (`read_text`, then cast to JSON) into one row of table `json_source.document`:
`doc` (the document), `source` (its path relative to the run_dir) and `run_key` (the run its path names,
NULL when it names none: the core then ties it to a run as it does a log file). The definition's `queries`
(DuckDB SQL, as for `sqlite` sources: see sqlite.insert_query_rows) turn it into observations, typically
with `json_each(doc, '$.jobs')`. Nothing of the document becomes SQL text: the path travels as a parameter.
A file that is not valid JSON (cut, not UTF-8) is reported by one warning, and nothing of it is read.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ..errors import first_line

JSON_SCHEMA = "json_source"


def load_json_document(
    con: duckdb.DuckDBPyConnection, path: Path, source: str, run_key: str | None, schema: str = JSON_SCHEMA
) -> str | None:
    """Load one file as table `{schema}.document`; returns why it is not a JSON document, or None."""
    con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    con.execute(f"CREATE SCHEMA {schema}")
    try:
        con.execute(
            f"CREATE TABLE {schema}.document AS SELECT content::JSON AS doc, $source::VARCHAR AS source, "
            "$run_key::VARCHAR AS run_key FROM read_text($path)",
            {"path": str(path), "source": source, "run_key": run_key},
        )
    except duckdb.Error as e:
        con.execute(f"CREATE TABLE {schema}.document (doc JSON, source VARCHAR, run_key VARCHAR)")
        return f"not a JSON document ({first_line(e).split(' when casting')[0]})"
    return None


def load_json_text(con: duckdb.DuckDBPyConnection, text: str, schema: str = JSON_SCHEMA) -> str | None:
    """A sample's document (`document = '…'`), loaded as a file's would be (run directory 000)."""
    con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    con.execute(f"CREATE SCHEMA {schema}")
    try:
        con.execute(f"CREATE TABLE {schema}.document AS SELECT $text::JSON AS doc, 'sample.json' AS source, "
                    "'dir:000' AS run_key", {"text": text})
    except duckdb.Error as e:
        return f"not a JSON document ({first_line(e)})"
    return None
