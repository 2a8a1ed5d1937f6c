"""Run the fuzz targets of fuzz/targets.py for a time budget each; exit non-zero if any input crashed one.

    python fuzz/run.py [--target logs|monitoring_db] [--seconds 60] [--workdir DIR]

Each target runs in its own process under libFuzzer (atheris), starting from seeds cut from real files;
crash inputs are kept in the work directory (crash-*), with the traceback on stderr.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import TARGETS, seeds  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=sorted(TARGETS), action="append")
    p.add_argument("--seconds", type=int, default=60, help="budget per target")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dnpc2otel-fuzz-"))
    failed = []
    for name in args.target or sorted(TARGETS):
        corpus = work / name
        seeds(name, corpus)
        # -timeout: an input that takes over 60 s is a hang; -rss_limit_mb: DuckDB and the reader must stay bounded
        cmd = [sys.executable, str(HERE / "targets.py"), name, str(corpus), f"-max_total_time={args.seconds}",
               "-timeout=60", "-rss_limit_mb=4096", f"-artifact_prefix={work}/{name}-", "-print_final_stats=1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        runs = next((ln.split(":")[-1].strip() for ln in proc.stderr.splitlines()
                     if "stat::number_of_executed_units" in ln), "?")
        print(f"{name}: exit {proc.returncode}, {runs} inputs in {args.seconds} s (work dir {work})")
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
