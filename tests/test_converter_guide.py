"""The worked example of converters/README.md works as written: its definition passes its own samples,
its commands run, and its query finds the span it promises."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys

import duckdb
from conftest import CORPUS, REPO

GUIDE = REPO / "converters" / "README.md"


def snippet(label: str) -> str:
    m = re.search(rf"<!-- example: {re.escape(label)} -->\n```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    assert m, f"no snippet {label!r} in {GUIDE}"
    return m.group(1)


def test_worked_example_runs_as_written(tmp_path):
    defs = tmp_path / "mydefs"
    defs.mkdir()
    (defs / "monitoring_router.toml").write_text(snippet("monitoring_router.toml"))
    # the commands name the bundled run by its path in the repository
    shutil.copytree(CORPUS / "htex-2026", tmp_path / "tests" / "data" / "corpus" / "htex-2026")
    for line in snippet("commands").splitlines():
        args = shlex.split(line)
        assert args[0] == "dnpc2otel"
        proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", *args[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        if "--check" in args:
            assert re.search(r"\b0 failed\b", proc.stdout) and "FAIL" not in proc.stdout, proc.stdout
    with duckdb.connect(str(tmp_path / "router.duckdb"), read_only=True) as con:
        rows = con.execute(snippet("query")).fetchall()
    assert len(rows) == 1
    name, parent, seconds = rows[0]
    log = (CORPUS / "htex-2026" / "runinfo" / "000" / "worker_pool" / "monitoring_zmq_router.log").read_text()
    stamps = [float(ln.split()[0]) for ln in log.splitlines()
              if ln.endswith(("Starting ZMQ listener", "ZMQ listener finished"))]
    assert (name, parent) == ("monitoring router", "workflow")
    assert abs(seconds - (stamps[-1] - stamps[0])) < 1e-6


def test_guide_documents_every_schema_key():
    """Each key the schema allows in a format, rule, emit or sample is in the reference."""
    import json

    schema = json.loads((REPO / "converters" / "definition.schema.json").read_text())
    text = GUIDE.read_text()

    def keys(node: dict) -> set[str]:
        return set(node.get("properties", {}))

    defs = schema.get("$defs", {})
    wanted = set()
    for name in ("system", "context_type", "format", "rule", "emit", "rule_sample", "query", "db_sample"):
        wanted |= keys(defs.get(name, {}))
    missing = sorted(k for k in wanted if f"`{k}`" not in text)
    assert wanted and not missing, missing

