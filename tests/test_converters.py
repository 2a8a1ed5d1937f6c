"""Converter definitions: every sample line of every rule produces what it promises, and a user adds a
source with one definition file and no change to the core."""

from __future__ import annotations

import dataclasses
import re
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


def _with_samples(definition, rule_name, samples):
    """The definition with only these samples, for one rule (definitions are frozen dataclasses)."""
    rules = tuple(dataclasses.replace(r, samples=tuple(samples) if r.name == rule_name else ())
                  for r in definition.rules)
    return dataclasses.replace(definition, rules=rules, samples=())


def _check_rule(definition, rule_name, samples):
    return [r for r in check_definition(_with_samples(definition, rule_name, samples)) if r.rule == rule_name]


def _rule(definition, name):
    return next(r for r in definition.rules if r.name == name)


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


def test_every_builtin_rule_sample_is_whole_raw_lines():
    for d in load_all():
        for rule in d.rules:
            for s in rule.samples:
                where = f"{d.name}/{rule.name}"
                assert "message" not in s, f"{where}: a sample gives the whole raw line (`line`/`lines`), not a message"
                assert ("line" in s) != ("lines" in s), f"{where}: exactly one of `line` or `lines`"
                assert s.get("file") and s.get("origin"), f"{where}: a sample says which file it came from and where"


def test_every_carry_is_exercised_by_a_sequence():
    """Each rule with a `carry` has a multi-line sample that emits (expect >= 1), and that sample fails once the
    lines its rule does not match (the lenders) are removed: the carried value really comes from them."""
    checked = 0
    for d in load_all():
        for rule in d.rules:
            if not rule.carry:
                continue
            seqs = [s for s in rule.samples if len(s.get("lines", [])) > 1 and int(s.get("expect", 1)) >= 1]
            assert seqs, f"{d.name}/{rule.name}: a carry needs a `lines` sample with the lending line(s), expect >= 1"
            own = re.compile(rule.match.removeprefix("^"))
            for s in seqs:
                assert all(r.ok for r in _check_rule(d, rule.name, [s])), f"{d.name}/{rule.name}: {s['origin']}"
                borrowers = [x for x in s["lines"] if own.search(x)]
                assert borrowers and len(borrowers) < len(s["lines"]), f"{d.name}/{rule.name}: no lender in {s['origin']}"
                alone = _check_rule(d, rule.name, [dict(s, lines=borrowers)])
                assert alone and not any(r.ok for r in alone), (
                    f"{d.name}/{rule.name}: {s['origin']} passes without its lending lines: the carry is not tested")
                checked += 1
    assert checked >= 20


def test_a_carry_without_its_lending_line_fails():
    d = load(builtin_dir() / "parsl_dfk.toml")
    sample = next(s for s in _rule(d, "task_state").samples if len(s.get("lines", [])) == 2)
    assert "launched on executor" in sample["lines"][0] and all(r.ok for r in _check_rule(d, "task_state", [sample]))
    [res] = _check_rule(d, "task_state", [dict(sample, lines=sample["lines"][1:])])
    # without the launch line the state change names no try: only the task's observation remains
    assert not res.ok and "expected 2 observations of rule task_state, got 1" in res.detail


def test_a_line_that_does_not_match_the_record_pattern_fails():
    d = load(builtin_dir() / "parsl_dfk.toml")
    sample = _rule(d, "parsl_version").samples[0]
    assert sample["file"] == "000/parsl.log" and all(r.ok for r in _check_rule(d, "parsl_version", [sample]))
    # the message alone, as the legacy samples gave it, is not a line of parsl.log
    message = sample["line"].split(": ", 1)[1]
    [res] = _check_rule(d, "parsl_version", [dict(sample, line=message)])
    assert not res.ok and res.detail == "line 1 does not match the record pattern of format text"
    seq = next(s for s in _rule(d, "task_state").samples if len(s.get("lines", [])) == 2)
    [res] = _check_rule(d, "task_state", [dict(seq, lines=[seq["lines"][0], seq["lines"][1][38:]])])
    assert not res.ok and res.detail == "line 2 does not match the record pattern of format text"


