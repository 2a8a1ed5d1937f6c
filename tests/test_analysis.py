"""The analysis views (schema `analysis` of the DuckDB file), on every bundled corpus run and on fresh runs:
breakdowns that add up, states and concurrency that integrate the same time, utilisation that never
exceeds the slots, failures and resource samples that are monitoring.db's, the critical path of a real chain
of dependent tasks; and the SQL entry point, the Parquet export and `dnpc2otel.open`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import venv
from pathlib import Path

import duckdb
import pytest
from conftest import REPO, corpus_runs, make_parsl_run

import dnpc2otel
from dnpc2otel import analysis
from dnpc2otel.errors import UserError

RUNS = corpus_runs()
MS = 1e-3
CLI = [sys.executable, "-m", "dnpc2otel.cli"]
TASK_PARTS = ["pending", "retries", "launch", "queued", "dispatch", "execution", "result_return", "completion",
              "join_wait", "unattributed"]
TRY_PARTS = ["launch", "queued", "dispatch", "execution", "result_return", "unattributed"]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict[str, Path]:
    """Every corpus run replayed once, by folder name."""
    out = tmp_path_factory.mktemp("analysis")
    dbs = {}
    for run in RUNS:
        db = out / f"{run.parent.name}.duckdb"
        dnpc2otel.replay(run, db)
        dbs[run.parent.name] = db
    return dbs


def _con(replayed, run: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(replayed[run.parent.name]), read_only=True)


def _monitoring(run: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{run / 'monitoring.db'}?mode=ro", uri=True)


def _sum(parts: list[str]) -> str:
    return " + ".join(f"coalesce({p}_s, 0)" for p in parts)


def test_every_corpus_run_is_tested():
    assert {r.parent.name for r in RUNS} >= {"htex-2026", "htex-2023", "features-2026", "wq-2026", "nolog-2026",
                                             "mixkill-2026", "htex-json-2026", "filelogging-2026"}


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_breakdown_adds_up_to_each_task_and_try(replayed, run):
    with _con(replayed, run) as con:
        tasks = con.execute("SELECT count(*) FROM spans WHERE context_type = 'task'").fetchall()[0][0]
        rows = con.execute(f"SELECT task_id, duration_s, {_sum(TASK_PARTS)} FROM analysis.task_breakdown").fetchall()
        assert len(rows) == tasks > 0
        off = [(t, d, s) for t, d, s in rows if abs(d - s) > MS]
        assert not off, f"tasks whose parts do not add up to their duration: {off[:5]}"
        tries = con.execute(f"SELECT task_id, try_id, duration_s, {_sum(TRY_PARTS)} FROM analysis.try_breakdown"
                            ).fetchall()
        assert tries and all(abs(d - s) <= MS for _, _, d, s in tries)
        negative = con.execute(
            "SELECT count(*) FROM analysis.task_phases WHERE end_time_unix_nano < start_time_unix_nano").fetchall()
        assert negative == [(0,)]
        # phases are consecutive: each starts where the one before ended, from the task's start to its end
        gaps = con.execute("""
            WITH p AS (SELECT *, lag(end_time_unix_nano) OVER w AS prev FROM analysis.task_timeline
                       WINDOW w AS (PARTITION BY trace_id, task_span_id ORDER BY step))
            SELECT count(*) FILTER (WHERE prev IS NOT NULL AND prev <> start_time_unix_nano) FROM p""").fetchall()
        assert gaps == [(0,)]
        ends = con.execute("""
            SELECT count(*) FROM analysis.task_breakdown b JOIN (
                SELECT task_span_id, min(start_time_unix_nano) AS s, max(end_time_unix_nano) AS e, sum(duration_s) AS d
                FROM analysis.task_timeline GROUP BY ALL) t ON t.task_span_id = b.span_id
            WHERE t.s = b.start_time_unix_nano AND t.e = b.end_time_unix_nano AND abs(t.d - b.duration_s) <= 0.001
        """).fetchall()[0][0]
        assert ends == tasks


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_unattributed_time_names_what_it_holds(replayed, run):
    cols = ", ".join(f"{p}_s" for p in TASK_PARTS)
    with _con(replayed, run) as con:
        rows = con.execute(f"SELECT unattributed_parts, {cols} FROM analysis.task_breakdown").fetchall()
    assert rows
    for parts, *values in rows:
        observed = dict(zip(TASK_PARTS, values, strict=True))
        assert (observed["unattributed"] is None) == (parts is None)
        held = {p for entry in (parts or "").split(", ") if entry for p in entry.split("+")}
        assert held <= set(TASK_PARTS) - {"unattributed"}
        # a part that unattributed time holds was not observed on its own: NULL, not 0
        assert all(observed[p] is None for p in held), (parts, observed)


def test_htex_with_worker_debug_splits_queue_and_dispatch(replayed):
    """features-2026 has the interchange's and managers' per-task lines: most tries have every part."""
    run = next(r for r in RUNS if r.parent.name == "features-2026")
    with _con(replayed, run) as con:
        n, full = con.execute("SELECT count(*), count(*) FILTER (WHERE unattributed_s IS NULL AND queued_s IS NOT NULL "
                              "AND dispatch_s IS NOT NULL AND execution_s IS NOT NULL) FROM analysis.try_breakdown "
                              "WHERE executor = 'worker_pool'").fetchall()[0]
    assert n > 30 and full >= 0.8 * n


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_state_times_are_the_phases(replayed, run):
    with _con(replayed, run) as con:
        rows = con.execute("""
            SELECT s.app, s.part, s.tasks, s.total_s, p.total, p.tasks, s.p50_s, s.p90_s, s.p99_s, s.max_s, s.share
            FROM analysis.state_times s JOIN (
                SELECT trace_id, app, part, sum(duration_s) AS total, count(DISTINCT task_span_id) AS tasks
                FROM analysis.task_phases GROUP BY ALL) p USING (trace_id, app, part)""").fetchall()
        n = con.execute("SELECT count(*) FROM analysis.state_times").fetchall()[0][0]
    assert rows and len(rows) == n
    for app, part, tasks, total, expected, expected_tasks, p50, p90, p99, top, share in rows:
        assert tasks == expected_tasks and abs(total - expected) < 1e-6, (app, part)
        assert p50 <= p90 + 1e-12 and p90 <= p99 + 1e-12 and p99 <= top + 1e-12
        assert share is None or 0 <= share <= 1 + 1e-9


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_concurrency_integrates_the_timeline(replayed, run):
    with _con(replayed, run) as con:
        spent = dict(con.execute("SELECT part, sum(duration_s) FROM analysis.task_timeline GROUP BY part").fetchall())
        assert "pending" in spent
        for bucket in (1.0, 7.5):
            got = dict(con.execute(f"SELECT part, sum(mean_tasks) * {bucket} FROM analysis.concurrency({bucket}) "
                                   "GROUP BY part").fetchall())
            for part, s in spent.items():
                assert abs(got.get(part, 0) - s) < 1e-6 * max(1, s), (bucket, part)
            assert con.execute(f"SELECT count(*) FROM analysis.concurrency({bucket}) "
                               "WHERE peak_tasks < mean_tasks - 1e-9").fetchall() == [(0,)]


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_utilisation_never_exceeds_the_slots(replayed, run):
    with _con(replayed, run) as con:
        nodes = con.execute("SELECT count(*), sum(busy_slot_s), max(utilisation) FROM analysis.node_utilisation"
                            ).fetchall()[0]
        assert nodes[0] >= 1, "every corpus run has an HTEX manager or a Work Queue worker"
        assert nodes[2] <= 1 + 1e-9
        for bucket in (0.01, 1.0, 60.0):
            top, busy = con.execute(f"SELECT max(utilisation), sum(busy_slots) * {bucket} "
                                    f"FROM analysis.utilisation({bucket})").fetchall()[0]
            assert top <= 1 + 1e-9, bucket
            assert abs(busy - nodes[1]) < 1e-6 * max(1, busy), bucket  # the same busy time, however bucketed
            assert con.execute(f"SELECT count(*) FROM analysis.utilisation({bucket}) WHERE busy_slots > slots + 1e-9 "
                               "OR idle_slots < -1e-9").fetchall() == [(0,)]
        blocks = con.execute("SELECT max(utilisation), min(queue_wait_s) FROM analysis.block_utilisation").fetchall()
        assert blocks[0][0] is None or blocks[0][0] <= 1 + 1e-9
        assert blocks[0][1] is None or blocks[0][1] >= 0
        busy_executions = con.execute("SELECT sum(execution_s) FROM analysis.try_breakdown WHERE node IS NOT NULL"
                                      ).fetchall()[0][0]
        assert busy_executions is None or nodes[1] > 0


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_failed_tries_are_monitorings(replayed, run):
    with _monitoring(run) as m:
        expected = set(m.execute("SELECT DISTINCT task_id, try_id FROM status "
                                 "WHERE task_status_name IN ('failed', 'fail_retryable', 'dep_fail')").fetchall())
        dep_failed = {t for (t,) in m.execute("SELECT DISTINCT task_id FROM status "
                                              "WHERE task_status_name = 'dep_fail'")}
    with _con(replayed, run) as con:
        got = set(con.execute("SELECT task_id, try_id FROM analysis.failed_tries").fetchall())
        cost = con.execute("SELECT sum(failed_tries), sum(failed_s) FROM analysis.failure_cost").fetchall()[0]
        spent = con.execute("SELECT count(*), sum(duration_s) FROM analysis.failed_tries").fetchall()[0]
        cascades = con.execute("SELECT d.task_id, r.status_code, r.final_state FROM analysis.dependency_failures d "
                               "JOIN analysis.task_breakdown r ON r.span_id = d.root_span_id").fetchall()
    assert expected and got == expected
    assert cost[0] == spent[0] and abs(cost[1] - spent[1]) < 1e-9
    assert dep_failed and {t for t, _, _ in cascades} == dep_failed
    assert all(code == "ERROR" and state != "dep_fail" for _, code, state in cascades)


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_resource_samples_are_monitorings(replayed, run):
    with _monitoring(run) as m:
        expected = {(t, k): (n, int(rss)) for t, k, n, rss in m.execute(
            "SELECT task_id, try_id, count(*), max(psutil_process_memory_resident) FROM resource GROUP BY 1, 2")}
    with _con(replayed, run) as con:
        got = {(t, k): (n, rss) for t, k, n, rss in con.execute(
            "SELECT task_id, try_id, samples, peak_rss_bytes FROM analysis.try_resources WHERE samples > 0").fetchall()}
        bad = con.execute("SELECT count(*) FROM analysis.try_resources WHERE cpu_s < 0 OR read_bytes < 0 "
                          "OR (samples > 1) <> (cpu_s IS NOT NULL)").fetchall()
        apps = con.execute("SELECT sum(sampled_tries) FROM analysis.app_resources").fetchall()[0][0]
    assert expected and got == expected
    assert bad == [(0,)] and apps == len(expected)


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_critical_path_follows_dependencies_back_from_the_last_task(replayed, run):
    with _con(replayed, run) as con:
        path = con.execute("SELECT step, span_id, task_id, depends_on_task_id, end_time_unix_nano, contribution_s "
                           "FROM analysis.critical_path ORDER BY step").fetchall()
        last = con.execute("SELECT max(end_time_unix_nano) FROM spans WHERE context_type = 'task'").fetchall()[0][0]
        links = set(con.execute("""
            SELECT l.span_id, l.linked_span_id FROM span_links l
            WHERE l.attributes->>'$."dnpc.relation"' = 'depends_on'""").fetchall())
    assert path and [s for s, *_ in path] == list(range(len(path)))
    assert path[0][3] is None and path[-1][4] == last
    for (_, prev_span, prev_task, *_), (_, span, _, dep, *_) in zip(path, path[1:], strict=False):
        assert dep == prev_task and (span, prev_span) in links
    assert all(c >= 0 for *_, c in path)


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.parent.name)
def test_tries_that_ran_on_a_pool_know_where(replayed, run):
    with _con(replayed, run) as con:
        rows = con.execute("SELECT executor, node, block_id, host, execution_s FROM analysis.try_breakdown "
                           "WHERE executor = 'worker_pool' AND final_state = 'exec_done'").fetchall()
    assert rows and all(node and block and host for _, node, block, host, _ in rows)


def test_memory_limits_and_the_over_memory_flag(replayed, tmp_path):
    """Work Queue tries are measured against the memory they were allocated; HTEX tries against their node's
    memory over its slots — and a node with less memory than a try's peak flags it."""
    with duckdb.connect(str(replayed["wq-2026"]), read_only=True) as con:
        wq = con.execute("SELECT memory_limit_basis, count(*), count(*) FILTER (WHERE over_memory) "
                         "FROM analysis.try_resources WHERE samples > 0 GROUP BY ALL").fetchall()
    assert wq == [("allocated", 31, 0)]
    db = tmp_path / "small-node.duckdb"
    db.write_bytes(replayed["features-2026"].read_bytes())
    with duckdb.connect(str(db)) as con:
        share, peak = con.execute("SELECT min(memory_limit_bytes), min(peak_rss_bytes) FROM analysis.try_resources "
                                  "WHERE memory_limit_basis = 'node_share'").fetchall()[0]
        assert share > peak > 0  # 2 workers on a 25 GB node: nothing is over
        con.execute("UPDATE spans SET attributes = json_merge_patch(attributes, json_object('host.memory.total', ?)) "
                    "WHERE context_type = 'manager'", [peak])  # a node of the smallest peak: half of it per slot
        analysis.create(con)
        n, over = con.execute("SELECT count(*) FILTER (WHERE samples > 0), count(*) FILTER (WHERE over_memory) "
                              "FROM analysis.try_resources WHERE memory_limit_basis = 'node_share'").fetchall()[0]
        apps = con.execute("SELECT sum(over_memory_tries) FROM analysis.app_resources").fetchall()[0][0]
    assert n > 30 and over == n == apps


