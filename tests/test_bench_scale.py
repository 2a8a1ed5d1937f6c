"""The benchmark's generator (bench/scale.py): a run scaled from the bundled real template (Parsl 2026.10.26,
HTEX with worker_debug) must replay as K copies of it, run for run: K× the spans of each per-task context
type, every HTEX try fully chained, no disagreement of a new kind, and the same structure for each task as
its original in the template. No timing here: speed is measured by bench/benchmark.py."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import sys
from pathlib import Path

import duckdb
import pytest

from dnpc2otel import replay

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_scale", REPO / "bench" / "scale.py")
scale = importlib.util.module_from_spec(_spec)
sys.modules["bench_scale"] = scale
_spec.loader.exec_module(scale)

COPIES, RUNS = 2, 2


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """(template DuckDB, scaled DuckDB, what the generator made): a campaign of 2 runs of 2 copies each."""
    tmp = tmp_path_factory.mktemp("bench_scale")
    template_tasks = len(sqlite3.connect(scale.TEMPLATE / "monitoring.db").execute("SELECT * FROM task").fetchall())
    made = scale.scale(scale.TEMPLATE, tmp / "campaign", tasks=COPIES * template_tasks, runs=RUNS)
    assert (made["copies"], made["runs"]) == (COPIES, RUNS)
    replay(scale.TEMPLATE, tmp / "template.duckdb")
    replay(tmp / "campaign" / "runinfo", tmp / "campaign.duckdb")
    t = duckdb.connect(str(tmp / "template.duckdb"), read_only=True)
    s = duckdb.connect(str(tmp / "campaign.duckdb"), read_only=True)
    yield t, s, made, tmp / "campaign" / "runinfo"
    t.close()
    s.close()


def _count(con, sql: str) -> dict:
    return {tuple(r[:-1]) if len(r) > 2 else r[0]: r[-1] for r in con.execute(sql).fetchall()}


def test_k_times_the_spans_of_each_context_type(scaled):
    t, s, made, _ = scaled
    q = "SELECT context_type, count(*) FROM spans GROUP BY 1"
    template, campaign = _count(t, q), _count(s, q)
    assert campaign.pop("campaign") == 1  # two runs: the campaign span above them (dnpc2otel/campaign/context.py)
    assert set(campaign) == set(template)
    for ctype, n in template.items():
        per_run = COPIES if ctype in scale.COPIED_CONTEXTS else 1  # managers, blocks, workers: one set per run
        assert campaign[ctype] == n * per_run * RUNS, ctype
    assert made["tasks"] == template["task"] * COPIES * RUNS


def test_runs_of_the_campaign_are_distinct_and_share_one_database(scaled):
    _, s, made, run_dir = scaled
    assert sorted(p.name for p in run_dir.iterdir()) == ["000", "001", "monitoring.db"]
    runs = s.execute("SELECT run_id, run_dir FROM runs ORDER BY run_dir").fetchall()
    assert runs == [(made["run_ids"][0], "000"), (made["run_ids"][1], "001")]
    assert len(set(made["run_ids"])) == RUNS
    # every source of a run names its own run id and manager: nothing of the other run, nor of the template
    template_id = made["template_run_id"]
    for r in ("000", "001"):
        log = (run_dir / r / "parsl.log").read_text()
        assert log.count("Run id is: ") == 1 and template_id not in log
    managers = s.execute("SELECT json_extract_string(attributes, '$.\"parsl.run_id\"'), count(DISTINCT span_id) "
                         "FROM spans WHERE context_type = 'manager' GROUP BY 1").fetchall()
    assert sorted(managers) == sorted((i, 1) for i in made["run_ids"])


def test_every_htex_try_is_fully_chained(scaled):
    t, s, _, _ = scaled
    (ran_t,) = t.execute("SELECT sum(tries_ran) FROM htex_chain_summary").fetchone()
    rows = s.execute("SELECT tries_ran, tries_fully_chained FROM htex_chain_summary").fetchall()
    assert len(rows) == RUNS
    for ran, chained in rows:
        assert ran == chained == ran_t * COPIES


def test_no_new_disagreement_kinds_and_each_copy_has_the_templates(scaled):
    t, s, _, _ = scaled
    q = "SELECT kind, context_type, count(*) FROM disagreements GROUP BY ALL"
    template, campaign = _count(t, q), _count(s, q)
    assert {k for k, _ in campaign} <= {k for k, _ in template}
    for (kind, ctype), n in template.items():
        per_run = COPIES if ctype in scale.COPIED_CONTEXTS else 1
        assert campaign.get((kind, ctype), 0) == n * per_run * RUNS, (kind, ctype)


# a task's structure: its span and every span below it (try, executor task, worker execution), each with its
# name, status, duration, event names and link relations; ids and absolute times left out
STRUCTURE = r"""
WITH RECURSIVE sub AS (
    SELECT trace_id, span_id, json_extract_string(attributes, '$."dnpc.context_id"') AS task, 0 AS depth
    FROM spans WHERE context_type = 'task'
    UNION ALL
    SELECT c.trace_id, c.span_id, sub.task, sub.depth + 1
    FROM spans c JOIN sub ON c.trace_id = sub.trace_id AND c.parent_span_id = sub.span_id
), ev AS (
    SELECT trace_id, span_id, string_agg(name, ',' ORDER BY time_unix_nano, name) AS names FROM span_events GROUP BY ALL
), lk AS (
    SELECT trace_id, span_id, string_agg(json_extract_string(attributes, '$."dnpc.relation"'), ','
                                         ORDER BY json_extract_string(attributes, '$."dnpc.relation"')) AS rels
    FROM span_links GROUP BY ALL
)
SELECT r.run_dir, sub.task::BIGINT AS task,
       string_agg(one, ' / ' ORDER BY one) AS structure
