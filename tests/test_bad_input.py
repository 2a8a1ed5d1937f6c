"""Bad input: one clear error line (or a warning and the rest converted), never a traceback, never a
half-written DuckDB file; inputs are only read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run, corpus_runs
from verify import check_replay_against_monitoring

from dnpc2otel import replay
from dnpc2otel.errors import UserError
from dnpc2otel.export import store


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnpc2otel.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dnpc2otel: error: ")
    return lines[0]


def test_missing_path(tmp_path):
    line = one_error_line(cli("replay", str(tmp_path / "nope"), "--duckdb", str(tmp_path / "o.duckdb")))
    assert "no such file or directory" in line
    assert not (tmp_path / "o.duckdb").exists()


def test_directory_that_is_not_a_parsl_run(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello\n")
    line = one_error_line(cli("replay", str(tmp_path / "x"), "--duckdb", str(tmp_path / "o.duckdb")))
    assert "not a Parsl run directory" in line
    assert not (tmp_path / "o.duckdb").exists()


def test_a_file_instead_of_a_directory(tmp_path):
    f = tmp_path / "parsl.log"
    f.write_text("x\n")
    assert "not a directory" in one_error_line(cli("replay", str(f)))


@pytest.fixture
def htex_copy(tmp_path):
    return copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)


def test_truncated_monitoring_db_warns_and_converts_the_logs(htex_copy, tmp_path):
    db = htex_copy / "monitoring.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    out = tmp_path / "t.duckdb"
    proc = cli("replay", str(htex_copy), "--duckdb", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "warning" in proc.stderr and "monitoring.db" in proc.stderr
    # the log alone still gives every task and try, checked against the intact database
    check_replay_against_monitoring(out, CORPUS / "htex-2026" / "runinfo" / "monitoring.db")


def test_corrupt_database_as_the_only_source_is_fatal(tmp_path):
    run_dir = tmp_path / "runinfo"
    run_dir.mkdir()
    (run_dir / "monitoring.db").write_bytes(os.urandom(8192))
    out = tmp_path / "c.duckdb"
    line = one_error_line(cli("replay", str(run_dir), "--duckdb", str(out)))
    assert "no usable observation" in line
    assert not out.exists()
    assert not list(tmp_path.glob(".c.duckdb.tmp*"))


def test_binary_garbage_and_invalid_utf8_in_a_log(htex_copy, tmp_path):
    (htex_copy / "monitoring.db").unlink()
    log = htex_copy / "000" / "parsl.log"
    lines = log.read_bytes().split(b"\n")
    garbage = [b"\x00\xff\xfe garbage \x80\x81", os.urandom(200).replace(b"\n", b" ")]
    # before the first record (not understood), inside a record's continuation, and in a message
    lines = garbage + lines[:500] + garbage + [lines[500] + b" \xe9\xe8"] + lines[501:]
    log.write_bytes(b"\n".join(lines))
    summary = replay(htex_copy, tmp_path / "g.duckdb")
    src = next(s for s in summary.sources if s.source == "000/parsl.log")
    assert src.invalid_bytes and src.not_understood == 2
    check_replay_against_monitoring(tmp_path / "g.duckdb", CORPUS / "htex-2026" / "runinfo" / "monitoring.db")


def test_empty_log_only(tmp_path):
    run = tmp_path / "runinfo" / "000"
    run.mkdir(parents=True)
    (run / "parsl.log").write_text("")
    line = one_error_line(cli("replay", str(run), "--duckdb", str(tmp_path / "e.duckdb")))
    assert "no usable observation" in line
    assert not (tmp_path / "e.duckdb").exists()


def test_existing_file_that_is_not_ours_is_left_alone(htex_copy, tmp_path):
    other = tmp_path / "mine.duckdb"
    other.write_text("my notes, not a database\n")
    line = one_error_line(cli("replay", str(htex_copy), "--duckdb", str(other)))
    assert "not a DuckDB database" in line
    assert other.read_text() == "my notes, not a database\n"
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as c:
        c.execute("CREATE TABLE t AS SELECT 42 AS x")
    assert "not written by dnpc2otel" in one_error_line(cli("replay", str(htex_copy), "--duckdb", str(foreign)))
    with duckdb.connect(str(foreign)) as c:
        assert c.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_failure_while_writing_leaves_no_file(htex_copy, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_fill", boom)
    out = tmp_path / "half.duckdb"
    with pytest.raises(RuntimeError):
        replay(htex_copy, out)
    assert not out.exists()
    assert list(tmp_path.glob(".half.duckdb*")) == []


def test_failure_while_merging_keeps_the_previous_content(htex_copy, tmp_path, monkeypatch):
    out = tmp_path / "keep.duckdb"
    replay(htex_copy, out)
    with duckdb.connect(str(out), read_only=True) as c:
        before = c.execute("SELECT count(*) FROM spans").fetchone()
    real_fill = store._fill

    def fill_then_fail(con, db):
        real_fill(con, db)
        raise RuntimeError("killed mid-merge")

    monkeypatch.setattr(store, "_fill", fill_then_fail)
    with pytest.raises(RuntimeError):
        replay(htex_copy, out)
    with duckdb.connect(str(out), read_only=True) as c:
        assert c.execute("SELECT count(*) FROM spans").fetchone() == before


def test_inputs_are_only_read(tmp_path):
    """A read-only run_dir converts, and nothing in it changes; the pickled log config is never opened."""
    src = CORPUS / "htex-json-2026" / "runinfo"
    run_dir = copy_run(src, tmp_path)
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")}
    for p in [run_dir, *run_dir.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        summary = replay(run_dir, tmp_path / "ro.duckdb")
    finally:
        for p in [run_dir, *run_dir.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")} == before
    assert not any(s.source.endswith(".pkl") for s in summary.sources)


def test_unknown_timezone(htex_copy):
    with pytest.raises(UserError, match="time zone"):
        replay(htex_copy, htex_copy.parent / "tz.duckdb", timezone="Mars/Olympus")


@pytest.mark.parametrize("run", corpus_runs(), ids=[p.parent.name for p in corpus_runs()])
def test_corpus_logs_are_fully_understood(run, tmp_path):
    summary = replay(run, tmp_path / "u.duckdb")
    assert summary.lines_not_understood == 0
    assert not summary.warnings


def test_python_api_mirrors_cli(htex_copy, tmp_path):
    out = tmp_path / "api.duckdb"
    proc = cli("replay", str(htex_copy), "--duckdb", str(out))
    assert proc.returncode == 0, proc.stderr
    with duckdb.connect(str(out), read_only=True) as c:
        (spans,) = c.execute("SELECT count(*) FROM spans").fetchone()
    assert f"DuckDB: {out}" in proc.stdout and f"spans / links / events: {spans} / " in proc.stdout
    # in a pipe the summary is whole lines: no path cut with "…" to fit a terminal's width
    assert "…" not in proc.stdout
    assert "000/submit_scripts/parsl.worker_pool.block-0.1795291150.2192538.sh.out" in proc.stdout
    api = tmp_path / "api2.duckdb"
    replay(htex_copy, api)
    q = "SELECT * FROM spans ORDER BY ALL"
    with duckdb.connect(str(out), read_only=True) as a, duckdb.connect(str(api), read_only=True) as b:
        assert a.execute(q).fetchall() == b.execute(q).fetchall()
    shutil.rmtree(htex_copy)


def test_a_zone_name_timezone_prints_its_summary(htex_copy, tmp_path):
    """--timezone with a zone name (no single offset) used to end in 'internal error: TypeError'."""
    proc = cli("replay", str(htex_copy), "--duckdb", str(tmp_path / "z.duckdb"), "--timezone", "America/Chicago")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "given: --timezone America/Chicago" in proc.stdout
