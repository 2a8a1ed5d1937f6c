"""Damaged inputs are said out loud: which file, what is wrong with it, what was done; the usable rest converts.

Each case damages a copy of the real run tests/data/corpus/htex-2026 (Parsl 2026.10.26) the way files get
damaged (a copy cut short, a crash's garbage or zero blocks, a run still writing, a permission, a lock, a
newer Parsl) and replays it through the CLI: one warning line per damaged file on stderr, a `damaged sources`
line in the summary, the `sources` table's warning; never a traceback. What the intact parts give is checked
against a replay of the intact run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run
from snapshot import table_digests

from dnpc2otel import replay
from dnpc2otel.sources import lines as lines_module
from dnpc2otel.sources import rundir

HTEX = CORPUS / "htex-2026" / "runinfo"
LOG = "000/parsl.log"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnpc2otel.cli", *args], capture_output=True, text=True,
                          timeout=300)


def converted_with_warnings(proc: subprocess.CompletedProcess) -> list[str]:
    """The replay succeeded without a traceback; its warning lines (each 'dnpc2otel: warning: …')."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("dnpc2otel: warning: ") for ln in lines), proc.stderr
    return [ln.removeprefix("dnpc2otel: warning: ") for ln in lines]


def summary_line(proc: subprocess.CompletedProcess, label: str) -> str:
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith(label + ": ")]
    assert len(found) == 1, proc.stdout
    return found[0].removeprefix(label + ": ")


def source_row(db: Path, source: str) -> dict:
    with duckdb.connect(str(db), read_only=True) as c:
        cur = c.execute("SELECT * FROM sources WHERE source = ?", [source])
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
    assert row, source
    return dict(zip(names, row, strict=True))


def observations_of(db: Path, source: str) -> list[tuple]:
    """What one file gave, independent of row order: (type, id, event, time, line, rule, attributes)."""
    with duckdb.connect(str(db), read_only=True) as c:
        return sorted(c.execute(
            "SELECT context_type, context_id, event, time_ns, line, rule, attributes::VARCHAR FROM observations "
            "WHERE source = ?", [source]).fetchall(), key=repr)


@pytest.fixture
def intact(tmp_path) -> Path:
    """The intact run's replay, to compare with, made as the damaged one is (by the CLI, now)."""
    out = tmp_path / "intact.duckdb"
    converted_with_warnings(cli("replay", str(HTEX), "--duckdb", str(out), "-q"))
    return out


@pytest.fixture
def run(tmp_path) -> Path:
    return copy_run(HTEX, tmp_path)


