"""Resource use per try and app from the monitoring samples of each try (CPU time, peak memory, I/O),
against the memory it asked for or could have.

Monitoring samples a try's (worker) process with its children; CPU time and bytes read and written are
cumulative since that process started, and a worker process runs many tries, so a try's use is what grew
between its first and its last sample (summed over its processes; NULL from a single sample), and
`cpu_cumulative_s` is the last sample as monitoring gives it. Peak memory is the largest resident size
sampled. The memory limit a
try is measured against is, best first: what it requested (cctools), what it was allocated (cctools), else
its share of its node (node memory / slots). `over_memory` flags a peak above that limit.
"""

from __future__ import annotations

from ..tables import ANALYSIS, View
from .vocabulary import (
    MEMORY_ALLOCATED_MB,
    MEMORY_MEASURED_MB,
    MEMORY_REQUESTED_JSON,
    RESOURCE_ATTRIBUTES,
    RESOURCE_EVENT,
    member,
)

A = ANALYSIS


def _sample(column: str) -> str:
    key = RESOURCE_ATTRIBUTES[column]
    return (f"TRY_CAST(coalesce({member(key, 'o', 'event_attributes')}, {member(key, 'o')}) AS DOUBLE)"
            f" AS {column}")


_MB = "1048576"

TRY_RESOURCES = View("try_resources", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the try"),
    ("task_id", "BIGINT", ""),
    ("try_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("host", "VARCHAR", ""),
    ("samples", "BIGINT", "monitoring resource samples of the try"),
    ("processes", "BIGINT", "distinct process ids sampled"),
    ("sampled_s", "DOUBLE", "from its first sample to its last"),
    ("cpu_user_s", "DOUBLE", "CPU time used in that window"),
    ("cpu_system_s", "DOUBLE", ""),
    ("cpu_s", "DOUBLE", "user + system"),
    ("cpu_per_sampled_s", "DOUBLE", "cpu_s / sampled_s: cores kept busy"),
    ("cpu_cumulative_s", "DOUBLE", "the last sample's CPU time: since the (worker) process started, children included"),
    ("execution_s", "DOUBLE", "time on the worker (try_breakdown)"),
    ("peak_rss_bytes", "BIGINT", "largest resident memory sampled"),
    ("peak_vms_bytes", "BIGINT", "largest virtual memory sampled"),
    ("read_bytes", "BIGINT", "read in the sampled window"),
    ("write_bytes", "BIGINT", "written in the sampled window"),
    ("memory_measured_bytes", "BIGINT", "peak memory a cctools worker measured"),
    ("memory_limit_bytes", "BIGINT", "what it is measured against"),
    ("memory_limit_basis", "VARCHAR", "requested, allocated, node_share (node memory / slots) or NULL"),
    ("over_memory", "BOOLEAN", "peak memory above the limit"),
), sql=f"""
WITH samples AS (
    SELECT o.trace_id, o.span_id, o.time_unix_nano AS t, {', '.join(_sample(c) for c in RESOURCE_ATTRIBUTES)}
    FROM observations o WHERE o.event = '{RESOURCE_EVENT}'
), per_process AS (  -- counters grow while the try runs: last minus first sample (never below 0)
    SELECT trace_id, span_id, pid, count(*) AS n, min(t) AS t0, max(t) AS t1, max(rss_bytes) AS rss,
           max(vms_bytes) AS vms, arg_max(cpu_user_s + cpu_system_s, t) AS cpu_cumulative,
           CASE WHEN count(*) > 1 THEN greatest(arg_max(cpu_user_s, t) - arg_min(cpu_user_s, t), 0) END
               AS cpu_user_s,
           CASE WHEN count(*) > 1 THEN greatest(arg_max(cpu_system_s, t) - arg_min(cpu_system_s, t), 0) END
               AS cpu_system_s,
           CASE WHEN count(*) > 1 THEN greatest(arg_max(read_bytes, t) - arg_min(read_bytes, t), 0) END
               AS read_bytes,
           CASE WHEN count(*) > 1 THEN greatest(arg_max(write_bytes, t) - arg_min(write_bytes, t), 0) END
               AS write_bytes
    FROM samples GROUP BY ALL
), used AS (
    SELECT trace_id, span_id, CAST(sum(n) AS BIGINT) AS samples, count(DISTINCT pid) AS processes,
           (max(t1) - min(t0)) / 1e9 AS sampled_s, sum(cpu_user_s) AS cpu_user_s, sum(cpu_system_s) AS cpu_system_s,
           sum(cpu_cumulative) AS cpu_cumulative_s, max(rss) AS rss, max(vms) AS vms, sum(read_bytes) AS read_bytes,
           sum(write_bytes) AS write_bytes
    FROM per_process GROUP BY ALL
), asked AS (  -- what the try's cctools task asked for, was given, was measured to use (MB)
    SELECT ts.trace_id, ts.try_span_id,
           max(TRY_CAST(json_extract_string({member(MEMORY_REQUESTED_JSON, 'o', 'event_attributes')}, '$.memory[0]')
               AS DOUBLE)) AS requested,
           max(TRY_CAST({member(MEMORY_ALLOCATED_MB, 'o', 'event_attributes')} AS DOUBLE)) AS allocated,
           max(TRY_CAST({member(MEMORY_MEASURED_MB, 'o', 'event_attributes')} AS DOUBLE)) AS measured
    FROM {A}.try_spans ts JOIN observations o ON o.trace_id = ts.trace_id AND o.span_id = ts.span_id
    WHERE ts.depth > 0 GROUP BY ALL
), share AS (
    SELECT p.trace_id, p.try_span_id, n.memory_bytes / nullif(coalesce(n.slots, u.slots), 0) AS node_share
    FROM {A}.try_placement p JOIN {A}.contexts n ON n.trace_id = p.trace_id AND n.span_id = p.node_span_id
    LEFT JOIN {A}.node_utilisation u ON u.trace_id = n.trace_id AND u.span_id = n.span_id
), lim AS (
    SELECT b.trace_id, b.span_id,
           CASE WHEN a.requested > 0 THEN a.requested * {_MB} WHEN a.allocated > 0 THEN a.allocated * {_MB}
                ELSE s.node_share END AS limit_bytes,
           CASE WHEN a.requested > 0 THEN 'requested' WHEN a.allocated > 0 THEN 'allocated'
                WHEN s.node_share IS NOT NULL THEN 'node_share' END AS basis,
           a.measured * {_MB} AS measured
    FROM {A}.try_breakdown b
    LEFT JOIN asked a ON a.trace_id = b.trace_id AND a.try_span_id = b.span_id
    LEFT JOIN share s ON s.trace_id = b.trace_id AND s.try_span_id = b.span_id
)
SELECT b.trace_id, b.span_id, b.task_id, b.try_id, b.app, b.host, coalesce(u.samples, 0) AS samples,
       coalesce(u.processes, 0) AS processes, u.sampled_s, u.cpu_user_s, u.cpu_system_s,
       u.cpu_user_s + u.cpu_system_s AS cpu_s,
       (u.cpu_user_s + u.cpu_system_s) / nullif(u.sampled_s, 0) AS cpu_per_sampled_s,
       u.cpu_cumulative_s, b.execution_s,
       CAST(u.rss AS BIGINT) AS peak_rss_bytes, CAST(u.vms AS BIGINT) AS peak_vms_bytes,
       CAST(u.read_bytes AS BIGINT) AS read_bytes, CAST(u.write_bytes AS BIGINT) AS write_bytes,
       CAST(l.measured AS BIGINT) AS memory_measured_bytes, CAST(l.limit_bytes AS BIGINT) AS memory_limit_bytes,
       l.basis AS memory_limit_basis, greatest(u.rss, l.measured) > l.limit_bytes AS over_memory
FROM {A}.try_breakdown b
LEFT JOIN used u ON u.trace_id = b.trace_id AND u.span_id = b.span_id
LEFT JOIN lim l ON l.trace_id = b.trace_id AND l.span_id = b.span_id
""")