@pytest.mark.slow
def test_thread_pool_tries_are_broken_down_from_monitoring(fresh_threads_chicago, tmp_path):
    db = tmp_path / "threads.duckdb"
    dnpc2otel.replay(fresh_threads_chicago, db)
    with duckdb.connect(str(db), read_only=True) as con:
        worst = con.execute(f"SELECT max(abs(duration_s - ({_sum(TASK_PARTS)}))) FROM analysis.task_breakdown"
                            ).fetchall()[0][0]
        ran = con.execute("SELECT count(*), count(execution_s), count(*) FILTER (WHERE unattributed_parts LIKE "
                          "'%launch+queued+dispatch%' OR launch_s IS NOT NULL) FROM analysis.try_breakdown "
                          "WHERE final_state = 'exec_done' AND executor = 'pool'").fetchall()[0]
        nodes = con.execute("SELECT count(*) FROM analysis.node_utilisation").fetchall()[0][0]
    assert worst <= MS
    assert ran[0] > 0 and ran[1] == ran[0] and ran[2] == ran[0]  # monitoring times the execution on the thread
    assert nodes == 0  # a thread pool has no node whose slots a source gives: no utilisation, not a wrong one


def test_views_have_the_declared_columns(replayed):
    with duckdb.connect(str(replayed["htex-2026"]), read_only=True) as con:
        trace = con.execute("SELECT trace_id FROM runs").fetchall()[0][0]
        for v in analysis.VIEWS:
            args = {"compare_runs": f"('{trace}', '{trace}')"}.get(v.name, "()") if v.params else ""
            got = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM analysis.{v.name}{args}").fetchall()]
            assert got == list(v.column_names), v.name


