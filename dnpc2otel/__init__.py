"""dnpc2otel: rebuild nested performance contexts of workflow runs from their logs, after the fact.

The package is laid out as its data flow (see dnpc2otel.tables for what each stage hands the next):
`sources` (definitions, file reading, rules) → `reconcile` (runs, time, contexts, disagreements) →
`export` (DuckDB file, OTLP) → `analysis`, `report`; `pipeline` runs them, `cli` is the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "replay", "export"]


def replay(*args, **kwargs):
    """`dnpc2otel replay`: see dnpc2otel.pipeline.replay."""
    from .pipeline import replay as _replay

    return _replay(*args, **kwargs)


def export(*args, **kwargs):
    """`dnpc2otel export`: see dnpc2otel.export.otlp.export."""
    from .export.otlp import export as _export

    return _export(*args, **kwargs)
