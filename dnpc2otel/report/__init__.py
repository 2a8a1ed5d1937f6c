"""Stage 5, report: `dnpc2otel report DB -o report.html`, one self-contained HTML page per run drawn from the
analysis views (figures: the plots; page: the HTML). It reads the DuckDB file only.

One run per page: a database holding several runs (a campaign) reports the one asked for with `run`
(run id or trace id), by default the run with the most spans, and lists the others.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ..errors import UserError
from . import figures, page

SLOWEST = 20
TOP = 25


@dataclass
class ReportStats:
    path: Path
    run_id: str
    trace_id: str
    plots: int
    bytes: int
    seconds: float
    other_runs: int


def render(database: str | Path, out: str | Path, run: str | None = None) -> ReportStats:
    """Write the report of one run of `database` (a dnpc2otel DuckDB file) to `out`, atomically."""
    t0 = time.perf_counter()
    from ..analysis.session import open_db

    con = open_db(database)
    try:
        runs = con.execute("SELECT run_id, trace_id, run_dir, spans FROM runs ORDER BY spans DESC, run_id").fetchall()
        if not runs:
            raise UserError(f"{database}: no run in this database")
        chosen = [r for r in runs if run in (r[0], r[1])] if run else runs[:1]
        if not chosen:
            raise UserError(f"{database}: no run {run!r} (runs: {', '.join(r[0] for r in runs[:10])})")
        run_id, trace, run_dir, _ = chosen[0]
        sections, plots = _sections(con, trace, runs)
    finally:
        con.close()
    html = page.document(f"Where the time went: {run_id}", f"run directory {run_dir} · trace {trace} · "
                         f"drawn by dnpc2otel from {Path(database).name}", sections)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return ReportStats(target, run_id, trace, plots, target.stat().st_size, time.perf_counter() - t0, len(runs) - 1)


def _sections(con: duckdb.DuckDBPyConnection, trace: str, runs: list[tuple]) -> tuple[list[page.Section], int]:
    out = [page.Section("run", "The run", _overview(con, trace, runs))]
    plots = 0
    for anchor, title, draw in figures.FIGURES:
        drawn = draw(con, trace)
        body = page.figure(drawn[0], drawn[1], title) if drawn else \
            '<p class="muted">Nothing to draw: the sources of this run do not say it.</p>'
        plots += bool(drawn)
        body += _tables(con, trace, anchor)
        out.append(page.Section(anchor, title, body))
    out.append(page.Section("slowest", "The slowest tasks, and the chain they waited on", _slowest(con, trace)))
    out.append(page.Section("disagreements", "Where the sources disagree", _disagreements(con, trace)))
    return out, plots


def _ns(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC") if ns else "?"


def _overview(con: duckdb.DuckDBPyConnection, trace: str, runs: list[tuple]) -> str:
    start, end, spans = con.execute("SELECT start_time_unix_nano, end_time_unix_nano, spans FROM runs "
                                    "WHERE trace_id = ?", [trace]).fetchone()
    tasks, failed, tries, failed_tries = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status_code = 'ERROR'), sum(tries), sum(failed_tries) "
        "FROM analysis.task_breakdown WHERE trace_id = ?", [trace]).fetchone()
    contexts = con.execute("SELECT context_type, count(*) FROM spans WHERE trace_id = ? GROUP BY 1 ORDER BY 2 DESC",
                           [trace]).fetchall()
    body = page.facts([
        ("started", _ns(start)), ("ended", _ns(end)),
        ("duration", f"{(end - start) / 1e9:,.3f} s" if start and end else "?"),
        ("tasks", f"{tasks:,} ({failed:,} failed)"), ("tries", f"{tries or 0:,} ({failed_tries or 0:,} failed)"),
        ("spans", f"{spans:,}: " + ", ".join(f"{t} {n:,}" for t, n in contexts)),
    ])
    parts = con.execute("SELECT part, sum(total_s), sum(tasks) FROM analysis.state_times WHERE trace_id = ? "
                        "GROUP BY 1 ORDER BY 2 DESC", [trace]).fetchall()
    if parts:
        body += "<h3>Where the tasks' time went, summed over tasks</h3>" + page.table(
            ["part", "seconds", "tasks"], parts, numeric={1, 2})
    if len(runs) > 1:
        body += f"<h3>Other runs in this database ({len(runs) - 1:,})</h3>" + page.table(
            ["run id", "trace id", "run directory", "spans"], [r for r in runs if r[1] != trace][:TOP],
            numeric={3}, total=len(runs) - 1)
    return body


def _tables(con: duckdb.DuckDBPyConnection, trace: str, anchor: str) -> str:
    if anchor == "utilisation":
        rows = con.execute("SELECT executor, block_id, queue_wait_s, tasks_pending_at_submit, nodes, node_s, "
                           "busy_slot_s, idle_node_s, utilisation FROM analysis.block_utilisation WHERE trace_id = ? "
                           "ORDER BY submitted_unix_nano LIMIT ?", [trace, TOP]).fetchall()
        n = _count(con, "analysis.block_utilisation", trace)
        return page.table(["executor", "block", "queue wait s", "tasks pending at submit", "nodes", "node s",
                           "busy slot s", "idle node s", "utilisation"], rows, numeric=set(range(2, 9)),
                          total=n) if rows else ""
    if anchor == "critical-path":
        rows = con.execute("SELECT step, task_id, app, duration_s, contribution_s, queued_s, dispatch_s, execution_s, "
                           "result_return_s FROM analysis.critical_path WHERE trace_id = ? ORDER BY step LIMIT ?",
                           [trace, TOP]).fetchall()
        return page.table(["step", "task", "app", "duration s", "on the path s", "queued s", "dispatch s",
                           "execution s", "return s"], rows, numeric={0, 1, 3, 4, 5, 6, 7, 8},
                          total=_count(con, "analysis.critical_path", trace)) if rows else ""
    if anchor == "failures":
        rows = con.execute("SELECT app, exception, host, failed_tries, retried, failed_s FROM analysis.failure_cost "
                           "WHERE trace_id = ? ORDER BY failed_s DESC NULLS LAST LIMIT ?", [trace, TOP]).fetchall()
        cascade = con.execute("SELECT root_app, root_exception, count(*), max(depth) FROM analysis.dependency_failures "
                              "WHERE trace_id = ? GROUP BY 1, 2 ORDER BY 3 DESC LIMIT ?", [trace, TOP]).fetchall()
        body = page.table(["app", "exception", "host", "failed tries", "retried", "seconds"], rows,
                          numeric={3, 4, 5}, total=_count(con, "analysis.failure_cost", trace)) if rows else ""
        if cascade:
            body += "<h3>Dependency-failure cascades</h3>" + page.table(
                ["failure at the root", "its exception", "tasks that failed on it", "deepest"], cascade,
                numeric={2, 3})
        return body
    if anchor == "resources":
        rows = con.execute("SELECT app, tries, sampled_tries, cpu_s, peak_rss_bytes / 1048576.0, read_bytes, "
                           "write_bytes, memory_limit_bytes / 1048576.0, over_memory_tries FROM analysis.app_resources "
                           "WHERE trace_id = ? ORDER BY app LIMIT ?", [trace, TOP]).fetchall()
        return page.table(["app", "tries", "sampled", "CPU s", "peak RSS MiB", "read bytes", "written bytes",
                           "memory limit MiB", "tries over memory"], rows, numeric=set(range(1, 9))) if rows else ""
    return ""


def _slowest(con: duckdb.DuckDBPyConnection, trace: str) -> str:
    rows = con.execute("""
        SELECT task_id, app, final_state, duration_s, pending_s, queued_s, execution_s, retries_s, span_id
        FROM analysis.task_breakdown WHERE trace_id = ? ORDER BY duration_s DESC NULLS LAST, task_id LIMIT ?""",
                       [trace, SLOWEST]).fetchall()
    if not rows:
        return '<p class="muted">No task in this run.</p>'
    out = []
    for *cols, span in rows:
        out.append([*cols, " ← ".join(f"task {t}" for t in _chain(con, trace, span)) or "no dependency"])
    return page.table(["task", "app", "state", "duration s", "pending s", "queued s", "execution s", "retries s",
                       "waited on (the dependency that finished last, and its own)"], out, numeric={0, 3, 4, 5, 6, 7},
                      total=_count(con, "analysis.task_breakdown", trace))


def _chain(con: duckdb.DuckDBPyConnection, trace: str, span: str, limit: int = 12) -> list[int]:
    """The dependency that finished last, then its own, and so on: what a slow task waited for."""
    chain: list[int] = []
    seen = {span}
    for _ in range(limit):
        row = con.execute("""
            SELECT d.span_id, d.task_id FROM span_links l
            JOIN analysis.task_breakdown d ON d.trace_id = l.linked_trace_id AND d.span_id = l.linked_span_id
            WHERE l.trace_id = ? AND l.span_id = ? AND l.attributes->>'dnpc.relation' = 'depends_on'
            ORDER BY d.end_time_unix_nano DESC NULLS LAST, d.task_id LIMIT 1""", [trace, span]).fetchone()
        if not row or row[0] in seen:
            break
        span = row[0]
        seen.add(span)
        chain.append(row[1])
    return chain


def _disagreements(con: duckdb.DuckDBPyConnection, trace: str) -> str:
    rows = con.execute("SELECT kind, subject, context_type, count(*), max(size_ms) FROM disagreements "
                       "WHERE trace_id = ? GROUP BY ALL ORDER BY 4 DESC, 1, 2 LIMIT ?", [trace, TOP]).fetchall()
    if not rows:
        return "<p>None: every source that describes the same thing agrees within the threshold.</p>"
    total = con.execute("SELECT count(DISTINCT (kind, subject, context_type)) FROM disagreements WHERE trace_id = ?",
                        [trace]).fetchone()[0]
    return page.table(["kind", "subject", "context type", "count", "largest ms"], rows, numeric={3, 4}, total=total)


def _count(con: duckdb.DuckDBPyConnection, view: str, trace: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {view} WHERE trace_id = ?", [trace]).fetchone()[0])
