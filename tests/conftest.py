"""Shared fixtures: the real corpus runs bundled in tests/data/corpus (made with real Parsl releases, see its
README), and fresh Parsl runs made with pip-installed parsl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "corpus"
WORKFLOWS = Path(__file__).resolve().parent / "workflows"
TOOLS = Path(__file__).resolve().parent / "tools"

pytest_plugins = ["jaeger_fixture"] if (Path(__file__).parent / "jaeger_fixture.py").exists() else []


def corpus_runs() -> list[Path]:
    return sorted(p / "runinfo" for p in CORPUS.iterdir() if (p / "runinfo").is_dir())


def make_parsl_run(dest: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 240,
                   workflow: str = "small.py") -> Path:
    """Run tests/workflows/<workflow> (small.py) with the installed parsl; returns the run_dir (runinfo/)."""
    pytest.importorskip("parsl")
    run_dir = dest / "runinfo"
    environ = dict(os.environ)
    # the worker pool's entry points live beside this interpreter, as for a user in a virtualenv
    environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environ.get("PATH", "")
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(WORKFLOWS / workflow), str(run_dir), *args],
        cwd=dest, env=environ, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"parsl run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    shutil.rmtree(run_dir / "000" / "pool" / "certificates", ignore_errors=True)
    return run_dir


@pytest.fixture(scope="session")
def fresh_htex(tmp_path_factory) -> Path:
    """A real HighThroughputExecutor run with monitoring, made now."""
    return make_parsl_run(tmp_path_factory.mktemp("htex"), "--executor", "htex")


@pytest.fixture(scope="session")
def fresh_htex_debug(tmp_path_factory) -> Path:
    """An HTEX run with worker_debug=True: the interchange and managers log every task."""
    return make_parsl_run(tmp_path_factory.mktemp("htex_debug"), "--executor", "htex", "--worker-debug")


@pytest.fixture(scope="session")
def fresh_htex_faults(tmp_path_factory) -> Path:
    """An HTEX run over two blocks where a task kills its manager: ManagerLost, retries on the other one."""
    return make_parsl_run(tmp_path_factory.mktemp("htex_faults"), "--worker-debug", workflow="htex_faults.py")


@pytest.fixture(scope="session")
def fresh_threads_chicago(tmp_path_factory) -> Path:
    """A ThreadPoolExecutor run with monitoring whose local clock is America/Chicago (naive times ≠ UTC),
    with memoized re-runs of a cached app."""
    return make_parsl_run(tmp_path_factory.mktemp("threads"), "--executor", "threads", "--memo",
                          env={"TZ": "America/Chicago"})


def copy_run(run_dir: Path, dest: Path, without_db: bool = False) -> Path:
    """A writable copy of a run_dir (inputs are read-only to us), optionally without monitoring.db."""
    target = dest / "runinfo"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("monitoring.db") if without_db else None)
    return target
