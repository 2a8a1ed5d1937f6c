"""Converter definitions: every sample line of every rule produces what it promises, and a user adds a
source with one definition file and no change to the core."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest
from conftest import CORPUS, copy_run

from dnpc2otel import replay
from dnpc2otel.errors import DefinitionError
from dnpc2otel.sources.definitions import builtin_dir, load, load_all
from dnpc2otel.sources.samples import check_definition

BUILTIN = sorted(builtin_dir().glob("*.toml"))


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_definition_samples(path):
    results = check_definition(load(path))
    assert results, "a definition without rules or samples checks nothing"
    failed = [f"{r.rule}: {r.detail} [{r.message}]" for r in results if not r.ok]
    assert not failed


def test_every_rule_has_samples_with_a_release():
    for d in load_all():
        for rule in d.rules:
            assert rule.samples, f"{d.name}/{rule.name} has no samples"
            for s in rule.samples:
                assert s.get("release"), f"{d.name}/{rule.name}: a sample must say which release it came from"


def test_a_wrong_sample_is_reported(tmp_path):
    broken = (builtin_dir() / "parsl_dfk.toml").read_text().replace(
        'message = "Parsl version: 2026.10.26", expect = 1, attributes = { "parsl.version" = "2026.10.26" }',
        'message = "Parsl version: 2026.10.26", expect = 1, attributes = { "parsl.version" = "1999.1.1" }',
    )
    (tmp_path / "parsl_dfk.toml").write_text(broken)
    bad = [r for r in check_definition(load(tmp_path / "parsl_dfk.toml")) if not r.ok]
    assert [r.rule for r in bad] == ["parsl_version"] and "1999.1.1" in bad[0].detail
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "converters", "--check", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "FAIL parsl_dfk/parsl_version" in proc.stdout


def test_malformed_definition_is_one_clear_error(tmp_path):
    (tmp_path / "bad.toml").write_text('name = "bad"\n[[formats]]\nname = "x"\nkind = "lines"\nfiles = "x"\n')
    with pytest.raises(DefinitionError, match="record"):
        load_all([tmp_path])
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "converters", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "bad.toml" in proc.stderr


ROUTER = textwrap.dedent(r"""
    # A user's converter: the monitoring router's log, in its two layouts (Parsl 2023: runinfo/NNN/;
    # Parsl 2026: inside the executor's folder). One file, no change to dnpc2otel.
    name = "monitoring_router"
    service = "parsl.monitoring.router"

    [contexts.router]
    default_name = "monitoring router"
    service = "parsl.monitoring.router"
    parents = ["workflow"]

    [[formats]]
    name = "old"
    kind = "lines"
    files = '(?P<rundir>[^/]+)/monitoring_router\.log'
    record = '^(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<logger>\S+):(?P<lineno>\d+) \[(?P<level>[A-Z]+)\]\s+(?P<message>.*)$'
    time = "asctime"
    time_format = "%Y-%m-%d %H:%M:%S.%g"

    [[formats]]
    name = "new"
    kind = "lines"
    files = '(?P<rundir>[^/]+)/(?:[^/]+/)?monitoring_zmq_router\.log'
    record = '^(?P<created>\d+\.\d+) \S+ \S+ (?P<process>\S+) (?P<thread>\S+) (?P<logger>[^\s:]+):(?P<lineno>\d+) (?P<func>\S+) (?P<level>[A-Z]+): (?P<message>.*)$'
    time = "created"

    [[rules]]
    name = "router_start"
    match = '^(?:Starting ZMQ listener|Starting MonitoringRouter in router_starter)$'
    emit = [{ context = "router:", event = "started", parent = "workflow:" }]
    samples = [{ release = "2026.10.26", message = "Starting ZMQ listener", expect = 1 }]

    [[rules]]
    name = "router_end"
    match = '^(?:ZMQ listener finished|Monitoring router draining)$'
    emit = [{ context = "router:", event = "finished", parent = "workflow:" }]
    samples = [{ release = "2023.7.3", message = "Monitoring router draining", expect = 1 }]
""")


@pytest.mark.parametrize("name", ["htex-2023", "htex-2026"])
def test_user_definition_adds_a_source(tmp_path, name):
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "monitoring_router.toml").write_text(ROUTER)
    assert all(r.ok for r in check_definition(load(defs / "monitoring_router.toml")))
    run_dir = copy_run(CORPUS / name / "runinfo", tmp_path)
    out = tmp_path / "u.duckdb"
    summary = replay(run_dir, out, converter_dirs=[defs])
    assert summary.contexts.get("router") == 1
    with duckdb.connect(str(out), read_only=True) as c:
        row = c.execute(
            """SELECT s.name, s.service_name, p.context_type, s.end_time_unix_nano > s.start_time_unix_nano
               FROM spans s JOIN spans p ON p.span_id = s.parent_span_id WHERE s.context_type = 'router'"""
        ).fetchone()
        events = c.execute(
            """SELECT e.name FROM span_events e JOIN spans s USING (span_id) WHERE s.context_type = 'router'
               ORDER BY e.time_unix_nano"""
        ).fetchall()
    assert row == ("monitoring router", "parsl.monitoring.router", "workflow", True)
    assert events == [("started",), ("finished",)]
    # without the user's definition the same files are not read
    assert replay(run_dir, tmp_path / "plain.duckdb").contexts.get("router") is None