@pytest.mark.parametrize(("change", "detail"), [
    ({"file": "000/interchange.log"}, "does not match the `files` pattern"),
    ({"file": "000/parsl.jsonlog"}, "line 1 is not a JSON object of format json"),
    ({"format": "xml"}, "no lines or jsonl format named 'xml'"),
    ({"message": "Parsl version: 2026.10.26"}, "the `message` form of samples is gone"),
    ({"level": "INFO"}, "unknown sample keys ['level']"),
    ({"lines": ["a", "b"]}, "exactly one of `line`"),
    ({"release": ""}, "which release wrote it"),
    ({"expect": 2}, "expected 2 observations of rule parsl_version, got 1"),
])
def test_a_malformed_or_wrong_sample_says_why(change, detail):
    d = load(builtin_dir() / "parsl_dfk.toml")
    sample = dict(_rule(d, "parsl_version").samples[0], **change)
    [res] = _check_rule(d, "parsl_version", [sample])
    assert not res.ok and detail in res.detail


def test_the_sample_file_picks_the_format_and_the_path_groups():
    """The format is the first whose `files` matches the sample's file, and its named groups are fields."""
    d = load(builtin_dir() / "htex_worker.toml")
    sample = _rule(d, "task_received").samples[0]
    assert sample["file"] == "000/worker_pool/block-0/fd83ca48a1c7/worker_0.log"
    assert all(r.ok for r in _check_rule(d, "task_received", [sample]))
    # another manager and rank in the path: the ids built from the path groups change with it
    moved = dict(sample, file="000/worker_pool/block-0/aaaaaaaaaaaa/worker_1.log")
    [res] = _check_rule(d, "task_received", [moved])
    assert not res.ok and res.detail == "attribute parsl.htex.worker.rank: expected 0, got 1"
    [res] = _check_rule(d, "task_received", [dict(moved, attributes={"dnpc.context_id": "worker_pool/2@fd83ca48a1c7/0"})])
    assert not res.ok and "'worker_pool/2@aaaaaaaaaaaa/1'" in res.detail
    # without a file the path groups are NULL: no worker execution can be keyed
    [res] = _check_rule(d, "task_received", [{k: v for k, v in sample.items() if k != "file"}])
    assert not res.ok and "got 0" in res.detail


def test_a_wrong_sample_is_reported(tmp_path):
    text = (builtin_dir() / "parsl_dfk.toml").read_text()
    right = 'attributes = { "parsl.version" = "2026.10.26" }'
    assert right in text
    broken = text.replace(right, 'attributes = { "parsl.version" = "1999.1.1" }', 1)
    (tmp_path / "parsl_dfk.toml").write_text(broken)
    bad = [r for r in check_definition(load(tmp_path / "parsl_dfk.toml")) if not r.ok]
    assert [r.rule for r in bad] == ["parsl_version"] and "1999.1.1" in bad[0].detail
    assert "Parsl version: 2026.10.26" in bad[0].message  # the sample's line, for the report
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
    samples = [{ release = "2026.10.26", file = "000/worker_pool/monitoring_zmq_router.log", line = '1795291145.685706 2026-11-21 19:59:05 Monitoring-ZMQ-Router-Process-1747 MainThread-140678390922112 parsl.monitoring.radios.zmq_router:89 start INFO: Starting ZMQ listener', expect = 1, origin = "tests/data/corpus/htex-2026/runinfo/000/worker_pool/monitoring_zmq_router.log:1" }]

    [[rules]]
    name = "router_end"
    match = '^(?:ZMQ listener finished|Monitoring router draining)$'
    emit = [{ context = "router:", event = "finished", parent = "workflow:" }]
    samples = [{ release = "2023.7.3", file = "000/monitoring_router.log", line = '2026-11-21 19:59:40.513 monitoring_router:478 [INFO]  Monitoring router draining', expect = 1, origin = "tests/data/corpus/htex-2023/runinfo/000/monitoring_router.log:3" }]
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
