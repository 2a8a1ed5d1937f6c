"""Coverage-guided fuzz targets (atheris) for the readers of untrusted run directories.

    python fuzz/run.py                      # every target, 60 s each
    python fuzz/run.py --target logs --seconds 3600

A target gets arbitrary bytes, writes them as one file of a run directory, and replays that directory the
way a user would. A clear `UserError` (one line for the user) is an accepted outcome; any other exception is
a crash, and libFuzzer keeps the input that caused it (crash-* files in the working directory). The seed
inputs are cut from real Parsl 2026.10.26 files bundled in tests/data/corpus.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

from dnpc2otel import replay  # noqa: E402
from dnpc2otel.errors import UserError  # noqa: E402

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "tests" / "data" / "corpus" / "htex-2026" / "runinfo"
# where each kind of file sits in a run directory; the first input byte picks one
LOG_PLACES = [
    "000/parsl.log",
    "000/worker_pool/interchange.log",
    "000/worker_pool/block-0/0123456789ab/manager.log",
    "000/worker_pool/block-0/0123456789ab/worker_0.log",
    "000/database_manager.log",
    "000/worker_pool/monitoring_zmq_router.log",
]


def _replay(tmp: Path) -> None:
    try:
        replay(tmp / "runinfo", tmp / "out.duckdb", on_warning=lambda msg: None)
    except UserError:
        pass


def logs(data: bytes) -> None:
    if not data:
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        target = tmp / "runinfo" / LOG_PLACES[data[0] % len(LOG_PLACES)]
        target.parent.mkdir(parents=True)
        target.write_bytes(data[1:])
        _replay(tmp)


def monitoring_db(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "runinfo" / "000").mkdir(parents=True)
        (tmp / "runinfo" / "monitoring.db").write_bytes(data)
        _replay(tmp)


TARGETS = {"logs": logs, "monitoring_db": monitoring_db}


def seeds(name: str, out: Path) -> None:
    """Write the seed inputs of a target: real files' first 8 kB (logs), the real monitoring.db."""
    out.mkdir(parents=True, exist_ok=True)
    if name == "logs":
        for i, place in enumerate(LOG_PLACES):
            real = next((RUN / "000").rglob(Path(place).name), None)
            if real:
                (out / f"seed-{i}").write_bytes(bytes([i]) + real.read_bytes()[:8192])
    else:
        (out / "seed-0").write_bytes((RUN / "monitoring.db").read_bytes())


if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    # coverage of our own code only: instrumenting every loaded library would slow each input for nothing
    for mod in [m for n, m in sys.modules.items() if n.startswith("dnpc2otel") and m is not None]:
        for obj in vars(mod).values():
            if not getattr(obj, "__module__", "").startswith("dnpc2otel"):
                continue
            for fn in [obj] if hasattr(obj, "__code__") else list(vars(obj).values()) if isinstance(obj, type) else []:
                if hasattr(fn, "__code__"):
                    atheris.instrument_func(fn)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