def test_compare_two_runs_in_one_file(tmp_path):
    a, b = (next(r for r in RUNS if r.parent.name == n) for n in ("htex-2026", "htex-json-2026"))
    db = tmp_path / "two.duckdb"
    dnpc2otel.replay(a, db)
    dnpc2otel.replay(b, db)
    with duckdb.connect(str(db), read_only=True) as con:
        [(ra,)] = con.execute("SELECT run_id FROM runs WHERE root LIKE '%/htex-2026/%'").fetchall()
        [(rb,)] = con.execute("SELECT run_id FROM runs WHERE root LIKE '%/htex-json-2026/%'").fetchall()
        rows = con.execute("SELECT app, part, tasks_a, tasks_b, mean_a_s, mean_b_s, delta_mean_s, total_a_s, total_b_s "
                           "FROM analysis.compare_runs(?, ?)", [ra, rb]).fetchall()
        per_run = {(run_id, app): (n, mean) for run_id, app, n, mean in con.execute(
            "SELECT r.run_id, b.app, count(*), avg(b.duration_s) FROM analysis.task_breakdown b JOIN runs r "
            "USING (trace_id) GROUP BY ALL").fetchall()}
    assert ra != rb
    tasks = [r for r in rows if r[1] == "task"]
    assert {r[0] for r in tasks} == {"work", "flaky", "combine", "shell"}
    for app, _, na, nb, ma, mb, delta, *_ in tasks:
        assert (na, nb) == (per_run[(ra, app)][0], per_run[(rb, app)][0])
        assert abs(ma - per_run[(ra, app)][1]) < 1e-9 and abs(mb - per_run[(rb, app)][1]) < 1e-9
        assert abs(delta - (mb - ma)) < 1e-9
    assert {r[1] for r in rows} >= {"pending", "execution", "task"}


