"""dnpc2otel: rebuild nested performance contexts of workflow runs from their logs, after the fact.

The package is laid out as its data flow (see dnpc2otel.tables for what each stage hands the next):
`sources` (definitions, file reading, rules) → `reconcile` (runs, time, contexts, disagreements) →
`export` (DuckDB file, OTLP) → `analysis`, `report`; `pipeline` runs them, `cli` is the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "replay", "export", "open"]


def replay(*args, **kwargs):
    """`dnpc2otel replay`: see dnpc2otel.pipeline.replay."""
    from .pipeline import replay as _replay

    return _replay(*args, **kwargs)


def export(*args, **kwargs):
    """`dnpc2otel export`: see dnpc2otel.export.otlp.export."""
    from .export.otlp import export as _export

    return _export(*args, **kwargs)


def open(path, duckdb_path=None, read_only=True, **replay_options):  # noqa: A001 - dnpc2otel.open, as in the docs
    """A DuckDB connection with the `analysis` views ready, from a dnpc2otel DuckDB file or a run directory
    (replayed on the fly): `dnpc2otel.open("runinfo").sql("FROM analysis.task_breakdown").df()`.
    See dnpc2otel.analysis.session.open_db."""
    from .analysis.session import open_db

    return open_db(path, duckdb_path, read_only, **replay_options)
