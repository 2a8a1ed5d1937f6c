"""A run directory with a single run: files that name no run (cctools logs beside an empty parsl.log) belong
to it, even when no source gives the run a time window."""

from __future__ import annotations

import pytest
from conftest import REPO

from dnpc2otel import replay

CCTOOLS = REPO / "tests" / "data" / "realworld" / "cctools-and-db"


@pytest.mark.parametrize("name,ctype", [("wq-colmena-2023", "wq_task"), ("vine-lnni-2025", "vine_task")])
def test_files_that_name_no_run_belong_to_the_only_run(name, ctype, tmp_path):
    run_dir = CCTOOLS / name / "runinfo"
    assert (run_dir / "000" / "parsl.log").stat().st_size == 0
    summary = replay(run_dir, tmp_path / "one.duckdb")
    assert len(summary.runs) == 1 and summary.runs[0]["run_dir"] == "000"
    assert summary.contexts.get(ctype, 0) > 100 and summary.contexts["workflow"] == 1