@pytest.mark.slow
def test_critical_path_of_a_fresh_chain_is_the_chain(tmp_path):
    run = make_parsl_run(tmp_path, "--worker-debug", workflow="chain.py")
    db = tmp_path / "chain.duckdb"
    dnpc2otel.replay(run, db)
    with duckdb.connect(str(db), read_only=True) as con:
        chain = [t for (t,) in con.execute("SELECT task_id FROM analysis.task_breakdown WHERE app = 'step' "
                                           "ORDER BY task_id").fetchall()]
        path = con.execute("SELECT task_id, execution_s, duration_s FROM analysis.critical_path ORDER BY step"
                           ).fetchall()
        sums = con.execute(f"SELECT max(abs(duration_s - ({_sum(TASK_PARTS)}))), count(*) FROM analysis.task_breakdown"
                           ).fetchall()[0]
        sides = con.execute("SELECT count(*) FROM analysis.task_breakdown WHERE app = 'side'").fetchall()[0][0]
    assert len(chain) == 4 and sides >= 8
    assert [t for t, _, _ in path] == chain
    # each step sleeps 1.5 s on its worker: its execution holds that, and its duration holds its execution
    assert all(1.5 <= e <= d for _, e, d in path)
    assert sums[1] == len(chain) + sides and sums[0] <= MS


