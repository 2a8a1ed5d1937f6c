"""Time zones of real runs: JSON logging (epoch only) made outside UTC, and a zone-name --timezone."""

from __future__ import annotations

import duckdb
import pytest
from conftest import CORPUS, make_parsl_run
from verify import check_replay_against_monitoring

from dnpc2otel import replay


@pytest.fixture(scope="module")
def json_chicago(tmp_path_factory):
    """A real Parsl run with JSON logging and monitoring, made under TZ=America/Chicago (UTC-6 in December)."""
    return make_parsl_run(tmp_path_factory.mktemp("json_chicago"), "--json-logs", "--tasks", "6",
                          env={"TZ": "America/Chicago"}, workflow="mixed.py")


@pytest.mark.slow
def test_json_logging_outside_utc(json_chicago, tmp_path):
    assert (json_chicago / "000" / "parsl.jsonlog").is_file() and not (json_chicago / "000" / "parsl.log").exists()
    out = tmp_path / "j.duckdb"
    summary = replay(json_chicago, out)
    run = summary.runs[0]
    # the DFK's JSON records carry the epoch only: the offset is inferred (from events stamped by two
    # sources, or from the few records of other JSON logs that carry both), never assumed, and says so
    assert run["utc_offset_seconds"] in (-6 * 3600, -5 * 3600)
    assert run["offset_source"].startswith("inferred from "), run["offset_source"]
    check_replay_against_monitoring(out, json_chicago / "monitoring.db", times="monitoring.db")
    # the 6 hours are not taken for clock skew of the hosts
    with duckdb.connect(str(out), read_only=True) as c:
        (worst,) = c.execute("SELECT coalesce(max(abs(skew_ms)), 0) FROM clocks").fetchone()
    assert worst < 1000
    # the zone given by name: each local time resolved by the zone's rules, the same checks pass
    named = tmp_path / "named.duckdb"
    summary = replay(json_chicago, named, timezone="America/Chicago")
    assert summary.runs[0]["offset_source"] == "given: --timezone America/Chicago"
    check_replay_against_monitoring(named, json_chicago / "monitoring.db", times="monitoring.db")


def test_zone_name_timezone_passes_the_corpus_checks(tmp_path):
    run = CORPUS / "htex-2026" / "runinfo"
    out = tmp_path / "z.duckdb"
    summary = replay(run, out, timezone="UTC")
    zoned = tmp_path / "zn.duckdb"
    replay(run, zoned, timezone="Etc/UTC")  # a zone name: every local time resolved by DuckDB's zone data
    check_replay_against_monitoring(zoned, run / "monitoring.db", times="monitoring.db")
    q = "SELECT span_id, start_time_unix_nano, end_time_unix_nano FROM spans ORDER BY span_id"
    with duckdb.connect(str(out), read_only=True) as a, duckdb.connect(str(zoned), read_only=True) as b:
        assert a.execute(q).fetchall() == b.execute(q).fetchall()
    assert summary.runs[0]["utc_offset_seconds"] == 0
