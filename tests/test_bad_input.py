"""Bad input: one clear error line (or a warning and the rest converted), never a traceback, never a
half-written DuckDB file; inputs are only read."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run, corpus_runs
from otlp_receiver import HttpReceiver
from verify import check_replay_against_monitoring

from dnpc2otel import replay
from dnpc2otel.errors import UserError
from dnpc2otel.export import store
from dnpc2otel.export.otlp_config import OtlpConfig, endpoint_address


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
    # the garbage before the first record and the garbage after record 500 (binary: no continuation of it)
    assert src.not_understood == 4
    # the garbage's bytes that are not UTF-8 (or NUL), twice, and the 2 in the message
    assert src.invalid_bytes == 2 * sum(_invalid(g) for g in garbage) + 2
    assert summary.warnings == [f"000/parsl.log: {src.invalid_bytes} invalid bytes (not UTF-8, or NUL) replaced by "
                                "U+FFFD; 4 binary lines (no records: skipped); the rest was read"]
    check_replay_against_monitoring(tmp_path / "g.duckdb", CORPUS / "htex-2026" / "runinfo" / "monitoring.db")


def _invalid(data: bytes) -> int:
    """Bytes that are not UTF-8, or NUL: Python's own decoder as the oracle."""
    text = data.decode("utf-8", "surrogateescape")
    return sum(1 for ch in text if "\udc80" <= ch <= "\udcff" or ch == "\x00")


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


