"""Campaigns: the campaign span above the runs, and `replay CAMPAIGN --parsl-config FILE.py` giving the same
database as the single-process replay (issue 12's Done-when: a 10-run campaign on a local
HighThroughputExecutor). The campaign is a real run scaled by bench/scale.py (bench/README.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from dnpc2otel import replay
from dnpc2otel.campaign import context, fanout
from dnpc2otel.errors import UserError

REPO = Path(__file__).parent.parent
RUNS, TASKS = 10, 111


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """OUT/runinfo: 10 runs of 111 tasks, one shared monitoring.db."""
    out = tmp_path_factory.mktemp("campaign") / "study"
    subprocess.run([sys.executable, str(REPO / "bench" / "scale.py"), str(out), "--tasks", str(TASKS),
                    "--runs", str(RUNS)], check=True, capture_output=True, timeout=300)
    return out / "runinfo"


@pytest.fixture(scope="module")
def plain(study, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("plain") / "plain.duckdb"
    replay(study, db)
    return db


def q(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def contents(db: Path) -> dict[str, list[tuple]]:
    """Every table of the file (the analysis schema's materialized ones too), rows in order, and the views."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = con.execute("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
        out = {f"{s}.{t}": con.execute(f'SELECT * FROM "{s}"."{t}" ORDER BY ALL').fetchall() for s, t in names}
        out["views"] = con.execute("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal "
                                   "ORDER BY ALL").fetchall()
    return out


def test_campaign_span_above_the_runs(plain):
    name = "study"  # the directory holding runinfo/
    tid = context.trace_id(name)
    ((span_id, parent, attrs, start, end),) = q(plain, """
        SELECT span_id, parent_span_id, attributes, start_time_unix_nano, end_time_unix_nano FROM spans
        WHERE context_type = 'campaign'""")
    assert parent is None and q(plain, "SELECT trace_id FROM spans WHERE span_id = ?", [span_id]) == [(tid,)]
    assert q(plain, "SELECT count(*) FROM spans WHERE trace_id = ?", [tid]) == [(1,)]  # a small trace of its own
    attrs = json.loads(attrs)
    runs = q(plain, "SELECT trace_id FROM runs ORDER BY 1")
    assert len(runs) == RUNS and tid not in {r[0] for r in runs}  # the runs table lists runs only
    tasks, tries, failed = q(plain, """SELECT count(*) FILTER (WHERE context_type = 'task'),
        count(*) FILTER (WHERE context_type = 'try'),
        count(*) FILTER (WHERE context_type = 'task' AND status_code = 'ERROR') FROM spans""")[0]
    assert attrs["dnpc.campaign.name"] == name and attrs["dnpc.campaign.runs"] == RUNS
    assert (attrs["dnpc.campaign.tasks"], attrs["dnpc.campaign.tries"], attrs["dnpc.campaign.failed_tasks"]) == (
        tasks, tries, failed) and tasks == RUNS * TASKS
    roots = q(plain, "SELECT trace_id, span_id, start_time_unix_nano, end_time_unix_nano FROM spans "
                     "WHERE parent_span_id IS NULL AND context_type = 'workflow' ORDER BY 1")
    assert len(roots) == RUNS
    assert (start, end) == (min(r[2] for r in roots), max(r[3] for r in roots))
    # linked to each run's root, with the run's totals; each root links back
    down = q(plain, """SELECT linked_trace_id, linked_span_id, attributes FROM span_links
                      WHERE span_id = ? AND attributes->>'dnpc.relation' = 'campaign_run' ORDER BY 1""", [span_id])
    assert [(t, s) for t, s, _ in down] == [(t, s) for t, s, _, _ in roots]
    for (t, _, a), (_, _, s0, e0) in zip(down, roots, strict=True):
        a = json.loads(a)
        assert a["dnpc.run.tasks"] == TASKS and a["parsl.run_id"] and a["dnpc.run_dir"]
        assert a["dnpc.run.wall_s"] == pytest.approx((e0 - s0) / 1e9)
        assert a["dnpc.run.spans"] == q(plain, "SELECT count(*) FROM spans WHERE trace_id = ?", [t])[0][0]
    up = q(plain, """SELECT trace_id, span_id FROM span_links WHERE linked_trace_id = ? AND linked_span_id = ?
                    AND attributes->>'dnpc.relation' = 'in_campaign' ORDER BY 1""", [tid, span_id])
    assert up == [(t, s) for t, s, _, _ in roots]


def test_one_run_makes_no_campaign_unless_named(study, tmp_path):
    one = tmp_path / "one.duckdb"
    replay(study / "003", one)
    assert q(one, "SELECT count(*) FROM spans WHERE context_type = 'campaign'") == [(0,)]
    named = tmp_path / "named.duckdb"
    summary = replay(study / "003", named, campaign="pilot")
    assert summary.campaign == "pilot"
    ((tid, attrs),) = q(named, "SELECT trace_id, attributes FROM spans WHERE context_type = 'campaign'")
    assert tid == context.trace_id("pilot") and json.loads(attrs)["dnpc.campaign.runs"] == 1
    # apart from the campaign (its span and two links), the file is the plain one
    assert q(named, "SELECT count(*) FROM spans")[0][0] == q(one, "SELECT count(*) FROM spans")[0][0] + 1
    assert q(named, "SELECT count(*) FROM span_links")[0][0] == q(one, "SELECT count(*) FROM span_links")[0][0] + 2


def test_replay_exports_the_campaign_trace_too(tmp_path):
    """`replay … --otlp-endpoint` sends the runs' traces and the campaign's (it is not a row of `runs`)."""
    from otlp_receiver import HttpReceiver

    src = REPO / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
    db = tmp_path / "one.duckdb"
    with HttpReceiver() as rx:
        proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(src / "000"), "--duckdb", str(db),
                               "--campaign", "pilot", "--otlp-endpoint", rx.endpoint, "-q"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    got = {(g["span"].trace_id.hex(), g["span"].span_id.hex()) for g in rx.received.spans()}
    assert got == set(q(db, "SELECT trace_id, span_id FROM spans"))
    assert (context.trace_id("pilot"),) in {(t,) for t, _ in got}


def test_replaying_again_keeps_one_campaign(study, plain, tmp_path):
    again = tmp_path / "again.duckdb"
    shutil.copy(plain, again)
    replay(study, again)  # into the existing file: the campaign's trace is replaced like the runs'
    assert contents(again) == contents(plain)


def test_runs_of_the_campaign_compare(plain):
    listed = q(plain, "SELECT campaign, run_id, tasks, tries, spans, wall_s, wall_vs_mean FROM analysis.campaign_runs "
                      "ORDER BY run_dir")
    runs = q(plain, "SELECT run_id, (end_time_unix_nano - start_time_unix_nano) / 1e9, spans FROM runs "
                    "ORDER BY run_dir")
    assert [(r[0], r[1], r[2], r[4]) for r in listed] == [("study", run_id, TASKS, n) for run_id, _, n in runs]
    assert [r[5] for r in listed] == pytest.approx([w for _, w, _ in runs])
    assert sum(r[6] for r in listed) == pytest.approx(RUNS)
    a, b = q(plain, "SELECT run_id FROM runs ORDER BY start_time_unix_nano LIMIT 2")
    got = q(plain, "SELECT app, part, tasks_a, tasks_b FROM analysis.compare_runs(?, ?) WHERE part = 'task'",
            [a[0], b[0]])
    assert got and sum(r[2] for r in got) == sum(r[3] for r in got) == TASKS


HTEX_CONFIG = """
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

config = Config(executors=[HighThroughputExecutor(
    label="campaign", address="127.0.0.1", max_workers_per_node=2,
    provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))])
"""


def test_parsl_fanout_is_the_plain_replay(study, plain, tmp_path):
    """10 runs as Parsl tasks on a local HighThroughputExecutor, assembled: every table equal to the plain
    replay's, row for row; Parsl's own logs not in the working directory."""
    cfg = tmp_path / "htex_local.py"
    cfg.write_text(HTEX_CONFIG)
    db = tmp_path / "fanned.duckdb"
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(study), "--duckdb", str(db),
                           "--parsl-config", str(cfg), "--no-export"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "campaign 1" in proc.stdout and f"task {RUNS * TASKS}" in proc.stdout
    assert not (tmp_path / "runinfo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fanned.duckdb", "htex_local.py"]  # parts removed
    got, want = contents(db), contents(plain)
    assert got.keys() == want.keys()
    for table in want:
        assert got[table] == want[table], table


def test_parsl_split_runs_are_the_plain_replay(study, plain, tmp_path):
    """Runs larger than --split-size are read by several Parsl tasks (slices of their files, here 4 a run),
    then reconciled by one each: every table equal to the plain replay's, row for row."""
    options = fanout.Options(split_bytes=1_000_000)
    cut = fanout.slices(study / "003", options)
    listed = [f.rel for f in replay_files(study / "003")]
    assert len(cut) == 4 and sorted(sum(cut, [])) == sorted(listed)  # every file once, none cut
    assert any(len(s) > 1 for s in cut) and any(len(s) == 1 for s in cut)
    cfg = tmp_path / "htex_local.py"
    cfg.write_text(HTEX_CONFIG)
    db = tmp_path / "split.duckdb"
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(study), "--duckdb", str(db),
                           "--parsl-config", str(cfg), "--split-size", "1MB", "--no-export", "-q"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["htex_local.py", "split.duckdb"]  # parts removed
    got, want = contents(db), contents(plain)
    assert got.keys() == want.keys()
    for table in want:
        assert got[table] == want[table], table


def test_a_definitions_files_split_across_slices(tmp_path):
    """Slices follow the order the replay reads files in (definition, then listing), so one definition's files
    may fall in two slices (here the two worker logs): the parts, read back in order, are the one-process
    replay's, warnings included (a cut worker log). The tasks run on a thread pool standing in for Parsl."""
    from concurrent.futures import ThreadPoolExecutor

    src = REPO / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
    root = tmp_path / "runinfo"
    shutil.copytree(src, root)
    workers = sorted((root / "000").rglob("worker_*.log"))
    assert len(workers) == 2
    with workers[1].open("ab") as fh:
        fh.write(b"2026-01-01 00:00:00.000 worker_log:1 cut")  # no newline: a cut line, said once
    size = max(w.stat().st_size for w in workers)
    options = fanout.Options(split_bytes=size)
    cut = fanout.slices(root, options)
    rels = [w.relative_to(root).as_posix() for w in workers]
    assert [rels[0]] in cut and [rels[1]] in cut
    (tmp_path / "work").mkdir()
    warnings: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        paths, summaries = fanout.convert_all(lambda *a: pool.submit(fanout.convert_part, *a), root, [root],
                                              tmp_path / "work", options, warnings,
                                              observe_app=lambda *a: pool.submit(fanout.observe_part, *a))
    assert paths == [root] and warnings == []
    assert len(list((tmp_path / "work").glob("runinfo.observed-*.duckdb"))) == len(cut)
    plain_db = tmp_path / "plain.duckdb"
    whole = replay(root, plain_db)
    (split,) = summaries.values()
    assert split.warnings == whole.warnings and any("cut mid-line" in w for w in whole.warnings)
    assert split.sources == whole.sources
    assert contents(tmp_path / "work" / "runinfo.duckdb") == contents(plain_db)


def test_split_size_errors(tmp_path):
    run = REPO / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
    cfg = tmp_path / "htex_local.py"
    cfg.write_text(HTEX_CONFIG)
    for args, said in (([], "--split-size: only with --parsl-config (a replay in one process reads every file itself)"),
                       (["--parsl-config", str(cfg)], "--split-size 'big': not a size such as 1GB or 500MB")):
        proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(run), "--duckdb",
                               str(tmp_path / "x.duckdb"), "--split-size", "big", *args, "--no-export"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [f"dnpc2otel: error: {said}"]
        assert not (tmp_path / "x.duckdb").exists()


def replay_files(path: Path) -> list:
    from dnpc2otel.pipeline import sources_for

    return sources_for(path)[3]


def test_parsl_fanout_of_one_run_in_two_directories(tmp_path):
    """A run copied into two run directories is one run to the whole replay: the fan-out sees the clash in its
    parts and converts the run_dir as one task, so the database is still the plain replay's."""
    src = REPO / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
    root = tmp_path / "copies" / "runinfo"
    for name in ("000", "001"):
        shutil.copytree(src / "000", root / name)
    shutil.copy(src / "monitoring.db", root)
    cfg = tmp_path / "htex_local.py"
    cfg.write_text(HTEX_CONFIG)
    plain_db = tmp_path / "plain.duckdb"
    replay(root, plain_db)
    db = tmp_path / "fanned.duckdb"
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(root), "--duckdb", str(db),
                           "--parsl-config", str(cfg), "--no-export", "-q"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "converted as one task (a run is in several run directories" in proc.stderr
    assert "is in several run directories (000,001; copies of one run?)" in proc.stderr
    assert contents(db) == contents(plain_db)


def test_a_part_that_fails_makes_the_run_dir_one_task(tmp_path):
    """A run directory with nothing usable (an empty parsl.log: a run killed at its start) fails on its own
    but is merely empty in the whole replay: the fan-out converts the run_dir as one task. Here the tasks run
    on a thread pool standing in for Parsl's executor (the fan-out's logic, not Parsl's, is under test)."""
    from concurrent.futures import ThreadPoolExecutor

    src = REPO / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
    root = tmp_path / "runinfo"
    shutil.copytree(src / "000", root / "000")
    shutil.copy(src / "monitoring.db", root)
    (root / "001").mkdir()
    (root / "001" / "parsl.log").write_text("")
    options = fanout.Options()
    _, paths, why = fanout.plan(root, options)
    assert paths == [root / "000", root / "001"] and why is None
    (tmp_path / "work").mkdir()
    warnings: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        paths, summaries = fanout.convert_all(lambda *a: pool.submit(fanout.convert_part, *a), root, paths,
                                              tmp_path / "work", options, warnings)
    assert paths == [root] and list(summaries) == [root]
    assert warnings == ["--parsl-config: the run_dir converted as one task (the part 001: "
                        f"{root / '001'}: the sources name no run that was selected)"]
    from dnpc2otel.campaign.assemble import assemble

    fanned = tmp_path / "fanned.duckdb"
    assemble(root, [tmp_path / "work" / "runinfo.duckdb"], list(summaries.values()), fanned, options)
    plain_db = tmp_path / "plain.duckdb"
    replay(root, plain_db)
    assert contents(fanned) == contents(plain_db)


def test_parsl_config_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such file"):
        fanout.load_config(tmp_path / "absent.py")
    none = tmp_path / "none.py"
    none.write_text("executors = []\n")
    with pytest.raises(UserError, match="defines no `config`"):
        fanout.load_config(none)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no cluster today')\n")
    with pytest.raises(UserError, match="RuntimeError: no cluster today"):
        fanout.load_config(broken)
    monkeypatch.setitem(sys.modules, "parsl", None)  # as if Parsl were not installed
    monkeypatch.setitem(sys.modules, "parsl.config", None)
    with pytest.raises(UserError, match=r"needs Parsl: pip install 'dnpc2otel\[parsl\]'"):
        fanout.load_config(none)


def test_parsl_config_error_is_one_line(tmp_path):
    cfg = tmp_path / "bad.py"
    cfg.write_text(textwrap.dedent("config = 42\n"))
    run = REPO / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(run), "--duckdb",
                           str(tmp_path / "x.duckdb"), "--parsl-config", str(cfg), "--no-export"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"dnpc2otel: error: --parsl-config {cfg}: defines no `config` that is a parsl.config.Config"]
    assert not (tmp_path / "x.duckdb").exists()


def test_a_split_that_could_differ_is_one_task(study, tmp_path):
    """What crosses runs makes the plan one task for the whole run_dir: a file of no run directory, a
    dnpc2otel.toml of one run."""
    root = tmp_path / "runinfo"
    root.mkdir()
    for name in ("000", "001"):
        shutil.copytree(study / name, root / name)
    shutil.copy(study / "monitoring.db", root)
    options = fanout.Options()
    assert fanout.plan(root, options) == (root, [root / "000", root / "001"], None)
    assert fanout.plan(root / "001", options) == (root, [root / "001"], None)
    (root / "001" / "dnpc2otel.toml").write_text("converters = []\n")
    assert fanout.plan(root, options) == (root, [root], "001/dnpc2otel.toml holds for that run only")
    (root / "001" / "dnpc2otel.toml").unlink()
    (root / "sacct.txt").write_text("JobID|State\n")  # Slurm's accounting, beside the runs: names no run
    assert fanout.plan(root, options) == (root, [root], "sacct.txt belongs to no run directory")
