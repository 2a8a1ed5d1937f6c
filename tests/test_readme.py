"""The README's examples stay true: its SQL runs against a replay of the bundled example, and its main
command is the one the bundled example answers to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "htex-2026" / "runinfo"


def sql_blocks() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    statements = [s.strip() for b in blocks for s in b.split(";") if s.strip()]
    return [s for s in statements if not all(ln.startswith("--") for ln in s.splitlines())]


def test_readme_sql_runs(tmp_path):
    out = tmp_path / "readme.duckdb"
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(EXAMPLE), "--duckdb", str(out), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    statements = sql_blocks()
    assert len(statements) >= 4
    with duckdb.connect(str(out), read_only=True) as con:
        for sql in statements:
            rows = con.execute(sql).fetchall()
            assert rows, f"README query returns nothing on the bundled example:\n{sql}"


def test_readme_main_command_uses_the_bundled_example():
    text = README.read_text()
    assert "dnpc2otel replay examples/htex-2026/runinfo" in text
    assert (EXAMPLE / "000" / "parsl.log").is_file() and (EXAMPLE / "monitoring.db").is_file()
    assert "bash scripts/test.sh" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
