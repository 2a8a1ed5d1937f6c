"""Every run directory Parsl users committed to public repositories (tests/data/realworld, Parsl 0.5 of
2018 → 2026; see its README) converts, with ≥ 95% of its lifecycle lines turned into observations (the
lines tests/lifecycle.py recognises from Parsl's own templates, independent of the converters)."""

from __future__ import annotations

import pytest
from conftest import REPO
from lifecycle import coverage

from dnpc2otel import replay

REALWORLD = REPO / "tests" / "data" / "realworld"
RUNS = sorted(p / "runinfo" for p in REALWORLD.iterdir() if (p / "runinfo").is_dir())
RUNS += sorted(p / "runinfo" for p in (REALWORLD / "cctools-and-db").iterdir() if (p / "runinfo").is_dir())


@pytest.mark.parametrize("run_dir", RUNS, ids=[p.parent.name for p in RUNS])
def test_realworld_run_converts_its_lifecycle_lines(run_dir, tmp_path):
    out = tmp_path / "rw.duckdb"
    summary = replay(run_dir, out)
    assert summary.spans > 0 and summary.runs
    lines, understood, per = coverage(run_dir, out)
    missed = {k: v for k, v in per.items() if v[1] < v[0]}
    assert understood >= 0.95 * lines, f"{understood}/{lines} lifecycle lines understood; missed: {missed}"