@pytest.mark.slow
def test_breakdown_adds_up_on_a_fresh_run(fresh_htex_debug, tmp_path):
    db = tmp_path / "fresh.duckdb"
    dnpc2otel.replay(fresh_htex_debug, db)
    with duckdb.connect(str(db), read_only=True) as con:
        worst, n = con.execute(f"SELECT max(abs(duration_s - ({_sum(TASK_PARTS)}))), count(*) "
                               "FROM analysis.task_breakdown").fetchall()[0]
        top = con.execute("SELECT max(utilisation) FROM analysis.utilisation(0.05)").fetchall()[0][0]
    assert n > 0 and worst <= MS and top <= 1 + 1e-9


# ---------------------------------------------------------------------- dnpc2otel.open, sql, export --parquet
def _notebook_snippet() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"<!-- notebook -->\n```python\n(.*?)```", text, re.S).group(1)


def test_readme_notebook_two_lines_give_a_dataframe(monkeypatch):
    pandas = pytest.importorskip("pandas")
    monkeypatch.chdir(REPO)
    scope: dict = {}
    exec(_notebook_snippet(), scope)  # noqa: S102 - the README's own two lines
    df = scope["df"]
    assert isinstance(df, pandas.DataFrame)
    assert len(df) == 31 and list(df.columns) == list(next(v for v in analysis.VIEWS
                                                           if v.name == "task_breakdown").column_names)


