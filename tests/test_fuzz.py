"""The coverage-guided fuzz targets (fuzz/targets.py, atheris) on a short budget: no input of theirs may crash
the log readers or the monitoring.db reader (a UserError is a clear answer, not a crash). Longer runs:
`python fuzz/run.py --seconds 3600`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

SECONDS = int(os.environ.get("DNPC2OTEL_FUZZ_SECONDS", "20"))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["logs", "monitoring_db"])
def test_fuzz_target_survives_its_budget(tmp_path, target):
    pytest.importorskip("atheris")
    proc = subprocess.run([sys.executable, str(REPO / "fuzz" / "run.py"), "--target", target,
                           "--seconds", str(SECONDS), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=SECONDS * 4 + 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    runs = proc.stdout.split(", ")[1].split()[0]
    assert runs.isdigit() and int(runs) > 10, proc.stdout  # it really ran inputs
    assert not list(tmp_path.glob(f"{target}-crash-*"))
