"""Bring your own source (issue 14): `--converter FILE`, dnpc2otel.toml beside or inside a run directory,
$DNPC2OTEL_CONVERTERS naming a file, and an app's own STAGE lines in its task stdout file as spans under
the worker's execution of the try (found by `parent_path`) — on the bundled real run tests/data/stages-2026
and on a fresh real Parsl run of tests/workflows/stages.py, made by docs/tutorial.md's first step."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, REPO, copy_run

from dnpc2otel.errors import UserError
from dnpc2otel.pipeline import replay
from dnpc2otel.sources.definitions import load_all

EXAMPLE = REPO / "converters" / "examples" / "app_stages.toml"
STAGES_RUN = REPO / "tests" / "data" / "stages-2026" / "runinfo"
TUTORIAL = REPO / "docs" / "tutorial.md"
MARKER = re.compile(r"^(\d+)\.(\d{9}) STAGE (\S+) (start|end)$")


def step(label: str) -> str:
    m = re.search(rf"<!-- step: {re.escape(label)} -->\n```\w+\n(.*?)```", TUTORIAL.read_text(), re.S)
    assert m, f"no step {label!r} in {TUTORIAL}"
    return m.group(1)


def shell(cwd: Path, script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a tutorial step with bash, as a user would: `dnpc2otel` is this interpreter's, on this tree."""
    bin_dir = cwd / ".bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "dnpc2otel").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dnpc2otel "$@"\n')
    (bin_dir / "dnpc2otel").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable) if not (bin_dir / "python").exists() else None
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=os.pathsep.join(
        [str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    env.pop("DNPC2OTEL_CONVERTERS", None)
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def tutorial_dir(tmp_path_factory) -> Path:
    """A directory laid out as a clone (tests/, converters/, scripts/) where the tutorial's first step,
    a real Parsl run of tests/workflows/stages.py, was made."""
    pytest.importorskip("parsl")
    d = tmp_path_factory.mktemp("tutorial")
    for name in ("tests", "converters", "scripts"):
        (d / name).symlink_to(REPO / name)
    proc = shell(d, step("run"))
    assert "STAGE load start" in proc.stdout
    return d


@pytest.fixture()
def stages_run(tutorial_dir, tmp_path) -> Path:
    """A copy of the tutorial's run, without any dnpc2otel.toml a tutorial step wrote beside it."""
    return copy_run(tutorial_dir / "runinfo", tmp_path / "copy")


def markers(run_dir: Path) -> dict[tuple[int, int, str], dict[str, int]]:
    """(task, try, stage) → {'start': ns, 'end': ns} read from the stdout files themselves: the retried
    app's first try is its first line (it fails right after), its second try the rest."""
    out: dict[tuple[int, int, str], dict[str, int]] = {}
    for path in sorted(run_dir.glob("000/task_logs/*/task_*.stdout")):
        task = int(re.match(r"task_(\d+)_", path.name).group(1))
        lines = [m for m in map(MARKER.match, path.read_text().splitlines()) if m]
        assert lines, path
        for i, m in enumerate(lines):
            tr = 1 if "_retried" in path.name and i > 0 else 0
            ns = int(m.group(1)) * 10**9 + int(m.group(2))
            out.setdefault((task, tr, m.group(3)), {}).setdefault(m.group(4), ns)
    return out


def stage_spans(db: Path) -> list[dict]:
    """Each stage span, with its parent and its parent's own parent (the execution's executor task, its try)."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("""
            SELECT s.name, s.start_time_unix_nano, s.end_time_unix_nano, s.attributes, p.context_type, p.attributes,
                   p.start_time_unix_nano, p.end_time_unix_nano, g.attributes, gg.attributes
            FROM spans s LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
            LEFT JOIN spans g ON g.trace_id = p.trace_id AND g.span_id = p.parent_span_id
            LEFT JOIN spans gg ON gg.trace_id = g.trace_id AND gg.span_id = g.parent_span_id
            WHERE s.context_type = 'stage'""").fetchall()
    return [dict(name=r[0], start=r[1], end=r[2], attrs=json.loads(r[3]), parent_type=r[4],
                 parent=json.loads(r[5]) if r[5] else {}, parent_start=r[6], parent_end=r[7],
                 up=[json.loads(x) if x else {} for x in r[8:]]) for r in rows]


@pytest.mark.parametrize("fresh", [False, True], ids=["bundled", "fresh"])
def test_stage_spans_are_children_of_the_worker_execution_at_the_lines_times(fresh, request, tmp_path):
    run = request.getfixturevalue("stages_run") if fresh else copy_run(STAGES_RUN, tmp_path / "bundled")
    db = tmp_path / "stages.duckdb"
    summary = replay(run, db, converter_files=[EXAMPLE])
    expected = markers(run)
    spans = stage_spans(db)
    assert len(expected) == 12 and summary.contexts.get("stage") == 12
    got = {(s["attrs"]["parsl.task.id"], s["attrs"]["parsl.try.id"], s["name"]): s for s in spans}
    assert set(got) == set(expected)
    executions: dict[tuple[int, int], str] = {}
    for key, lines in expected.items():
        s = got[key]
        task, tr, _ = key
        # the parent is the HTEX worker's execution of that try: worker_execution › executor_task › the DFK's
        # try (the one monitoring.db and parsl.log describe), found through the chain, not made up
        assert s["parent_type"] == "worker_execution" and not s["parent"].get("dnpc.orphan")
        assert "htex_worker" in s["parent"]["dnpc.sources"]
        executor_task, the_try = s["up"]
        assert executor_task["dnpc.context_type"] == "executor_task"
        assert the_try["dnpc.context_type"] == "try" and the_try["dnpc.context_id"] == f"{task}.{tr}"
        assert "parsl_dfk" in the_try["dnpc.sources"]
        executions.setdefault((task, tr), s["parent"]["dnpc.context_id"])
        assert executions[(task, tr)] == s["parent"]["dnpc.context_id"]  # one execution per try
        assert s["parent_start"] <= s["start"] and s["end"] <= s["parent_end"]
        assert abs(s["start"] - lines["start"]) < 1_000_000
        if "end" in lines:
            assert abs(s["end"] - lines["end"]) < 1_000_000 and not s["attrs"].get("dnpc.incomplete")
        else:  # the failed try started 'load' and never ended it
            assert key == (3, 0, "load") and s["attrs"]["dnpc.incomplete"]
    assert len(set(executions.values())) == len(executions) == 5  # each try ran once, on its own execution
    with duckdb.connect(str(db), read_only=True) as con:
        kinds = con.execute("SELECT kind, context_id FROM disagreements WHERE context_type = 'stage'").fetchall()
    assert kinds == [("incomplete", "3.0/load")]
    # the apps' other output lines are records no rule uses, not lines not understood
    stdout = [x for x in summary.sources if x.source.startswith("000/task_logs/")]
    assert stdout and sum(x.not_understood for x in stdout) == 0
    assert not [w for w in summary.warnings if "task_logs" in w]


@pytest.mark.parametrize("removed, parent", [
    (["pool/block-0/*/worker_*.log"], "executor_task"),  # no worker logs: the path stops at the executor task
    (["pool/block-0/*/worker_*.log", "pool/interchange.log", "parsl.log"], "try"),  # no executor task at all
])
def test_stages_hang_as_deep_as_the_path_is_known(tmp_path, removed, parent):
    run = copy_run(STAGES_RUN, tmp_path)
    for pattern in removed:
        for path in (run / "000").glob(pattern):
            path.unlink()
    db = tmp_path / "partial.duckdb"
    assert replay(run, db, converter_files=[EXAMPLE]).contexts.get("stage") == 12
    spans = stage_spans(db)
    assert {s["parent_type"] for s in spans} == {parent} and not any(s["parent"].get("dnpc.orphan") for s in spans)
    tries = {(s["attrs"]["parsl.task.id"], s["attrs"]["parsl.try.id"]) for s in spans}
    # whatever the depth, the try it hangs under (the parent, or the executor task's parent) is the line's own
    above = [s["parent"] if parent == "try" else s["up"][0] for s in spans]
    assert {tuple(map(int, t["dnpc.context_id"].split("."))) for t in above} == tries


def test_without_the_converter_there_are_no_stages(stages_run, tmp_path):
    summary = replay(stages_run, tmp_path / "plain.duckdb")
    assert "stage" not in summary.contexts and summary.run_config is None
    assert summary.contexts["try"] == 5


@pytest.mark.parametrize("where", ["beside", "inside"])
def test_dnpc2otel_toml_names_the_converters(stages_run, tmp_path, where):
    defs = stages_run.parent / "defs"
    defs.mkdir()
    shutil.copy(EXAMPLE, defs / "my_stages.toml")
    config = (stages_run.parent if where == "beside" else stages_run) / "dnpc2otel.toml"
    rel = "defs/my_stages.toml" if where == "beside" else "../defs/my_stages.toml"
    config.write_text(f'converters = ["{rel}"]\n')
    for given in (stages_run, stages_run / "000"):  # the run_dir, or one run in it
        summary = replay(given, tmp_path / "found.duckdb")
        assert summary.contexts.get("stage") == 12 and summary.run_config == config.resolve()
    # a directory works as well as a file
    config.write_text(f'converters = ["{rel.rsplit("/", 1)[0]}"]\n')
    assert replay(stages_run, tmp_path / "dir.duckdb").contexts.get("stage") == 12


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    environ.pop("DNPC2OTEL_CONVERTERS", None) if not env else None
    return subprocess.run([sys.executable, "-m", "dnpc2otel", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnpc2otel: error: ") and "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_dnpc2otel_toml_and_missing_converter_are_one_line(tmp_path):
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    config = tmp_path / "dnpc2otel.toml"
    config.write_text('convertors = ["x.toml"]\n')
    one_error_line(cli("replay", str(run), "--duckdb", str(tmp_path / "x.duckdb"), "--no-export"),
                   str(config), "unknown key 'convertors'")
    config.write_text("converters = [1]\n")
    one_error_line(cli("replay", str(run), "--no-export"), "list of paths")
    config.write_text('converters = ["missing.toml"]\n')
    one_error_line(cli("replay", str(run), "--no-export"), str(tmp_path / "missing.toml"), "does not exist")
    config.write_text("converters = [\n")
    one_error_line(cli("replay", str(run), "--no-export"), str(config), "cannot read")
    config.unlink()
    one_error_line(cli("replay", str(run), "--no-export", "--converter", str(tmp_path / "nope.toml")),
                   "nope.toml", "does not exist")
    assert not (tmp_path / "x.duckdb").exists()


def test_converters_check_takes_a_file(tmp_path):
    ok = cli("converters", "--check", "--converter", str(EXAMPLE))
    assert ok.returncode == 0 and re.search(r"\b0 failed\b", ok.stdout), ok.stdout + ok.stderr
    listed = cli("converters", "--converter", str(EXAMPLE))
    assert "app_stages" in listed.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text(EXAMPLE.read_text().replace('"app.stage.name" = "load"', '"app.stage.name" = "lode"'))
    bad = cli("converters", "--check", "--converter", str(broken))
    assert bad.returncode == 1 and "FAIL app_stages/stage_mark" in bad.stdout, bad.stdout


def test_environment_variable_may_name_a_file(monkeypatch):
    monkeypatch.setenv("DNPC2OTEL_CONVERTERS", str(EXAMPLE))
    assert "app_stages" in {d.name for d in load_all()}
    monkeypatch.setenv("DNPC2OTEL_CONVERTERS", str(EXAMPLE.with_name("absent.toml")))
    with pytest.raises(UserError, match="absent.toml does not exist"):
        load_all()


def test_tutorial_steps_run_as_written(tutorial_dir):
    # its excerpt of the definition is the example's text (the values that matter, key by key)
    excerpt, full = tomllib.loads(step("definition")), tomllib.loads(EXAMPLE.read_text())
    assert excerpt["name"] == full["name"] and excerpt["service"] == full["service"]
    assert excerpt["contexts"]["stage"].items() <= full["contexts"]["stage"].items()
    assert excerpt["formats"][0].items() <= full["formats"][0].items()
    rule = excerpt["rules"][0]
    assert rule["match"] == full["rules"][0]["match"]
    assert rule["emit"][0].items() <= full["rules"][0]["emit"][0].items()
    check = shell(tutorial_dir, step("check"))
    assert re.search(r"\b0 failed\b", check.stdout) and "FAIL" not in check.stdout
    assert "stage 12" in shell(tutorial_dir, step("replay")).stdout
    configured = shell(tutorial_dir, step("config"))
    assert "stage 12" in configured.stdout and "dnpc2otel.toml" in configured.stdout
    table = shell(tutorial_dir, step("query")).stdout
    rows = [ln.split() for ln in table.splitlines()[2:] if ln.strip()]
    assert len(rows) == 12 and all(r[1] == "worker_execution" for r in rows)
    assert ["load", "worker_execution", "3", "0", "0.0"] in rows
    assert ["load", "worker_execution", "3", "1"] == rows[-2][:4]
    # the accounting section: the block's wait, from the dump beside the bundled run (the table as printed)
    printed = [ln.split() for ln in shell(tutorial_dir, step("accounting")).stdout.splitlines() if ln.strip()]
    documented = re.search(r"<!-- step: accounting -->.*?```text\n(.*?)```", TUTORIAL.read_text(), re.S)
    assert documented and printed[-5:] == [ln.split() for ln in documented.group(1).splitlines() if ln.strip()]


def test_tutorial_stages_in_jaeger(jaeger, tutorial_dir):
    db = tutorial_dir / "jaeger.duckdb"
    replay(tutorial_dir / "runinfo", db, converter_files=[EXAMPLE])
    command = step("jaeger").strip().replace("stages.duckdb", str(db))
    assert "http://127.0.0.1:4318" in command
    jaeger.restart()
    shell(tutorial_dir, command.replace("http://127.0.0.1:4318", jaeger.otlp_http_endpoint))
    with duckdb.connect(str(db), read_only=True) as con:
        tid, n = con.execute("SELECT any_value(trace_id), count(*) FROM spans").fetchone()
    spans = jaeger.wait_for_spans(tid, n)
    by_id = {s["span_id"]: s for s in spans}
    stages = [s for s in spans if s["attributes"].get("dnpc.context_type") == "stage"]
    assert len(stages) == 12
    assert all(by_id[s["parent_span_id"]]["attributes"]["dnpc.context_type"] == "worker_execution" for s in stages)
    assert {s["service_name"] for s in stages} == {"parsl.app"}


NETLOGGER = REPO / "converters" / "examples" / "netlogger.toml"


def test_netlogger_actions_are_spans_at_the_lines_times(tmp_path):
    """A NetLogger Best Practices log (ts=… event=a.b.start|end guid=…) written beside a task's stdout file of
    the bundled run, its times those of the app's own STAGE lines: one span per action, to the microsecond."""
    run = copy_run(STAGES_RUN, tmp_path)
    stdout = next(run.glob("000/task_logs/*/task_0000_*.stdout"))
    marks = [m for m in map(MARKER.match, stdout.read_text().splitlines()) if m]
    lines, expected = [], {}  # action → {'start': ns, 'end': ns}, to the microsecond
    for m in marks:
        us = (int(m.group(1)) * 10**9 + int(m.group(2))) // 1000
        expected.setdefault(f"app.stage.{m.group(3)}", {})[m.group(4)] = us * 1000
        ts = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        status = " status=0" if m.group(4) == "end" else ""
        lines.append(f"ts={ts} event=app.stage.{m.group(3)}.{m.group(4)} guid=task-0 level=INFO{status}")
    lines.append("ts=2026-12-02T00:00:00.000000Z event=app.note level=DEBUG msg=not_an_action")
    (stdout.parent / "task_0000.netlogger.log").write_text("\n".join(lines) + "\n")
    db = tmp_path / "nl.duckdb"
    summary = replay(run, db, converter_files=[NETLOGGER])
    assert summary.contexts.get("netlogger_action") == 3
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("""
            SELECT s.name, s.start_time_unix_nano, s.end_time_unix_nano, p.context_type, s.attributes
            FROM spans s JOIN spans p ON p.span_id = s.parent_span_id
            WHERE s.context_type = 'netlogger_action'""").fetchall()
    got = {r[0]: r for r in rows}
    assert set(got) == set(expected)
    for name, (_, start, end, parent, attrs) in got.items():
        assert (start, end) == (expected[name]["start"], expected[name]["end"]) and parent == "workflow"
        assert json.loads(attrs)["netlogger.guid"] == "task-0" and json.loads(attrs)["netlogger.status"] == 0


@pytest.mark.parametrize("change, message", [
    ('parent_path = ["executor_task", "worker_execution"]', None),
    ('parent_path = ["worker_execution"]', "key 'parent_path': worker_execution is not a child type of try"),
    ('parent_path = ["executor_task", "workr_execution"]', "unknown context type 'workr_execution'"),
    ('parent_path = ["executor_task", "worker_execution"], parent_by = "parsl.try.id"', "exclude each other"),
    ('parent_path = ["executor_task", "worker_execution"], time = "stamp"', "key 'time': unknown field 'stamp'"),
])
def test_parent_path_and_time_are_checked_when_loaded(tmp_path, change, message):
    text = EXAMPLE.read_text().replace('parent_path = ["executor_task", "worker_execution"]', change)
    (tmp_path / "defs.toml").write_text(text)
    if message is None:
        assert "app_stages" in {d.name for d in load_all(extra_files=[tmp_path / "defs.toml"])}
        return
    with pytest.raises(UserError, match=re.escape(message)):
        load_all(extra_files=[tmp_path / "defs.toml"])
    # the stage type must list the types the parent may turn out to be
    (tmp_path / "defs.toml").write_text(EXAMPLE.read_text().replace(
        'parents = ["worker_execution", "executor_task", "try"]', 'parents = ["try"]'))
    with pytest.raises(UserError, match="lack worker_execution|lack executor_task"):
        load_all(extra_files=[tmp_path / "defs.toml"])
