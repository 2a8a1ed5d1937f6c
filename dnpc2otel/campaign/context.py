"""The campaign as a context: a span above the workflow runs, in a small trace of its own.

The seed names it: "a campaign of runs — identified by a human with some informal name, perhaps, or a
directory". `replay --campaign NAME` names it; without the flag a campaign is made only when a replay reads
two runs or more (so replaying one run gives what it always gave), named after the run_dir: its directory's
name, or the name of the directory holding it when that is `runinfo` (Parsl's default, the same for every
study).

The campaign span (context type `campaign`, id = the name) lives in the trace sha256("dnpc2otel/campaign/
<name>")[:32], span id sha256("dnpc2otel/campaign/<name>/span")[:16]: the same name gives the same ids. It
spans its runs (earliest root start to latest root end) and carries the campaign's totals
(`dnpc.campaign.runs`, `.tasks`, `.tries`, `.failed_tasks`, `.spans`); it links to each run's root span
(`dnpc.relation` = "campaign_run", with that run's totals as link attributes) and each run's root links back
(`dnpc.relation` = "in_campaign"). Both are rows of tables `spans` and `span_links`; the `runs` table lists
runs only. A campaign is the runs of one replay: replaying more runs into the same file under the same
name replaces the campaign span with one over the runs of that replay.

Tasks are spans of type `task` (TASK_CONTEXT), tries of type `try`, failed tasks tasks with status ERROR.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from ..export.traces import TASK_CONTEXT
from ..sources.definitions import System
from ..sources.templates import quote_literal

CAMPAIGN_CONTEXT = "campaign"
TRY_CONTEXT = "try"


def default_name(root: Path) -> str:
    """The campaign's name when none is given: the run_dir's directory name (its parent's for `runinfo`)."""
    root = root.resolve()
    return root.parent.name if root.name == "runinfo" and root.parent.name else root.name


def trace_id(name: str) -> str:
    return hashlib.sha256(f"dnpc2otel/campaign/{name}".encode()).hexdigest()[:32]


def add_if_wanted(con: duckdb.DuckDBPyConnection, schema: str, name: str | None, root: Path, system: System
                  ) -> str | None:
    """Add the campaign when it is named or `schema` holds two runs or more; its name, or None."""
    row = con.execute(f"SELECT count(*) FROM {schema}.runs").fetchone()
    if not name and (not row or row[0] < 2):
        return None
    name = name or default_name(root)
    add(con, schema, name, system.run_id_attribute)
    return name


def add(con: duckdb.DuckDBPyConnection, schema: str, name: str, run_id_attribute: str = "dnpc.run_id") -> None:
    """Add the campaign span over every run of `schema`.runs, and its links, to `schema`.spans/span_links."""
    tid = quote_literal(trace_id(name))
    sid = f"substr(sha256({quote_literal(f'dnpc2otel/campaign/{name}/span')}), 1, 16)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE campaign_runs AS
        SELECT r.trace_id, r.run_id, r.run_dir, root.span_id, root.start_time_unix_nano AS s,
               root.end_time_unix_nano AS e,
               count(*) FILTER (WHERE x.context_type = {quote_literal(TASK_CONTEXT)}) AS tasks,
               count(*) FILTER (WHERE x.context_type = {quote_literal(TRY_CONTEXT)}) AS tries,
               count(*) FILTER (WHERE x.context_type = {quote_literal(TASK_CONTEXT)} AND x.status_code = 'ERROR')
                 AS failed_tasks,
               count(*) AS spans
        FROM {schema}.runs r
        JOIN (SELECT trace_id, min(span_id) AS span_id FROM {schema}.spans WHERE parent_span_id IS NULL
              GROUP BY trace_id) rid USING (trace_id)
        JOIN {schema}.spans root ON root.trace_id = r.trace_id AND root.span_id = rid.span_id
        JOIN {schema}.spans x ON x.trace_id = r.trace_id
        GROUP BY ALL
        """
    )
    con.execute(
        f"""
        INSERT INTO {schema}.spans BY NAME
        SELECT {tid} AS trace_id, {sid} AS span_id, NULL AS parent_span_id,
               {quote_literal(f'campaign {name}')} AS name, 'dnpc2otel' AS service_name,
               {quote_literal(CAMPAIGN_CONTEXT)} AS context_type,
               min(s) AS start_time_unix_nano, max(e) AS end_time_unix_nano, 'UNSET' AS status_code,
               json_object('dnpc.context_type', {quote_literal(CAMPAIGN_CONTEXT)},
                           'dnpc.context_id', {quote_literal(name)}, 'dnpc.campaign.name', {quote_literal(name)},
                           'dnpc.campaign.runs', count(*), 'dnpc.campaign.tasks', sum(tasks),
                           'dnpc.campaign.tries', sum(tries), 'dnpc.campaign.failed_tasks', sum(failed_tasks),
                           'dnpc.campaign.spans', sum(spans)) AS attributes
        FROM campaign_runs HAVING count(*) > 0
        """
    )
    con.execute(
        f"""
        INSERT INTO {schema}.span_links BY NAME
        SELECT {tid} AS trace_id, {sid} AS span_id, trace_id AS linked_trace_id, span_id AS linked_span_id,
               json_object('dnpc.relation', 'campaign_run', 'opentracing.ref_type', 'follows_from',
                           'dnpc.linked_context', 'run:' || coalesce(run_id, run_dir),
                           {quote_literal(run_id_attribute)}, run_id, 'dnpc.run_dir', run_dir,
                           'dnpc.run.tasks', tasks, 'dnpc.run.tries', tries, 'dnpc.run.failed_tasks', failed_tasks,
                           'dnpc.run.spans', spans, 'dnpc.run.wall_s', (e - s) / 1e9) AS attributes
        FROM campaign_runs
        UNION ALL
        SELECT trace_id, span_id, {tid}, {sid},
               json_object('dnpc.relation', 'in_campaign', 'opentracing.ref_type', 'follows_from',
                           'dnpc.linked_context', {quote_literal(f'{CAMPAIGN_CONTEXT}:{name}')})
        FROM campaign_runs
        """
    )
    con.execute("DROP TABLE campaign_runs")