def test_open_a_file_a_stale_file_and_bad_paths(replayed, tmp_path):
    db = tmp_path / "stale.duckdb"
    db.write_bytes(replayed["htex-2026"].read_bytes())
    with duckdb.connect(str(db)) as con:  # as an older version left it: no analysis views
        con.execute("DROP SCHEMA analysis CASCADE")
        con.execute("DELETE FROM dnpc2otel_meta WHERE key = 'analysis_version'")
    con = dnpc2otel.open(db)
    assert con.sql("SELECT count(*) FROM analysis.task_breakdown").fetchall() == [(31,)]
    con.close()
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(UserError, match="not one dnpc2otel wrote"):
        dnpc2otel.open(other)
    with pytest.raises(UserError, match="no such DuckDB file or run directory"):
        dnpc2otel.open(tmp_path / "missing")


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_sql_prints_tables_csv_and_json(replayed):
    db = str(replayed["htex-2026"])
    text = _cli("sql", db, "SELECT app, count(*) AS n FROM analysis.task_breakdown GROUP BY app ORDER BY n DESC")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["app", "n"] and lines[2].split() == ["work", "20"] and len(lines) == 6
    query = "SELECT task_id, app, duration_s, unattributed_parts FROM analysis.task_breakdown ORDER BY task_id;"
    got = _cli("sql", db, "--csv", stdin=query)
    assert got.returncode == 0, got.stderr
    rows = list(csv.reader(io.StringIO(got.stdout)))
    with duckdb.connect(db, read_only=True) as con:
        expected = con.execute(query).fetchall()
    assert rows[0] == ["task_id", "app", "duration_s", "unattributed_parts"]
    assert [(int(t), a, float(d), u or None) for t, a, d, u in rows[1:]] == expected
    js = _cli("sql", db, "--json", "SELECT 1 AS one; SELECT attributes FROM spans WHERE context_type = 'workflow'")
    assert js.returncode == 0, js.stderr
    first, second = (json.loads(ln) for ln in js.stdout.splitlines())
    assert first == [{"one": 1}] and second[0]["attributes"]["dnpc.context_type"] == "workflow"


def test_sql_on_a_run_directory_replays_it():
    got = _cli("sql", str(REPO / "examples" / "htex-2026" / "runinfo"), "--json",
               "SELECT count(*) AS n FROM analysis.critical_path")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)[0]["n"] >= 1


@pytest.mark.parametrize("args, message", [
    (["SELECT nope FROM analysis.task_breakdown"], "SQL: Binder Error"),
    (["CREATE TABLE x (a INT)"], "read-only"),
    ([], "no statement given"),
])
def test_sql_errors_are_one_line(replayed, args, message):
    got = _cli("sql", str(replayed["htex-2026"]), *args, stdin="")
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert got.stderr.count("\n") == 1 and got.stderr.startswith("dnpc2otel: error: ") and message in got.stderr


def test_export_parquet_writes_every_table(replayed, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    db = replayed["features-2026"]
    out = tmp_path / "pq"
    got = _cli("export", str(db), "--parquet", str(out), "--analysis")
    assert got.returncode == 0, got.stderr
    from dnpc2otel.tables import OUTPUT

    with duckdb.connect(str(db), read_only=True) as con:
        for name in [t.name for t in OUTPUT] + ["span_events", "dnpc2otel_meta"]:
            n = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
            assert pq.read_table(out / f"{name}.parquet").num_rows == n, name
        n = con.execute("SELECT count(*) FROM analysis.task_breakdown").fetchall()[0][0]
    assert pq.read_table(out / "analysis" / "task_breakdown.parquet").num_rows == n == 45
    views = {v.name for v in analysis.VIEWS if not v.params}
    assert {p.stem for p in (out / "analysis").glob("*.parquet")} == views
    missing = _cli("export", str(tmp_path / "nope.duckdb"), "--parquet", str(out))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and "no such DuckDB file" in missing.stderr


@pytest.mark.slow
def test_sql_entry_point_after_a_fresh_install(replayed, tmp_path):
    """`pip install` of the project alone (into a new virtualenv) gives a `dnpc2otel sql` that opens the files
    this DuckDB writes."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((REPO / name).read_bytes())
    for folder in ("dnpc2otel", "converters"):
        subprocess.run(["cp", "-r", str(REPO / folder), str(src / folder)], check=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)  # dependencies: those already installed
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0 and not os.environ.get("CI"):
        pytest.skip(f"pip install failed (no build backend reachable?): {pip.stderr[-500:]}")
    assert pip.returncode == 0, pip.stderr
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import dnpc2otel; print(dnpc2otel.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert str(env_dir) in where.stdout
    got = subprocess.run([str(env_dir / "bin" / "dnpc2otel"), "sql", str(replayed["wq-2026"]), "--csv",
                          "SELECT count(*) AS n FROM analysis.task_breakdown"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == ["n", "31"]
