"""`dnpc2otel sql DB [QUERY]`: run SQL statements on a dnpc2otel database and print each result as a table,
CSV or JSON — the SQL entry point that comes with `pip install`, using the same DuckDB library that wrote
the file (a DuckDB shell of another release may not read its storage version)."""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import duckdb

from ..errors import UserError, first_line


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple]


def run(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[Result]:
    """Each statement's result, in order (statements that return nothing yield no result)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise UserError(f"SQL: {first_line(e)}") from None
    if not statements:
        raise UserError("SQL: no statement given")
    for stmt in statements:
        try:
            res = con.execute(stmt)
            if res.description is None:
                continue
            rows = res.fetchall()
        except duckdb.Error as e:
            raise UserError(f"SQL: {first_line(e)}") from None
        yield Result([d[0] for d in res.description], [str(d[1]) for d in res.description], rows)


def write(result: Result, fmt: str, out: TextIO = sys.stdout) -> None:
    """fmt: 'csv', 'json' (an array of objects) or 'text' (aligned columns with a header)."""
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(result.columns)
        for r in result.rows:
            w.writerow(["" if v is None else _text(v) for v in r])
    elif fmt == "json":
        objs = [{c: _json(v, t) for c, t, v in zip(result.columns, result.types, r, strict=True)} for r in result.rows]
        out.write(json.dumps(objs, ensure_ascii=False) + "\n")
    else:
        cells = [result.columns] + [[_cell(v) for v in r] for r in result.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(result.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out.write("\n".join(lines) + "\n")


def cells(result: Result) -> list[list[str]]:
    return [[_cell(v) for v in r] for r in result.rows]


def width(result: Result) -> int:
    """Characters a row of the boxed table takes (the widest cell of each column, plus borders)."""
    rows = [result.columns, *cells(result)]
    return sum(max(len(r[i]) for r in rows) + 3 for i in range(len(result.columns))) + 1


def _cell(v: Any) -> str:
    return "NULL" if v is None else _text(v)


def _text(v: Any) -> str:
    if isinstance(v, bytes | bytearray):
        return v.hex()
    if isinstance(v, datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list | dict | tuple):
        return json.dumps(v, default=str, ensure_ascii=False)
    return str(v)


def _json(v: Any, type_: str) -> Any:
    if v is None:
        return None
    if type_ == "JSON" and isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, list | tuple):
        return [_json(x, "") for x in v]
    if isinstance(v, dict):
        return {str(k): _json(x, "") for k, x in v.items()}
    return _text(v)
