"""A run directory is data, never code, and is never changed.

- Nothing from a run directory is unpickled, evaluated or imported: Parsl leaves pickles in it
  (`log_config.pkl`, Work Queue's `function_data/`), and a planted malicious one runs nothing.
- Inputs are only read (SQLite through a read-only URI): every file hashes the same after a replay, and no
  file appears (no -journal, -wal or -shm beside monitoring.db).
- Values read from logs and databases never become SQL text: every statement DuckDB runs during a replay is
  recorded, and values planted in the inputs are in the output but in no statement.
"""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, REPO, copy_run, corpus_runs

from dnpc2otel import replay
from dnpc2otel.sources.sqlite import open_sqlite

PACKAGE = REPO / "dnpc2otel"


class _Planted:
    """Unpickling this creates the marker file (what an attacker's pickle would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _plant_pickles(run_dir: Path, marker: Path) -> list[Path]:
    """Replace every pickle Parsl left in the run_dir with a malicious one, and add one more."""
    payload = pickle.dumps(_Planted(marker))
    targets = [p for p in run_dir.rglob("*") if p.is_file() and (p.suffix == ".pkl" or "function_data" in p.parts)]
    targets.append(run_dir / "000" / "log_config.pkl")
    for p in targets:
        p.write_bytes(payload)
    return targets


@pytest.mark.parametrize("name", ["htex-json-2026", "wq-2026"])
def test_a_planted_malicious_pickle_runs_nothing(name, tmp_path):
    run = copy_run(CORPUS / name / "runinfo", tmp_path)
    marker = tmp_path / "pwned"
    planted = _plant_pickles(run, marker)
    assert len(planted) > 1
    # the plant is live: unpickling one creates the marker
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
                    str(planted[0])], check=True, timeout=60)
    assert marker.exists()
    marker.unlink()
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(run), "--duckdb",
                           str(tmp_path / "p.duckdb"), "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_modules_planted_in_the_run_directory_are_not_imported(tmp_path):
    """Replaying from inside the run directory (cwd) with the installed command: a planted duckdb.py or
    click.py beside the logs is never imported."""
    exe = shutil.which("dnpc2otel")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("the dnpc2otel command is not installed")
        pytest.skip("the dnpc2otel command is not installed")
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    marker = tmp_path / "imported"
    for where in (run, run / "000"):
        for module in ("duckdb", "click", "rich", "pyarrow"):
            (where / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write({module!r})\n")
    proc = subprocess.run([exe, "replay", ".", "--duckdb", str(tmp_path / "i.duckdb"), "-q"], cwd=run,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_the_package_has_no_way_to_run_input_as_code():
    """No pickle, marshal, shelve, eval, exec or dynamic import anywhere in dnpc2otel/."""
    forbidden_modules = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "runpy", "joblib"}
    forbidden_names = {"eval", "exec", "compile", "__import__"}  # builtins (re.compile is a method: fine)
    forbidden_methods = {"import_module", "load_module", "exec_module", "spec_from_file_location"}
    # the one exception: `replay --parsl-config FILE.py` runs the user's own Parsl configuration, by design
    # (issue 12), and refuses one inside the run directory (test below)
    allowed = {f"{PACKAGE / 'campaign' / 'fanout.py'}: import runpy"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [f"{path}: import {a.name}" for a in node.names if a.name.split(".")[0] in forbidden_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in forbidden_modules:
                found.append(f"{path}: from {node.module} import …")
            elif isinstance(node, ast.Call):
                if getattr(node.func, "id", None) in forbidden_names or \
                        getattr(node.func, "attr", None) in forbidden_methods:
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node.func)}(…)")
    assert [f for f in found if f not in allowed] == []


def test_a_parsl_config_inside_the_run_directory_is_refused_unrun(tmp_path):
    """--parsl-config executes a file: never one planted in the run directory being read."""
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    planted = run / "000" / "config.py"
    marker = tmp_path / "ran"
    planted.write_text(f"open({str(marker)!r}, 'w').write('x')\nconfig = None\n")
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel", "replay", str(run), "--duckdb",
                           str(tmp_path / "o.duckdb"), "--parsl-config", str(planted), "-q", "--no-export"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "inside the run directory" in proc.stderr
    assert not marker.exists() and not (tmp_path / "o.duckdb").exists()


# ---------------------------------------------------------------------- inputs are only read
def _state(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind, mode, size, mtime and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[p.relative_to(root).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.mark.parametrize("run", corpus_runs(), ids=[p.parent.name for p in corpus_runs()])
def test_nothing_in_the_run_directory_changes(run, tmp_path):
    copy = copy_run(run, tmp_path)
    before = _state(copy)
    replay(copy, tmp_path / "h.duckdb")
    assert _state(copy) == before


def test_sqlite_is_opened_read_only(tmp_path):
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    db, note = open_sqlite(run / "monitoring.db")
    try:
        assert note is None and db.execute("SELECT count(*) FROM task").fetchone()[0] > 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.execute("CREATE TABLE planted (x)")
    finally:
        db.close()
    # every connection the package makes to a SQLite file goes through that read-only URI (the converter
    # checks build their sample databases in memory)
    calls = [(p.name, ast.unparse(n.args[0])) for p in PACKAGE.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "connect"
             and getattr(n.func.value, "id", None) == "sqlite3"]
    assert calls and all(arg == "':memory:'" if name == "samples.py" else name == "sqlite.py" for name, arg in calls)
    assert "mode=ro" in (PACKAGE / "sources" / "sqlite.py").read_text()


# ---------------------------------------------------------------------- no value becomes SQL text
CANARY = "zq'can;ary--"


class _Recorder:
    """A DuckDB connection that records the text of every statement it is given."""

    statements: list[str] = []

    def __init__(self, con):
        self._con = con

    def execute(self, sql, *args, **kw):
        self.statements.append(sql)
        return self._con.execute(sql, *args, **kw)

    def executemany(self, sql, *args, **kw):
        self.statements.append(sql)
        return self._con.executemany(sql, *args, **kw)

    def sql(self, sql, *args, **kw):
        self.statements.append(sql)
        return self._con.sql(sql, *args, **kw)

    query = sql

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._con.close()


def test_values_from_the_inputs_never_become_sql_text(tmp_path, monkeypatch):
    """Values with quotes and semicolons planted in parsl.log (an app name), in a path (a manager's
    directory: path groups and the clock they name) and in monitoring.db (host names, function names): each
    reaches the output, and none is in the text of any statement DuckDB ran."""
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    log = run / "000" / "parsl.log"
    log.write_bytes(log.read_bytes().replace(b"App work,", f"App work{CANARY},".encode()))
    block = run / "000" / "worker_pool" / "block-0"
    (block / "fd83ca48a1c7").rename(block / f"fd83ca48a1c7{CANARY}")
    db = sqlite3.connect(run / "monitoring.db")
    db.execute("UPDATE node SET hostname = hostname || ?", [CANARY])
    db.execute("UPDATE try SET hostname = hostname || ?", [CANARY])
    db.execute("UPDATE task SET task_func_name = task_func_name || ?", [CANARY])
    db.commit()
    db.close()
    real_connect = duckdb.connect
    _Recorder.statements = []
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: _Recorder(real_connect(*a, **k)))
    out = tmp_path / "canary.duckdb"
    replay(run, out)
    monkeypatch.undo()
    assert len(_Recorder.statements) > 100
    assert [s for s in _Recorder.statements if "can;ary" in s] == []
    with duckdb.connect(str(out), read_only=True) as c:
        def count(where: str) -> int:
            return c.execute(f"SELECT count(*) FROM observations WHERE {where}", [f"%{CANARY}%"]).fetchone()[0]

        assert count("source = '000/parsl.log' AND attributes::VARCHAR LIKE ?") > 0
        assert count("source = 'monitoring.db' AND attributes::VARCHAR LIKE ?") > 0
        assert count("source LIKE ? AND clock LIKE '%can;ary%'") > 0


def test_no_sql_text_is_built_from_what_a_file_holds():
    """The static side of the test above, over the modules that read the run directory: no f-string that is
    SQL interpolates a file's path, path groups, run key or the text of its lines or rows (those travel as
    parameters or data); what they interpolate is the definitions' (patterns, names, templates) or their own
    (table names, numbers)."""
    tainted_attributes = {"rel", "groups", "run_key", "path", "description"}  # f.rel, f.groups, cur.description
    tainted_names = {"text", "rows", "batch", "data", "block"}  # what was read
    sql_words = ("SELECT", "INSERT", "CREATE", "DELETE", "UPDATE", "ALTER")
    found = []
    for name in ("lines.py", "records.py", "rules.py", "sqlite.py", "observer.py", "rundir.py", "templates.py"):
        path = PACKAGE / "sources" / name
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.JoinedStr):
                continue
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if not any(w in literal for w in sql_words):
                continue
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    names = {n.id for n in ast.walk(v.value) if isinstance(n, ast.Name)}
                    attributes = {n.attr for n in ast.walk(v.value) if isinstance(n, ast.Attribute)}
                    if names & tainted_names or attributes & tainted_attributes:
                        found.append(f"{name}:{node.lineno}: {{{ast.unparse(v.value)}}}")
    assert found == []
