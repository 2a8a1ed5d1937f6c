"""`dnpc2otel replay RUN_DIR --duckdb DB -q`, the CLI itself, with a timer around each stage and step.

    python bench/replay_phases.py PHASES.json RUN_DIR --duckdb DB -q

Neither the CLI nor the API reports where the time goes, so the stage functions the pipeline calls are
wrapped (by name, looked up at call time) before the CLI runs; a name that no longer exists is skipped, so
the phases are what could be timed. The overhead is a few dozen calls.
"""

from __future__ import annotations

import importlib
import json
import sys
import time

# (label, module, attribute): the pipeline's stages, then the steps inside each (reconcile/__init__.py's order)
PHASES = [
    ("sources", "dnpc2otel.pipeline", "observe"),
    ("sources: log files", "dnpc2otel.sources.observer", "Observer._observe_logs"),
    ("sources: monitoring.db", "dnpc2otel.sources.observer", "Observer._observe_sqlite"),
    ("reconcile", "dnpc2otel.pipeline", "reconcile"),
    *((f"reconcile: {module.rsplit('.', 1)[1]}.{name}" if module != "dnpc2otel.reconcile" else f"reconcile: {name}",
       module, name) for module, name in [
        ("dnpc2otel.reconcile.runs", "assign"),
        ("dnpc2otel.reconcile.clock", "infer_offsets"),
        ("dnpc2otel.reconcile.clock", "infer_clock_offsets"),
        ("dnpc2otel.reconcile", "_resolve_times"),
        ("dnpc2otel.reconcile.contexts", "identify"),
        ("dnpc2otel.reconcile.contexts", "choose_parents"),
        ("dnpc2otel.reconcile.skew", "measure"),
        ("dnpc2otel.reconcile.attributes", "choose"),
        ("dnpc2otel.reconcile.disagreements", "find"),
        ("dnpc2otel.reconcile.bounds", "bound"),
        ("dnpc2otel.reconcile.spans", "spans"),
        ("dnpc2otel.reconcile.spans", "links"),
        ("dnpc2otel.reconcile.runs", "run_table"),
        ("dnpc2otel.reconcile", "_publish"),
    ]),
    ("store", "dnpc2otel.export.store", "write"),
    ("summary", "dnpc2otel.export.store", "summarise"),
]

timings: dict[str, float] = {}


def _wrap(label: str, module: str, attr: str) -> bool:
    try:
        owner = importlib.import_module(module)
        *path, name = attr.split(".")
        for p in path:
            owner = getattr(owner, p)
        fn = getattr(owner, name)
    except (ImportError, AttributeError):
        return False

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[label] = timings.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, timed)
    return True


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    for label, module, attr in PHASES:
        _wrap(label, module, attr)
    from dnpc2otel.cli import main as cli

    code = cli(["replay", *argv])
    with open(out, "w") as fh:
        json.dump({label: round(timings[label], 3) for label, _, _ in PHASES if label in timings}, fh)
    return code


if __name__ == "__main__":
    sys.exit(main())
