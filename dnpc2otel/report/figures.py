"""The report's plots, drawn with matplotlib from the analysis views, as PNG bytes.

Every plot is bounded whatever the run's size: PNG (its size does not grow with the number of bars), at
most MAX_BARS execution bars in the Gantt (beyond that, or beyond MAX_ROWS worker slots, the Gantt becomes
a heat map of busy slots per node over time bins), at most MAX_BUCKETS time buckets, and the most frequent
MAX_APPS apps by name.
"""

from __future__ import annotations

import io
from collections import defaultdict

import duckdb

MAX_BARS = 20_000
MAX_ROWS = 160
MAX_BUCKETS = 400
MAX_APPS = 8
PARTS = ("pending", "launch", "queued", "dispatch", "execution", "result_return", "completion", "retries",
         "join_wait", "unattributed")
COLOURS = {  # one colour per part, the same in every plot
    "pending": "#bab0ac", "launch": "#9c755f", "queued": "#f28e2b", "dispatch": "#edc948",
    "execution": "#4e79a7", "result_return": "#76b7b2", "completion": "#59a14f", "retries": "#e15759",
    "join_wait": "#b07aa1", "unattributed": "#d4d4d4", "retry_wait": "#ff9da7",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _bucket_s(con: duckdb.DuckDBPyConnection, trace: str) -> float:
    row = con.execute("SELECT (end_time_unix_nano - start_time_unix_nano) / 1e9 FROM runs WHERE trace_id = ?",
                      [trace]).fetchone()
    span = float(row[0] or 1.0) if row else 1.0
    # a round bucket size giving at most MAX_BUCKETS buckets
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= MAX_BUCKETS:
            return float(step)
    return span / MAX_BUCKETS


def gantt(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    """Executions per worker slot (bars coloured by app), or busy slots per node over time when too many."""
    rows = con.execute("""
        SELECT coalesce(b.slot, coalesce(b.executor, '?') || ' (no slot known)') AS slot, b.node, coalesce(t.app, '?'),
               (t.start_time_unix_nano - r.start_time_unix_nano) / 1e9 AS t0, t.duration_s
        FROM analysis.task_timeline t JOIN analysis.task_breakdown b
          ON b.trace_id = t.trace_id AND b.span_id = t.task_span_id
        JOIN runs r ON r.trace_id = t.trace_id
        WHERE t.trace_id = ? AND t.part = 'execution' AND t.duration_s IS NOT NULL
        ORDER BY 1, 4""", [trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    slots = sorted({r[0] for r in rows})
    if len(rows) <= MAX_BARS and len(slots) <= MAX_ROWS:
        apps = _top_apps(r[2] for r in rows)
        cmap = plt.get_cmap("tab10")
        colour = {a: cmap(i % 10) for i, a in enumerate(apps)}
        fig, ax = plt.subplots(figsize=(11, max(2.5, 0.22 * len(slots) + 1.2)))
        by_slot: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for slot, _, app, t0, dur in rows:
            by_slot[slot][app if app in colour else "other"].append((t0, max(dur, 1e-4)))
        for y, slot in enumerate(slots):
            for app, bars in by_slot[slot].items():
                ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=colour.get(app, "#999999"), linewidth=0)
        ax.set_yticks(range(len(slots)), slots, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the run started")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour[a]) for a in apps]
        ax.legend(handles, apps, fontsize=7, loc="upper right", ncol=min(4, len(apps)))
        ax.set_title("Task executions per worker slot")
        return _png(fig), f"{len(rows):,} executions on {len(slots):,} worker slots"
    # too many to draw one by one: the share of each node's slots that were busy, per time bin
    nodes = sorted({r[1] or r[0] for r in rows})
    end = max(t0 + d for _, _, _, t0, d in rows)
    bins = MAX_BUCKETS
    width = end / bins or 1.0
    import numpy as np

    index = {n: i for i, n in enumerate(nodes)}
    busy = np.zeros((len(nodes), bins))
    for slot, node, _, t0, dur in rows:
        a, b = t0 / width, (t0 + dur) / width
        i = index[node or slot]
        for k in range(int(a), min(int(b) + 1, bins)):
            busy[i, k] += max(0.0, min(b, k + 1) - max(a, k))
    per_node = defaultdict(set)
    for slot, node, *_ in rows:
        per_node[node or slot].add(slot)
    share = busy / np.array([[len(per_node[n])] for n in nodes])
    fig, ax = plt.subplots(figsize=(11, max(2.5, min(12, 0.05 * len(nodes) + 2))))
    im = ax.imshow(share, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                   extent=(0, end, len(nodes), 0))
    fig.colorbar(im, ax=ax, label="busy share of the node's slots")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel(f"{len(nodes):,} nodes")
    ax.set_title("Busy worker slots per node over time")
    return _png(fig), f"{len(rows):,} executions on {len(slots):,} slots of {len(nodes):,} nodes (binned)"


def concurrency(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    bucket = _bucket_s(con, trace)
    rows = con.execute("SELECT t_s, part, mean_tasks FROM analysis.concurrency(bucket_s := ?) WHERE trace_id = ? "
                       "ORDER BY t_s", [bucket, trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    times = sorted({r[0] for r in rows})
    at = {t: i for i, t in enumerate(times)}
    parts = [p for p in (*PARTS, "retry_wait") if any(r[1] == p for r in rows)]
    parts += sorted({r[1] for r in rows} - set(parts))
    series = {p: [0.0] * len(times) for p in parts}
    for t, p, v in rows:
        series[p][at[t]] = v or 0.0
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.stackplot(times, [series[p] for p in parts], labels=parts, step="post",
                 colors=[COLOURS.get(p, "#999999") for p in parts])
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("tasks (time-weighted mean)")
    ax.legend(fontsize=7, loc="upper right", ncol=3)
    ax.set_title(f"Tasks in each part of their life ({bucket:g} s buckets)")
    return _png(fig), f"{len(times)} buckets of {bucket:g} s"


def durations(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    """Histograms of each part's duration per app (log scale): where each app's tasks spend their time."""
    cols = ", ".join(f"{p}_s" for p in PARTS)
    rows = con.execute(f"SELECT coalesce(app, '?'), {cols} FROM analysis.task_breakdown WHERE trace_id = ?",
                       [trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    import numpy as np

    apps = _top_apps(r[0] for r in rows)
    fig, axes = plt.subplots(len(apps), 1, figsize=(11, 1.9 * len(apps) + 0.6), squeeze=False)
    values = [v for r in rows for v in r[1:] if v and v > 0]
    lo, hi = (max(min(values), 1e-6), max(values)) if values else (1e-6, 1.0)
    edges = np.logspace(np.log10(lo), np.log10(hi * 1.01), 40)
    for ax, app in zip(axes[:, 0], apps, strict=True):
        mine = [r for r in rows if r[0] == app]
        for i, part in enumerate(PARTS):
            data = [r[i + 1] for r in mine if r[i + 1] and r[i + 1] > 0]
            if data:
                ax.hist(data, bins=edges, histtype="step", linewidth=1.4, label=part, color=COLOURS[part])
        ax.set_xscale("log")
        ax.set_ylabel(f"{app}\n({len(mine)} tasks)", fontsize=8)
        ax.legend(fontsize=6, loc="upper right", ncol=5)
    axes[-1, 0].set_xlabel("seconds (log scale)")
    axes[0, 0].set_title("Duration of each part of a task's life, per app")
    return _png(fig), f"{len(rows):,} tasks, {len(apps)} apps"


def utilisation(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    bucket = _bucket_s(con, trace)
    rows = con.execute("SELECT coalesce(executor, '?'), t_s, slots, busy_slots "
                       "FROM analysis.utilisation(bucket_s := ?) "
                       "WHERE trace_id = ? ORDER BY executor, t_s", [bucket, trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    executors = sorted({r[0] for r in rows})
    fig, axes = plt.subplots(len(executors), 1, figsize=(11, 2.6 * len(executors)), squeeze=False)
    for ax, ex in zip(axes[:, 0], executors, strict=True):
        mine = [r for r in rows if r[0] == ex]
        t = [r[1] for r in mine]
        ax.fill_between(t, [r[2] or 0 for r in mine], step="post", color="#d4d4d4", label="slots alive")
        ax.fill_between(t, [r[3] or 0 for r in mine], step="post", color="#4e79a7", label="slots busy")
        ax.set_ylabel(ex, fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the run started")
    axes[0, 0].set_title(f"Worker slots alive and busy ({bucket:g} s buckets)")
    return _png(fig), f"{len(executors)} executors"


def critical_path(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    cols = list(PARTS)
    rows = con.execute(f"SELECT step, task_id, coalesce(app, '?'), {', '.join(f'{p}_s' for p in cols)} "
                       "FROM analysis.critical_path "
                       "WHERE trace_id = ? ORDER BY step", [trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, max(1.8, 0.32 * len(rows) + 1)))
    labels = [f"task {r[1]} ({r[2]})" for r in rows]
    left = [0.0] * len(rows)
    for i, part in enumerate(cols):
        widths = [r[3 + i] or 0.0 for r in rows]
        if any(widths):
            ax.barh(range(len(rows)), widths, left=left, color=COLOURS[part], label=part)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7, loc="lower right", ncol=5)
    ax.set_title("The critical path: each step split into the parts of its life")
    return _png(fig), f"{len(rows)} steps"


def failures(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    rows = con.execute("SELECT coalesce(app, '?'), coalesce(exception, '?'), sum(failed_s), sum(failed_tries) "
                       "FROM analysis.failure_cost WHERE trace_id = ? GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20",
                       [trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, max(1.8, 0.3 * len(rows) + 1)))
    ax.barh([f"{a}: {e} ({n})" for a, e, _, n in rows], [s or 0 for _, _, s, _ in rows], color="#e15759")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("seconds spent in tries that failed")
    ax.set_title("Failures and their cost, by app and exception (failed tries)")
    return _png(fig), f"{sum(r[3] for r in rows)} failed tries"


def resources(con: duckdb.DuckDBPyConnection, trace: str) -> tuple[bytes, str] | None:
    rows = con.execute("SELECT coalesce(app, '?'), cpu_s, peak_rss_bytes, over_memory_tries "
                       "FROM analysis.app_resources "
                       "WHERE trace_id = ? AND sampled_tries > 0 ORDER BY app", [trace]).fetchall()
    if not rows:
        return None
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, max(1.8, 0.3 * len(rows) + 1)))
    apps = [r[0] for r in rows]
    a.barh(apps, [r[1] or 0 for r in rows], color="#4e79a7")
    a.set_xlabel("CPU seconds (user + system)")
    b.barh(apps, [(r[2] or 0) / 2**20 for r in rows],
           color=["#e15759" if r[3] else "#59a14f" for r in rows])
    b.set_xlabel("peak resident memory of a try, MiB (red: a try went over its memory)")
    for ax in (a, b):
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    a.set_title("Resource use per app (monitoring's resource samples)")
    return _png(fig), f"{len(rows)} apps sampled"


def _top_apps(apps) -> list[str]:
    count: dict[str, int] = defaultdict(int)
    for a in apps:
        count[a or "?"] += 1
    return sorted(count, key=lambda a: (-count[a], a))[:MAX_APPS]


FIGURES = (
    ("gantt", "Where tasks ran", gantt),
    ("concurrency", "What tasks were doing", concurrency),
    ("durations", "How long each part took", durations),
    ("utilisation", "How busy the workers were", utilisation),
    ("critical-path", "What set the run's length", critical_path),
    ("failures", "What failures cost", failures),
    ("resources", "What the tasks used", resources),
)
