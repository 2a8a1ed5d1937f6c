"""Time: turn every observation's time into UTC epoch nanoseconds.

monitoring.db and older executor logs carry naive local wall-clock times. parsl.log records carry both
the epoch (`created`) and the local time (`asctime`, to the second) of the same instant, so the run's UTC
offset is the (15-minute-rounded) difference, taken as the most common one over all such records.
`--timezone` overrides the inference. The result, and how it was obtained, is kept in the `runs` table.
"""

from __future__ import annotations

import re

import duckdb

from ..errors import UserError
from ..sources.templates import quote_literal

_FIXED = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d\d))?$")
QUARTER_HOUR_NS = 900 * 10**9


def fixed_offset_seconds(tz: str) -> int | None:
    """'+02:00', '-0530', 'UTC+1', 'UTC', 'Z' → seconds east of UTC; None for a zone name."""
    if tz.upper() in ("UTC", "Z", "GMT"):
        return 0
    m = _FIXED.match(tz.strip())
    if not m:
        return None
    sign = 1 if m.group(1) == "+" else -1
    return sign * (int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60)


def check_timezone(con: duckdb.DuckDBPyConnection, tz: str) -> None:
    if fixed_offset_seconds(tz) is not None:
        return
    try:
        con.execute(f"SELECT epoch_ns(timezone({quote_literal(tz)}, TIMESTAMP '2024-01-01'))").fetchone()
    except duckdb.Error:
        raise UserError(f"--timezone {tz!r}: not a time zone name (e.g. America/Chicago) or offset (+02:00)") from None


def infer_offsets(con: duckdb.DuckDBPyConnection, timezone: str | None, reference_clock: str) -> None:
    """Create table run_clock(run, offset_ns, offset_source, tz) for every run of `run_seed`, from `obs`.

    The run's offset is voted by the records of the reference clock that carry both times."""
    if timezone is not None and fixed_offset_seconds(timezone) is not None:
        off = fixed_offset_seconds(timezone) or 0
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE run_clock AS SELECT DISTINCT run, {off * 10**9}::BIGINT AS offset_ns, "
            f"{quote_literal('given: --timezone ' + timezone)} AS offset_source, {quote_literal(timezone)} AS tz "
            "FROM run_seed"
        )
        return
    if timezone is not None:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE run_clock AS SELECT DISTINCT run, NULL::BIGINT AS offset_ns, "
            f"{quote_literal('given: --timezone ' + timezone)} AS offset_source, {quote_literal(timezone)} AS tz "
            "FROM run_seed"
        )
        return
    ref = quote_literal(reference_clock)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE run_clock AS
        WITH pairs AS (
            SELECT run, round((local_ns - (time_ns // 1000000000) * 1000000000) / {QUARTER_HOUR_NS})::BIGINT
                        * {QUARTER_HOUR_NS} AS off
            FROM obs WHERE time_ns IS NOT NULL AND local_ns IS NOT NULL AND clock = {ref}
        ), votes AS (
            SELECT run, off, count(*) AS n FROM pairs GROUP BY ALL
        ), best AS (
            SELECT run, arg_max(off, n) AS offset_ns, sum(n) AS n FROM votes GROUP BY run
        ),
        -- no record carries both (JSON logging has the epoch only): the same event of the same context,
        -- stamped in epoch time by one source and in naive local time on the reference clock by another
        -- (parsl.jsonlog and monitoring.db), gives the offset to within the sources' few ms
        stamped AS (
            SELECT run, context_type, context_id, event,
                   min(time_ns) FILTER (WHERE local_ns IS NULL) AS epoch_ns,
                   min(local_ns) FILTER (WHERE time_ns IS NULL AND clock = {ref}) AS local_ns
            FROM obs WHERE event IS NOT NULL AND run NOT IN (SELECT run FROM best) GROUP BY ALL
        ), cross_votes AS (
            SELECT run, round((local_ns - epoch_ns) / {QUARTER_HOUR_NS})::BIGINT * {QUARTER_HOUR_NS} AS off,
                   count(*) AS n
            FROM stamped WHERE epoch_ns IS NOT NULL AND local_ns IS NOT NULL GROUP BY ALL
        ), cross_best AS (
            SELECT run, arg_max(off, n) AS offset_ns, sum(n) AS n FROM cross_votes GROUP BY run
        )
        SELECT r.run, coalesce(b.offset_ns, x.offset_ns, 0)::BIGINT AS offset_ns,
               CASE WHEN b.run IS NOT NULL THEN 'inferred from ' || b.n || ' records with epoch and local time'
                    WHEN x.run IS NOT NULL THEN 'inferred from ' || x.n
                         || ' events stamped in epoch time by one source and in local time by another'
                    ELSE 'assumed: UTC (no source gives both epoch and local time; use --timezone)' END
                 AS offset_source,
               NULL::VARCHAR AS tz
        FROM (SELECT DISTINCT run FROM run_seed) r LEFT JOIN best b USING (run) LEFT JOIN cross_best x USING (run)
        """
    )


def infer_clock_offsets(con: duckdb.DuckDBPyConnection, reference_clock: str) -> None:
    """Create table clock_offset(run, clock, offset_ns): the UTC offset of each other host's clock, where
    its own records carry both times (2026 worker logs do); local-only clocks fall back to the run's."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE clock_offset AS
        WITH votes AS (
            SELECT run, clock,
                   round((local_ns - (time_ns // 1000000000) * 1000000000) / {QUARTER_HOUR_NS})::BIGINT
                       * {QUARTER_HOUR_NS} AS off, count(*) AS n
            FROM obs WHERE time_ns IS NOT NULL AND local_ns IS NOT NULL AND clock <> {quote_literal(reference_clock)}
            GROUP BY ALL
        )
        SELECT run, clock, arg_max(off, n) AS offset_ns FROM votes GROUP BY ALL
        """
    )


def resolved_time_sql(alias: str = "o") -> str:
    """SQL for an observation's UTC time, given `run_clock` joined as `c` and `clock_offset` as `co`."""
    local = f"{alias}.local_ns"
    zone = f"epoch_ns(timezone(c.tz, make_timestamp({local} // 1000)))"
    # a zone name: let DuckDB's time zone data resolve each local time (DST included), keep sub-µs digits
    by_zone = f"({zone} + {local} % 1000)"
    offset = "coalesce(co.offset_ns, c.offset_ns)"
    return f"coalesce({alias}.time_ns, CASE WHEN {offset} IS NULL THEN {by_zone} ELSE {local} - {offset} END)"
