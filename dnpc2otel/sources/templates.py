"""Value templates of converter definitions, compiled to DuckDB SQL expressions (and small SQL helpers).

A template is text with `{field}` or `{field|int}` / `{field|float}` placeholders; fields are regular
expression groups, derived fields or carried fields of the matched record. Any NULL field makes the whole
value NULL (SQL `||` propagates NULL), so an emit whose context id is NULL produces nothing and an
attribute whose value is NULL is left out.
"""

from __future__ import annotations

import re

import duckdb

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|(int|float|str))?\}")
_CASTS = {"int": "BIGINT", "float": "DOUBLE"}


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fields_of(template: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(template)}


def to_sql(template: str) -> str:
    """`"{task}.{try}"` → `(CAST("task" AS VARCHAR) || '.' || CAST("try" AS VARCHAR))`.

    A template that is a single typed placeholder (`{task|int}`) keeps its type, so JSON attributes get
    numbers, not strings.
    """
    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        field, cast = whole.group(1), whole.group(2)
        col = f"nullif(CAST({quote_ident(field)} AS VARCHAR), '')"
        return f"TRY_CAST({col} AS {_CASTS[cast]})" if cast in _CASTS else col
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.start() > pos:
            parts.append(quote_literal(template[pos : m.start()]))
        col = f"nullif(CAST({quote_ident(m.group(1))} AS VARCHAR), '')"
        if m.group(2) in _CASTS:  # inside text a cast normalises the number ("007" → "7"); not a number: NULL
            col = f"CAST(TRY_CAST({col} AS {_CASTS[m.group(2)]}) AS VARCHAR)"
        parts.append(col)
        pos = m.end()
    if pos < len(template) or not parts:
        parts.append(quote_literal(template[pos:]))
    return "(" + " || ".join(parts) + ")"


def json_object_sql(attributes: dict[str, str]) -> str:
    """A JSON object text of the non-NULL attribute values, built column-wise."""
    if not attributes:
        return "'{}'"
    members = [
        f"CASE WHEN ({to_sql(t)}) IS NULL THEN NULL ELSE {quote_literal(_json_key(k))} || to_json({to_sql(t)}) END"
        for k, t in attributes.items()
    ]
    return "('{' || concat_ws(',', " + ", ".join(members) + ") || '}')"


def json_member_path(key: str) -> str:
    """'$."a.b"': a JSON path to a member whose name may hold dots."""
    return '$."' + key.replace('"', '\\"') + '"'


def _json_key(key: str) -> str:
    import json

    return json.dumps(key) + ":"


def rows_table(con: duckdb.DuckDBPyConnection, name: str, columns: str, rows: list[tuple]) -> None:
    """A small temp table of declarations (context types, causal pairs, …) for the SQL to join."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({columns})")
    if rows:
        con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' for _ in columns.split(','))})", rows)