def replay_cli(run: Path, out: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    proc = cli("replay", str(run), "--duckdb", str(out))
    return proc, converted_with_warnings(proc)


# ---------------------------------------------------------------------- cut logs
def test_a_log_cut_mid_line_is_said_and_its_unfinished_line_not_read(run, tmp_path):
    """parsl.log cut to its first 20 kB: the cut falls inside a line, whose values would be cut too."""
    log = run / LOG
    data = log.read_bytes()[:20_000]
    assert not data.endswith(b"\n")
    log.write_bytes(data)
    proc, warnings = replay_cli(run, tmp_path / "cut.duckdb")
    unfinished = len(data) - data.rfind(b"\n") - 1
    assert warnings == [f"{LOG}: cut mid-line: its last {unfinished} bytes have no newline (an unfinished line, "
                        "not read); the rest was read"]
    assert summary_line(proc, "damaged sources").startswith(f"{LOG} (cut mid-line: its last {unfinished} bytes")
    assert source_row(tmp_path / "cut.duckdb", LOG)["warning"].startswith("cut mid-line")
    # the same file cut at the line before gives exactly the same observations, and is not damaged
    whole = copy_run(HTEX, tmp_path / "whole")
    (whole / LOG).write_bytes(data[: data.rfind(b"\n") + 1])
    proc2, warnings2 = replay_cli(whole, tmp_path / "whole.duckdb")
    assert warnings2 == [] and "damaged sources" not in proc2.stdout
    got = observations_of(tmp_path / "cut.duckdb", LOG)
    assert got and got == observations_of(tmp_path / "whole.duckdb", LOG)
    assert max(r[4] for r in got) < data.count(b"\n") + 1


def test_a_log_cut_between_lines_inside_a_record_converts_what_it_holds(tmp_path):
    """Cut after line 110, inside the multi-line dump of the provider (a continuation of record 106): the
    file ends with a newline, so nothing shows it was cut; the run has no end, which the summary says
    (without monitoring.db, which would still tell the whole run)."""
    run = copy_run(HTEX, tmp_path, without_db=True)
    log = run / LOG
    kept = log.read_bytes().split(b"\n")[:110]
    assert not kept[-1].startswith(b"17")  # a continuation line, not a record
    log.write_bytes(b"\n".join(kept) + b"\n")
    out = tmp_path / "rec.duckdb"
    proc, warnings = replay_cli(run, out)
    assert not any(w.startswith(LOG) for w in warnings)
    assert "incomplete" in summary_line(proc, "disagreements (table disagreements)")
    assert source_row(out, LOG)["lines"] == 110 and source_row(out, LOG)["not_understood"] == 0
    assert {r[4] for r in observations_of(out, LOG)} <= set(range(1, 107))


# ---------------------------------------------------------------------- garbage
def test_binary_garbage_appended_is_counted_and_adds_nothing(run, tmp_path, intact):
    """300 kB of random bytes after the last record: no longer swallowed as continuation lines of it."""
    log = run / LOG
    garbage = os.urandom(300_000)
    log.write_bytes(log.read_bytes() + garbage)
    out = tmp_path / "garbage.duckdb"
    proc, warnings = replay_cli(run, out)
    assert len(warnings) == 1 and warnings[0].startswith(f"{LOG}: "), warnings
    row = source_row(out, LOG)
    assert row["invalid_bytes"] > 1000 and f"{row['invalid_bytes']} invalid bytes" in warnings[0]
    # a line of the garbage (its last, unfinished one aside) holding a control character or an invalid byte is
    # not text, so no continuation of the last record: not understood (a short piece may happen to be text)
    garbage_lines = sum(1 for piece in garbage.split(b"\n")[:-1] if piece and not is_text(piece))
    assert garbage_lines > 1000
    assert row["not_understood"] == garbage_lines
    assert f"{garbage_lines} binary lines (no records: skipped)" in warnings[0]
    assert summary_line(proc, "lines not understood").startswith(str(garbage_lines))
    assert "damaged sources" in proc.stdout and warnings[0].endswith("the rest was read")
    assert observations_of(out, LOG) == observations_of(intact, LOG)


def is_text(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch >= " " and ch not in "\x7f\ufffd" or ch in "\t\r\x1b" for ch in text)


def test_zero_blocks_after_a_crash_are_invalid_bytes(run, tmp_path, intact):
    """A crash can leave the end of a file as blocks of NUL bytes (the size was written, the data not)."""
    log = run / "000" / "worker_pool" / "interchange.log"
    log.write_bytes(log.read_bytes() + b"\x00" * 65536)
    out = tmp_path / "nul.duckdb"
    _, warnings = replay_cli(run, out)
    rel = "000/worker_pool/interchange.log"
    assert warnings == [f"{rel}: cut mid-line: its last 65536 bytes have no newline (an unfinished line, not read); "
                        "65536 invalid bytes (not UTF-8, or NUL) replaced by U+FFFD; the rest was read"]
    assert source_row(out, rel)["invalid_bytes"] == 65536
    assert observations_of(out, rel) == observations_of(intact, rel)


def test_non_utf8_bytes_in_a_record_are_replaced_and_the_record_read(run, tmp_path, intact):
    """A Latin-1 host name in a record: its two bytes are replaced, the record still gives its observations."""
    log = run / LOG
    data = log.read_bytes()
    assert data.count(b"App work,") > 1
    log.write_bytes(data.replace(b"App work,", b"App w\xf6rk\xe9,", 1))
    out = tmp_path / "latin1.duckdb"
    _, warnings = replay_cli(run, out)
    assert warnings == [f"{LOG}: 2 invalid bytes (not UTF-8, or NUL) replaced by U+FFFD; the rest was read"]
    with duckdb.connect(str(out), read_only=True) as c:
        names = c.execute("SELECT DISTINCT attributes->>'$.\"parsl.app.name\"' FROM observations "
                          "WHERE source = ? AND rule = 'task_submitted'", [LOG]).fetchall()
    assert ("w\ufffdrk\ufffd",) in names
    assert len(observations_of(out, LOG)) == len(observations_of(intact, LOG))


def test_a_100_mb_line_is_not_read_and_memory_stays_bounded(run, tmp_path, intact):
    """A single 100 MB line (a blob without newlines) inside a worker log: skipped, the rest converts."""
    rel = "000/worker_pool/block-0/fd83ca48a1c7/worker_0.log"
    log = run / rel
    lines = log.read_bytes().split(b"\n")
    with open(log, "wb") as fh:
        fh.write(b"\n".join(lines[:20]) + b"\n")
        for _ in range(100):
            fh.write(b"x" * (1 << 20))
        fh.write(b"\n" + b"\n".join(lines[20:]))
    out = tmp_path / "long.duckdb"
    _, warnings = replay_cli(run, out)
    assert warnings == [f"{rel}: 1 line over {lines_module.MAX_LINE_BYTES >> 20} MiB (not read); the rest was read"]
    got = observations_of(out, rel)
    want = [(*r[:4], r[4] + 1 if r[4] > 20 else r[4], *r[5:]) for r in observations_of(intact, rel)]
    assert got == sorted(want, key=repr)  # every other line read, at its own line number


def test_an_over_long_line_is_dropped_while_it_is_read(tmp_path):
    """Bytes without a newline never pile up in memory: the line is dropped as soon as it passes the limit
    (the limit lowered here so that the chunked reader meets it across several reads)."""
    f = tmp_path / "x.log"
    f.write_bytes(b"first\n" + b"y" * 5000 + b"\nlast\n" + b"z" * 3000)
    con = duckdb.connect()
    old = lines_module.MAX_LINE_BYTES, lines_module.CHUNK_BYTES
    lines_module.MAX_LINE_BYTES, lines_module.CHUNK_BYTES = 1000, 256
    try:
        damage = lines_module.load_lines(con, f)
    finally:
        lines_module.MAX_LINE_BYTES, lines_module.CHUNK_BYTES = old
    assert (damage.long_lines, damage.cut_bytes, damage.invalid_bytes) == (2, 3000, 0)
    assert con.execute("SELECT line, text FROM lines ORDER BY line").fetchall() == [(1, "first"), (3, "last")]


# ---------------------------------------------------------------------- empty, missing, unreadable
def test_an_empty_log_is_said_and_the_rest_converts(run, tmp_path, intact):
    (run / "000" / "worker_pool" / "interchange.log").write_bytes(b"")
    out = tmp_path / "empty.duckdb"
    proc, warnings = replay_cli(run, out)
    assert warnings == ["000/worker_pool/interchange.log: empty (0 bytes); nothing to read"]
    assert observations_of(out, LOG) == observations_of(intact, LOG)


def test_a_file_that_vanishes_after_it_was_listed(run, tmp_path, monkeypatch, intact):
    """A file removed between the listing and its reading (a run cleaning up): said, and the rest converts."""
    listed = rundir.source_files
    gone = run / "000" / "worker_pool" / "interchange.log"

    def list_then_remove(selection, definitions, *extra):
        files = listed(selection, definitions, *extra)
        gone.unlink()
        return files

    monkeypatch.setattr(rundir, "source_files", list_then_remove)
    summary = replay(run, tmp_path / "gone.duckdb")
    assert summary.warnings == ["000/worker_pool/interchange.log: cannot read: No such file or directory; skipped"]
    stats = next(s for s in summary.sources if s.source == "000/worker_pool/interchange.log")
    assert stats.skipped and stats.damage == "cannot read: No such file or directory"
    assert observations_of(tmp_path / "gone.duckdb", LOG) == observations_of(intact, LOG)


def _without_root_privilege() -> list[str]:
    """A command prefix under which file permissions hold (root reads anything otherwise)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        if os.environ.get("CI"):
            pytest.fail("setpriv (util-linux) is needed to test unreadable files as root")
        pytest.skip("setpriv (util-linux) missing")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file_and_directory(run, tmp_path, intact):
    prefix = _without_root_privilege()
    (run / "000" / "worker_pool" / "interchange.log").chmod(0)
    (run / "000" / "worker_pool" / "block-0").chmod(0)
    out = tmp_path / "perm.duckdb"
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "dnpc2otel.cli", "replay", str(run), "--duckdb",
                               str(out)], capture_output=True, text=True, timeout=300)
    finally:
        (run / "000" / "worker_pool" / "block-0").chmod(0o755)
    warnings = converted_with_warnings(proc)
    assert warnings == ["1 path not read: 000/worker_pool/block-0 (cannot list: Permission denied)",
                        "000/worker_pool/interchange.log: cannot read: Permission denied; skipped"]
    assert "000/worker_pool/interchange.log (cannot read: Permission denied, skipped)" in summary_line(
        proc, "damaged sources")
    assert observations_of(out, LOG) == observations_of(intact, LOG)


def test_symbolic_link_loops_are_not_followed(run, tmp_path, intact):
    """A link to itself, one to the directory above and one out of the run_dir: said once, nothing followed;
    the replay is the intact one."""
    pool = run / "000" / "worker_pool"
    (pool / "loop").symlink_to("loop")
    (pool / "block-0" / "up").symlink_to("..")
    (run / "000" / "outside").symlink_to("/")
    out = tmp_path / "links.duckdb"
    _, warnings = replay_cli(run, out)
    assert warnings == ["2 paths not read: 000/outside (leads out of the run directory, to /: not followed), "
                        "000/worker_pool/loop (a loop, or broken: not followed)"]
    assert table_digests(out)["observations"] == table_digests(intact)["observations"]


# ---------------------------------------------------------------------- monitoring.db
def test_a_corrupt_monitoring_db_is_said_and_the_logs_convert(run, tmp_path, intact):
    """Pages overwritten in the middle of the database (a disk error): its warning; every log converts."""
    db = run / "monitoring.db"
    data = bytearray(db.read_bytes())
    page = 4096
    data[page : 3 * page] = os.urandom(2 * page)
    db.write_bytes(bytes(data))
    out = tmp_path / "corrupt.duckdb"
    proc, warnings = replay_cli(run, out)
    assert len(warnings) == 1 and warnings[0].startswith("monitoring.db: "), warnings
    assert "malformed" in warnings[0] or "not a database" in warnings[0] or "unreadable" in warnings[0]
    assert "monitoring.db (" in summary_line(proc, "damaged sources")
    assert observations_of(out, LOG) == observations_of(intact, LOG)


def test_a_monitoring_db_locked_by_its_writer_is_read_as_it_is_on_disk(run, tmp_path, intact):
    """A Parsl run still writing monitoring.db holds its lock: one warning, the rows on disk converted."""
    db = run / "monitoring.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = tmp_path / "locked.duckdb"
        proc, warnings = replay_cli(run, out)
    finally:
        holder.communicate("", timeout=30)
    assert len(warnings) == 1 and warnings[0].startswith("monitoring.db: locked by another process"), warnings
    assert observations_of(out, "monitoring.db") == observations_of(intact, "monitoring.db")


def test_a_monitoring_db_of_a_newer_parsl_with_unknown_columns_and_tables(run, tmp_path, intact):
    """A later release adds columns and tables: read as before, nothing said, nothing different."""
    db = sqlite3.connect(run / "monitoring.db")
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        db.execute(f'ALTER TABLE "{table}" ADD COLUMN future_value TEXT')
        db.execute(f"UPDATE \"{table}\" SET future_value = 'from 2027'")
    db.execute("CREATE TABLE future_table (run_id TEXT, anything BLOB)")
    db.execute("INSERT INTO future_table VALUES ('x', x'00ff')")
    db.commit()
    db.close()
    out = tmp_path / "newer.duckdb"
    _, warnings = replay_cli(run, out)
    assert warnings == []
    got, want = table_digests(out), table_digests(intact)
    for table in ("spans", "observations", "span_links", "disagreements"):
        assert got[table] == want[table], table


def test_duplicated_run_ids_are_said(run, tmp_path):
    """A run directory copied beside itself (000 → 001): the same run id twice is said, read as one run."""
    shutil.copytree(run / "000", run / "001")
    out = tmp_path / "dup.duckdb"
    proc, warnings = replay_cli(run, out)
    assert warnings == ["run f4859240-e83b-42c0-b1be-59fcef8b0d70 is in several run directories (000,001; copies "
                        "of one run?): read as one run, its repeated events listed in table disagreements"]
    with duckdb.connect(str(out), read_only=True) as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM disagreements WHERE kind = 'repeated_event'").fetchone()[0] > 0


# ---------------------------------------------------------------------- read-only medium, a run still growing
def test_a_run_directory_on_a_read_only_filesystem(run, tmp_path, intact):
    """The run_dir bind-mounted read-only (in a private mount namespace): converts as from anywhere else."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        if os.environ.get("CI"):
            pytest.fail("unshare -m (util-linux, root) is needed to mount a read-only run_dir")
        pytest.skip("cannot make a mount namespace here")
    out = tmp_path / "ro.duckdb"
    script = ('mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && ! touch "$1/probe" 2>/dev/null '
              '&& exec "$2" -m dnpc2otel.cli replay "$1" --duckdb "$3"')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(run), sys.executable, str(out)],
                          capture_output=True, text=True, timeout=300)
    assert converted_with_warnings(proc) == []
    got, want = table_digests(out), table_digests(intact)
    for table in ("spans", "observations", "span_links", "sources"):
        assert got[table] == want[table], table


def test_a_run_still_growing_while_it_is_read(run, tmp_path, intact):
    """parsl.log grows (in pieces that end mid-line) while the replay reads it: whatever was read is what the
    finished file says, never a value cut at the end of a piece."""
    log = run / LOG
    full = log.read_bytes()
    start = full.index(b"\n", len(full) // 3) + 1
    log.write_bytes(full[:start])
    done = threading.Event()

    def grow():
        pos = start
        while pos < len(full) and not done.is_set():
            with open(log, "ab") as fh:
                fh.write(full[pos : pos + 777])
            pos += 777
            time.sleep(0.002)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        summary = replay(run, tmp_path / "growing.duckdb")
    finally:
        done.set()
        writer.join()
    assert summary.spans > 0
    got = observations_of(tmp_path / "growing.duckdb", LOG)
    want = set(observations_of(intact, LOG))
    assert got and all(o in want for o in got), [o for o in got if o not in want][:3]
