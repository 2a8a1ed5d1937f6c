"""Bring your own source (issue 14): `--converter FILE`, dnpc2otel.toml beside or inside a run directory,
$DNPC2OTEL_CONVERTERS naming a file, and an app's own STAGE lines in its task stdout file as spans under
the try — on a fresh real Parsl run of tests/workflows/stages.py, made by docs/tutorial.md's first step."""

from __future__ import annotations

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
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("""
            SELECT s.name, s.start_time_unix_nano, s.end_time_unix_nano, s.attributes, p.context_type, p.attributes
            FROM spans s LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
            WHERE s.context_type = 'stage'""").fetchall()
    return [dict(name=r[0], start=r[1], end=r[2], attrs=json.loads(r[3]), parent_type=r[4],
                 parent=json.loads(r[5]) if r[5] else {}) for r in rows]


def test_stage_spans_are_children_of_their_try_at_the_lines_times(stages_run, tmp_path):
    db = tmp_path / "stages.duckdb"
    summary = replay(stages_run, db, converter_files=[EXAMPLE])
    expected = markers(stages_run)
    spans = stage_spans(db)
    assert len(expected) == 12 and summary.contexts.get("stage") == 12
    got = {(s["attrs"]["parsl.task.id"], s["attrs"]["parsl.try.id"], s["name"]): s for s in spans}
    assert set(got) == set(expected)
    for key, lines in expected.items():
        s = got[key]
        task, tr, _ = key
        # the parent is the DFK's try (the one monitoring.db and parsl.log describe), not one made up
        assert s["parent_type"] == "try" and s["parent"]["dnpc.context_id"] == f"{task}.{tr}"
        assert "parsl_dfk" in s["parent"]["dnpc.sources"] and not s["parent"].get("dnpc.orphan")
        assert abs(s["start"] - lines["start"]) < 1_000_000
        if "end" in lines:
            assert abs(s["end"] - lines["end"]) < 1_000_000 and not s["attrs"].get("dnpc.incomplete")
        else:  # the failed try started 'load' and never ended it
            assert key == (3, 0, "load") and s["attrs"]["dnpc.incomplete"]
    with duckdb.connect(str(db), read_only=True) as con:
        kinds = con.execute("SELECT kind, context_id FROM disagreements WHERE context_type = 'stage'").fetchall()
    assert kinds == [("incomplete", "3.0/load")]
    # the apps' other output lines are records no rule uses, not lines not understood
    stdout = [x for x in summary.sources if x.source.startswith("000/task_logs/")]
    assert stdout and sum(x.not_understood for x in stdout) == 0
    assert not [w for w in summary.warnings if "task_logs" in w]


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
    assert len(rows) == 12 and all(r[1] == "try" for r in rows)
    assert ["load", "try", "3", "0", "0.0"] in rows and ["load", "try", "3", "1"] == rows[-2][:4]


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
    assert all(by_id[s["parent_span_id"]]["attributes"]["dnpc.context_type"] == "try" for s in stages)
    assert {s["service_name"] for s in stages} == {"parsl.app"}