APP_RESOURCES = View("app_resources", (
    ("trace_id", "VARCHAR", ""),
    ("app", "VARCHAR", ""),
    ("tries", "BIGINT", ""),
    ("sampled_tries", "BIGINT", "tries with resource samples"),
    ("cpu_s", "DOUBLE", "total CPU time in the sampled windows"),
    ("mean_cpu_s", "DOUBLE", "per sampled try"),
    ("mean_cpu_per_sampled_s", "DOUBLE", "cores kept busy, on average"),
    ("peak_rss_bytes", "BIGINT", "largest of any try"),
    ("p90_peak_rss_bytes", "BIGINT", ""),
    ("read_bytes", "BIGINT", "total"),
    ("write_bytes", "BIGINT", "total"),
    ("memory_limit_bytes", "BIGINT", "the smallest limit of its tries"),
    ("over_memory_tries", "BIGINT", ""),
), sql=f"""
SELECT trace_id, app, count(*) AS tries, count(*) FILTER (WHERE samples > 0) AS sampled_tries, sum(cpu_s) AS cpu_s,
       avg(cpu_s) AS mean_cpu_s, avg(cpu_per_sampled_s) AS mean_cpu_per_sampled_s,
       max(peak_rss_bytes) AS peak_rss_bytes, CAST(quantile_cont(peak_rss_bytes, 0.9) AS BIGINT) AS p90_peak_rss_bytes,
       CAST(sum(read_bytes) AS BIGINT) AS read_bytes, CAST(sum(write_bytes) AS BIGINT) AS write_bytes,
       min(memory_limit_bytes) AS memory_limit_bytes, count(*) FILTER (WHERE over_memory) AS over_memory_tries
FROM {A}.try_resources GROUP BY ALL
""")

VIEWS = (TRY_RESOURCES, APP_RESOURCES)