FROM (SELECT sub.*, concat_ws('|', sub.depth, s.context_type, s.name, s.status_code, s.status_message,
                              s.end_time_unix_nano - s.start_time_unix_nano, ev.names, lk.rels) AS one
      FROM sub JOIN spans s USING (trace_id, span_id)
      LEFT JOIN ev USING (trace_id, span_id) LEFT JOIN lk USING (trace_id, span_id)) sub
JOIN runs r USING (trace_id)
GROUP BY ALL
"""


def test_each_task_has_the_structure_of_its_original(scaled):
    t, s, made, _ = scaled
    template = {task: st for _, task, st in t.execute(STRUCTURE).fetchall()}
    span = max(template) + 1
    campaign = s.execute(STRUCTURE).fetchall()
    assert len(campaign) == len(template) * COPIES * RUNS
    for run_dir, task, st in campaign:
        assert st == template[task % span], (run_dir, task)
    # task ids of a run: the template's, then the same again one span higher, and so on
    ids = sorted(task for run_dir, task, _ in campaign if run_dir == "000")
    assert ids == sorted(i + c * span for c in range(COPIES) for i in template)


def test_each_workers_executions_stay_sequential(scaled):
    _, s, _, _ = scaled
    rows = s.execute("""
        SELECT trace_id, json_extract_string(attributes, '$."parsl.htex.manager.id"') AS mgr,
               json_extract_string(attributes, '$."parsl.htex.worker.rank"') AS rank,
               start_time_unix_nano, end_time_unix_nano
        FROM spans WHERE context_type = 'worker_execution' ORDER BY ALL""").fetchall()
    assert rows
    last: dict[tuple, int] = {}
    for trace, mgr, rank, start, end in rows:
        assert start >= last.get((trace, mgr, rank), 0), (mgr, rank)
        last[(trace, mgr, rank)] = end


def test_header_and_footer_once_copies_one_after_the_other(scaled):
    _, _, made, run_dir = scaled
    template = (scale.TEMPLATE / "000" / "parsl.log").read_text()
    log = (run_dir / "000" / "parsl.log").read_text()
    for once in ("Starting DataFlowKernel with config", "Run id is: ", "DFK cleanup initiated", "Unregistering log"):
        assert template.count(once) == log.count(once) == 1, once
    assert log.splitlines()[-1].split(" ", 3)[3] == template.splitlines()[-1].split(" ", 3)[3]
    # every line naming a task of copy c comes after every line naming a task of copy c - 1
    span = made["template_tasks"]
    copies: dict[int, list[float]] = {}
    for m in re.finditer(r"(?m)^(\d{10}\.\d+) .*? [Tt]ask (\d+) ", log):
        copies.setdefault(int(m[2]) // span, []).append(float(m[1]))
    assert sorted(copies) == list(range(COPIES))
    for c in range(1, COPIES):
        assert min(copies[c]) > max(copies[c - 1])
        assert min(copies[c]) - min(copies[c - 1]) == pytest.approx(made["period_s"], abs=1e-6)


def test_every_table_entry_has_a_real_sample_from_the_template():
    for p in (*scale.TIME_FORMATS, *scale.EMBEDDED_TIMES, *scale.IDS):
        rel, line = p.origin.rsplit(":", 1)
        assert re.search(p.where, rel), p.name
        text = (scale.TEMPLATE / rel).read_text().splitlines()[int(line) - 1]
        assert p.sample in text, p.name
        assert re.search(p.regex, p.sample), p.name


def test_a_line_the_replay_ties_to_a_task_but_no_id_pattern_matches_is_refused(monkeypatch):
    monkeypatch.setattr(scale, "IDS", tuple(p for p in scale.IDS if p.name != "worker"))
    with pytest.raises(scale.ScaleError, match=r"worker_\d\.log:\d+: the replay makes .*worker_execution"):
        scale.load_template(scale.TEMPLATE)


def test_not_a_template(tmp_path):
    (tmp_path / "000").mkdir()
    (tmp_path / "001").mkdir()
    with pytest.raises(scale.ScaleError, match="one run directory and its monitoring.db"):
        scale.load_template(tmp_path)
