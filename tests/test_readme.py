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


def test_readme_contract_lists_the_declared_columns():
    """The README's DuckDB contract is the declaration in dnpc2otel/tables.py, column for column."""
    from dnpc2otel.tables import OUTPUT

    text = README.read_text()
    section = text[text.index("## DuckDB contract"):text.index("## Architecture")]
    for table in OUTPUT:
        row = re.search(rf"^\| `{table.name}` \| (.*) \|$", section, re.M)
        assert row, f"table {table.name} is not in the README's contract"
        named = re.findall(r"`([^`]+)`", row.group(1))
        listed = [c.strip() for part in named for c in part.split(",") if re.fullmatch(r"\s*\w+\s*", c)]
        named_columns = [c for c in dict.fromkeys(listed) if c in table.column_names]
        assert named_columns == list(table.column_names), table.name


def test_readme_architecture_names_every_stage_folder():
    text = README.read_text()
    section = text[text.index("## Architecture"):text.index("## Dependencies and why")]
    pkg = README.parent / "dnpc2otel"
    folders = sorted(p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    for name in folders:
        assert f"`dnpc2otel/{name}/`" in section or f"`{name}/`" in section, name
    for module in (pkg / "sources").glob("*.py"):
        if module.stem != "__init__":
            assert f"`{module.stem}`" in section, f"sources/{module.name} is not described"
    for module in (pkg / "reconcile").glob("*.py"):
        if module.stem != "__init__":
            assert f"`{module.stem}`" in section, f"reconcile/{module.name} is not described"


def test_readme_lists_the_analysis_views():
    """The README's analysis views are the declarations in dnpc2otel/analysis, column for column."""
    from dnpc2otel.analysis import VIEWS

    text = README.read_text()
    section = text[text.index("## Asking questions in SQL"):text.index("## Architecture")]
    for view in VIEWS:
        row = re.search(rf"^\| `analysis\.{view.name}(?:\([^)]*\))?` \| .* \| `([^`]+)` \|$", section, re.M)
        assert row, f"analysis view {view.name} is not in the README"
        assert [c.strip() for c in row.group(1).split(",")] == list(view.column_names), view.name