# ---------------------------------------------------------------------- export: where it sends, and why
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export_with_default(default: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dnpc2otel export …` with the built-in default endpoint pointed at `default` (a port of the test's),
    and no OTEL_* variable but those given."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env or {})
    code = ("import sys; from dnpc2otel.export import otlp_config as c; c.DEFAULT_OTLP_HTTP_ENDPOINT = sys.argv[1]; "
            "from dnpc2otel.cli import main; sys.exit(main(sys.argv[2:]))")
    return subprocess.run([sys.executable, "-c", code, default, "export", *args], capture_output=True, text=True,
                          env=environ, timeout=300)


@pytest.fixture(scope="module")
def replayed_db(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "e.duckdb"
    replay(CORPUS / "htex-2026" / "runinfo", out)
    return out


def test_export_to_the_default_endpoint_with_nothing_listening_fails_at_once(replayed_db):
    """No endpoint configured and nothing listens: it says where it sends and why, then fails on the first
    refusal with one line (no minute of retries)."""
    default = f"http://127.0.0.1:{_free_port()}"
    proc = _export_with_default(default, str(replayed_db))
    assert proc.stdout.splitlines()[0] == (
        f"OTLP: sending to {default}/v1/traces (http/protobuf, the default endpoint: none of --otlp-endpoint, "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT is set)")
    line = one_error_line(proc)
    assert line.startswith(f"dnpc2otel: error: nothing listens at {default}/v1/traces (Connection refused); "
                           "it is the default endpoint")
    assert "--otlp-endpoint" in line and "retried" not in line


def test_export_to_the_default_endpoint_that_listens_delivers(replayed_db):
    with HttpReceiver() as rx:
        proc = _export_with_default(rx.endpoint, str(replayed_db))
    assert proc.returncode == 0, proc.stderr
    assert "the default endpoint" in proc.stdout.splitlines()[0]
    with duckdb.connect(str(replayed_db), read_only=True) as c:
        (spans,) = c.execute("SELECT count(*) FROM spans").fetchone()
    assert len(rx.received.spans()) == spans


@pytest.mark.parametrize("how", ["--otlp-endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                 "OTEL_EXPORTER_OTLP_ENDPOINT"])
def test_a_configured_endpoint_is_named_with_its_origin_and_retried(replayed_db, how):
    """A configured endpoint may be a receiver being restarted: retried (here for 1 s), and every message
    names where the endpoint came from."""
    target = f"http://127.0.0.1:{_free_port()}"
    args = [str(replayed_db), "--otlp-retry-seconds", "1"]
    env = {}
    if how == "--otlp-endpoint":
        args += ["--otlp-endpoint", target]
    else:
        env[how] = target + "/v1/traces" if how.endswith("TRACES_ENDPOINT") else target
    proc = _export_with_default(f"http://127.0.0.1:{_free_port()}", *args, env=env)
    assert proc.stdout.splitlines()[0] == f"OTLP: sending to {target}/v1/traces (http/protobuf, endpoint from {how})"
    line = one_error_line(proc)
    assert f"(retried for 1 s; endpoint from {how})" in line and "resume with: dnpc2otel export" in line


def test_otlp_config_remembers_where_its_endpoint_came_from(monkeypatch):
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    assert OtlpConfig.from_env().is_default
    assert OtlpConfig.from_env("127.0.0.1:1").origin == "given"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    cfg = OtlpConfig.from_env()
    assert (cfg.endpoint, cfg.origin) == ("http://collector:4318/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT")
    assert endpoint_address(cfg) == ("collector", 4318)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://tempo.example/otlp")
    cfg = OtlpConfig.from_env()
    assert (cfg.origin, endpoint_address(cfg)) == ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ("tempo.example", 443))
    assert endpoint_address(OtlpConfig.from_env("10.0.0.5:4317", "grpc")) == ("10.0.0.5", 4317)


# ---------------------------------------------------------------------- off a terminal, nothing is cut
def test_off_a_terminal_paths_and_names_are_never_cut(htex_copy, tmp_path):
    """In a pipe (as here) the summary and the converters list are whole lines, however long: no "…", no
    path broken over two lines."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    out = deep / "a-database-with-a-long-name.duckdb"
    proc = cli("replay", str(htex_copy), "--duckdb", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"DuckDB: {out}"
    assert "…" not in proc.stdout
    proc = cli("converters")
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split("\t") for ln in proc.stdout.splitlines()]
    from dnpc2otel.sources.definitions import load_all
    assert sorted(r[3] for r in rows) == sorted(str(d.path) for d in load_all([]))
    assert "…" not in proc.stdout


def test_a_memory_limit_too_small_is_one_line_with_what_to_do(tmp_path):
    """DuckDB spills beyond --memory-limit (default 1GB); a step it cannot spill stops the replay with one
    line that says which limit was hit and what to pass, and no output file (an existing one is untouched)."""
    out = tmp_path / "o.duckdb"
    line = one_error_line(cli("replay", str(CORPUS / "htex-2026" / "runinfo"), "--duckdb", str(out), "-q",
                              "--no-export", "--memory-limit", "1MB"))
    assert "memory limit of 1MB" in line and "--memory-limit" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "1GB" in cli("replay", "--help").stdout  # the default is said


def test_a_duckdb_file_that_cannot_be_written_is_one_error_and_no_file(tmp_path, monkeypatch):
    """DuckDB's own I/O failures while writing the output (a full disk; the 10^6-task replay's failed checkpoint,
    issue 12) are said as the output's problem, and nothing is left behind."""
    def no_space(con, db):
        raise duckdb.IOException("IO Error: Could not write file: No space left on device")

    monkeypatch.setattr(store, "_fill", no_space)
    out = tmp_path / "o.duckdb"
    with pytest.raises(UserError, match=r"o\.duckdb: cannot write the DuckDB file \(IO Error: .*No space left"):
        replay(CORPUS / "htex-2026" / "runinfo", out)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_the_run_dir_is_read_as_that_run_dir(tmp_path):
    # users name the folder their script ran in; Parsl wrote its run_dir (runinfo/) there
    project = CORPUS / "htex-2026"
    summary = replay(project, tmp_path / "p.duckdb")
    direct = replay(project / "runinfo", tmp_path / "r.duckdb")
    assert summary.contexts == direct.contexts and summary.contexts["workflow"] >= 1
    assert summary.run_dir == (project / "runinfo").resolve()
    proc = cli("replay", str(project), "--duckdb", str(tmp_path / "c.duckdb"), "--no-export")
    assert proc.returncode == 0, proc.stderr
    assert f"run_dir: {(project / 'runinfo').resolve()} (inside {project})" in proc.stdout


def test_a_folder_holding_two_run_dirs_names_both(tmp_path):
    for name in ("a", "b"):
        shutil.copytree(CORPUS / "htex-2026" / "runinfo", tmp_path / "p" / name)
    line = one_error_line(cli("replay", str(tmp_path / "p"), "--duckdb", str(tmp_path / "o.duckdb")))
    assert "holds 2 Parsl run_dirs" in line and str(tmp_path / "p" / "a") in line and str(tmp_path / "p" / "b") in line
    assert not (tmp_path / "o.duckdb").exists()


def test_summary_queries_keep_to_the_memory_limit(tmp_path):
    # the definitions' summary queries run on a connection of their own: at 10^6 tasks DuckDB's default
    # (80 % of RAM) let the HTEX chain summary take 6 GB; past the limit the line says so, the database stays
    from dnpc2otel.sources import definitions

    db = tmp_path / "f.duckdb"
    summary = replay(CORPUS / "features-2026" / "runinfo", db)
    label = "HTEX tries that ran, fully chained"
    with duckdb.connect(str(db), read_only=True) as c:
        (ran,) = c.execute("SELECT count(*) FROM htex_try_chain WHERE ran").fetchone()
    assert ran > 0 and summary.lines[label].split(" ")[0].endswith(f"/{ran}")
    catalog = definitions.load_catalog(None, None)
    lines = store.summarise(db, [r["trace_id"] for r in summary.runs], catalog.summaries, "1MB")
    assert lines[label].startswith("not computed: needs more than the memory limit of 1MB")
    again = store.summarise(db, [r["trace_id"] for r in summary.runs], catalog.summaries, "1GB")
    assert again[label] == summary.lines[label]
