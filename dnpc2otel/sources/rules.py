"""Rules compiled to DuckDB SQL: matched records → staged rows per rule → observation rows.

Each rule's matches (over all files of its definition) land in a staging table; carried and derived
fields and every emit are then SQL over those tables, inserted into `observed.observations` by name.
"""

from __future__ import annotations

import duckdb

from ..tables import OBSERVED
from .definitions import Definition, Emit, Rule
from .templates import json_object_sql, quote_ident, quote_literal, to_sql
from .timeparse import is_epoch, to_ns


def match_rule(con: duckdb.DuckDBPyConnection, rule: Rule, table: str, created: set[str]) -> None:
    """Append the records of table `rec` that `rule` matches to its staging table."""
    pat = quote_literal(rule.match)
    where = f"is_record AND regexp_matches({quote_ident(rule.input_field)}, {pat})"
    if rule.logger:
        where += f" AND starts_with(logger, {quote_literal(rule.logger)})"
    if rule.groups:
        names = ", ".join(quote_literal(g) for g in rule.groups)
        groups = ", ".join(f"nullif(g.{quote_ident(g)}, '') AS {quote_ident(g)}" for g in rule.groups)
        select = (
            f"SELECT * EXCLUDE (g, is_record, text), {groups} FROM "
            f"(SELECT *, regexp_extract({quote_ident(rule.input_field)}, {pat}, [{names}]) AS g FROM rec WHERE {where})"
        )
    else:
        select = f"SELECT * EXCLUDE (is_record, text) FROM rec WHERE {where}"
    if table in created:
        con.execute(f"INSERT INTO {table} BY NAME {select}")
    else:
        con.execute(f"CREATE TEMP TABLE {table} AS {select}")
        created.add(table)


def emit_rule(
    con: duckdb.DuckDBPyConnection,
    definition: Definition,
    rule: Rule,
    tables: dict[str, str],
    created: set[str],
) -> int:
    """Turn a rule's staged matches into observation rows; returns how many."""
    table = tables[rule.name]
    base = f"SELECT * FROM {table}"
    if rule.carry:
        c = rule.carry
        sources = [tables[r] for r in c.source_rules if tables[r] in created]
        if not sources:
            base = f"SELECT *, {', '.join(f'NULL::VARCHAR AS {quote_ident(x)}' for x in c.fields)} FROM {table}"
        else:
            keys = "".join(", " + quote_ident(k) for k in c.key)  # no key: the nearest line of the file
            frame = (
                "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
                if c.direction == "previous"
                else "ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING"
            )
            fn = "last_value" if c.direction == "previous" else "first_value"
            carried = ", ".join(
                f"{fn}({quote_ident(x)} IGNORE NULLS) OVER (PARTITION BY source{keys} ORDER BY line {frame}) "
                f"AS {quote_ident(x)}"
                for x in c.fields
            )
            src_cols = ", ".join(quote_ident(x) for x in ("source", "line", *c.key, *c.fields))
            lenders = " UNION ALL BY NAME ".join(f"SELECT {src_cols}, false AS __self FROM {s}" for s in sources)
            base = (
                f"SELECT * EXCLUDE (__self) FROM (SELECT * EXCLUDE ({', '.join(quote_ident(x) for x in c.fields)}), "
                f"{carried} FROM (SELECT *, true AS __self FROM {table} UNION ALL BY NAME {lenders})) WHERE __self"
            )
    if rule.derive:
        derived = ", ".join(f"({expr}) AS {quote_ident(k)}" for k, expr in rule.derive.items())
        base = f"SELECT *, {derived} FROM ({base})"
    total = 0
    for i, emit in enumerate(rule.emit):
        sql = _emit_sql(definition, rule, emit, base, i)
        row = con.execute(f"INSERT INTO {OBSERVED}.observations BY NAME {sql}").fetchone()
        total += int(row[0]) if row else 0
    return total


def _emit_sql(definition: Definition, rule: Rule, emit: Emit, base: str, index: int) -> str:
    src = base
    if emit.each:
        unnests = ", ".join(f"unnest({expr}) AS {quote_ident(k)}" for k, expr in emit.each.items())
        src = f"SELECT *, {unnests} FROM ({base})"
    ctype, cid = emit.context.split(":", 1)
    relation, rtype, rid = "NULL", "NULL", "NULL"
    if emit.parent_ref:
        ptype, pid = emit.parent_ref
        relation, rtype, rid = "'child_of'", quote_literal(ptype), to_sql(pid)
    elif emit.link:
        ltype, lid = emit.link.split(":", 1)
        relation, rtype, rid = quote_literal(emit.relation or "link"), quote_literal(ltype), to_sql(lid)
    elif emit.alias:
        relation, rtype, rid = "'alias'", "'run'", to_sql(emit.alias)
    time_ns, local_ns = "time_ns", "local_ns"
    if emit.time:  # the event's own time field (epoch, or naive local time like a format's)
        t = to_ns(quote_ident(emit.time), emit.time_format)
        time_ns, local_ns = (t, "NULL") if is_epoch(emit.time_format) else ("NULL", t)
    cols = {
        "run_key": "run_key",
        "context_type": quote_literal(ctype),
        "context_id": to_sql(cid),
        "event": to_sql(emit.event) if emit.event else "NULL",
        "time_ns": f"CAST({time_ns} AS BIGINT)",
        "local_ns": f"CAST({local_ns} AS BIGINT)",
        "clock": "clock",
        "bounds": "true" if emit.bounds else "false",
        "attributes": json_object_sql(emit.attributes),
        "event_attributes": json_object_sql(emit.event_attributes),
        "relation": relation,
        "related_type": rtype,
        "related_id": rid,
        "source": "source",
        "line": "line",
        "converter": quote_literal(definition.name),
        "rule": quote_literal(rule.name),
        "priority": str(definition.priority),
    }
    where = ["context_id IS NOT NULL"]
    if emit.parent or emit.link or emit.alias:
        where.append("related_id IS NOT NULL")
    select = ", ".join(f"{expr} AS {name}" for name, expr in cols.items())
    cond = f" WHERE {emit.where}" if emit.where else ""
    return f"SELECT * FROM (SELECT {select} FROM ({src}){cond}) WHERE {' AND '.join(where)}"


