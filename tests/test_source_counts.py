"""Per source, what was read and what was not used: lines that fit no record, and records no rule uses
(a message template no definition reads is counted, not silently dropped)."""

from __future__ import annotations

import duckdb
from conftest import CORPUS, copy_run

from dnpc2otel import replay


def source_row(db, source):
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute("SELECT lines, records, records_used, not_understood FROM sources WHERE source = ?",
                         [source]).fetchone()


def test_records_no_rule_uses_are_counted_per_source(tmp_path):
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    before = replay(run, tmp_path / "a.duckdb")
    lines, records, used, misfits = source_row(tmp_path / "a.duckdb", "000/parsl.log")
    text = (run / "000" / "parsl.log").read_text().splitlines()
    assert lines == len(text) and misfits == 0
    assert 0 < used < records <= lines
    # a well-formed record whose message no rule reads, and a line that is no record at all (it opens the
    # file, so in this multi-line format it continues nothing)
    record = text[-1].split(": ", 1)[0] + ": A message template that no definition reads"
    (run / "000" / "parsl.log").write_text("garbage before any record\n" + "\n".join([*text, record]) + "\n")
    after = replay(run, tmp_path / "b.duckdb")
    assert source_row(tmp_path / "b.duckdb", "000/parsl.log") == (lines + 2, records + 1, used, 1)
    assert after.records_unused == before.records_unused + 1
    assert after.lines_not_understood == before.lines_not_understood + 1


def test_a_logging_format_no_definition_reads_is_one_warning(tmp_path):
    """A user's own logging format for parsl.log: one warning naming the file; the rest converts."""
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    log = run / "000" / "parsl.log"
    # '1795291145.1 2026-… Main… INFO: msg' → '[INFO] msg': every line in a format nobody declared
    lines = [ln.split(" ", 7) for ln in log.read_text().splitlines()]
    log.write_text("".join(f"[{p[6].rstrip(':')}] {p[7]}\n" if len(p) == 8 else "  continued\n" for p in lines))
    summary = replay(run, tmp_path / "w.duckdb")
    warned = [w for w in summary.warnings if w.startswith("000/parsl.log: ")]
    assert len(warned) == 1 and "no line is in the parsl_dfk format" in warned[0], summary.warnings
    assert summary.contexts["task"] == 31 and summary.contexts["worker_execution"] == 31
    assert source_row(tmp_path / "w.duckdb", "000/parsl.log")[1:3] == (0, 0)
