"""The tables the stages hand each other, declared once.

    sources   ──(schema observed)──▶  reconcile  ──(schema reconciled)──▶  export (DuckDB file, OTLP, …)

`sources` fills `observed.observations` and `observed.sources`; `reconcile` reads only those and fills the
`reconciled` tables; exporters read only `reconciled` (or the DuckDB file, whose tables are the same
declarations). A stage's scratch tables are TEMP tables of its own and never read by another stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

OBSERVED = "observed"
RECONCILED = "reconciled"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str, str], ...]  # (name, DuckDB type, meaning)
    order_by: str = ""  # the stable row order of the output file

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c[0] for c in self.columns)

    def ddl(self, schema: str) -> str:
        cols = ", ".join(f"{n} {t}" for n, t, _ in self.columns)
        return f"CREATE TABLE {schema}.{self.name} ({cols})"

    def doc(self) -> str:
        """Markdown rows: the contract as the README shows it."""
        return "\n".join(f"| `{n}` | {t} | {m} |" for n, t, m in self.columns)


# ---------------------------------------------------------------------- sources → reconcile
OBSERVATIONS = Table("observations", (
    ("run_key", "VARCHAR", "the run as the source knows it: a run id, or 'dir:NNN' for a run directory"),
    ("context_type", "VARCHAR", "workflow, task, try, executor, block, …"),
    ("context_id", "VARCHAR", "local to the run: '12' for task 12, '12.0' for its first try, '' for the run root"),
    ("event", "VARCHAR", "NULL: the observation only asserts attributes or a relation"),
    ("time_ns", "BIGINT", "UTC epoch nanoseconds, when the source says so"),
    ("local_ns", "BIGINT", "naive local wall-clock time (as if it were UTC), when that is all it says"),
    ("clock", "VARCHAR", "whose clock stamped it: the reference clock, 'manager:<id>', …"),
    ("bounds", "BOOLEAN", "may its time bound the context's span? (false: an echo or a sample inside it)"),
    ("attributes", "VARCHAR", "JSON object: attributes of the context (and of the event)"),
    ("event_attributes", "VARCHAR", "JSON object: attributes of the event only"),
    ("relation", "VARCHAR", "child_of | depends_on | alias | … (NULL: none)"),
    ("related_type", "VARCHAR", "type of the related context ('run' for an alias)"),
    ("related_id", "VARCHAR", "id of the related context, or the run's other key"),
    ("source", "VARCHAR", "file, relative to the run_dir"),
    ("line", "BIGINT", "line number (1-based) or SQLite rowid"),
    ("converter", "VARCHAR", "the definition that read it"),
    ("rule", "VARCHAR", "the rule or query of that definition"),
    ("priority", "INTEGER", "of the converter: lower wins when sources disagree"),
))

SOURCES = Table("sources", (
    ("root", "VARCHAR", "the run_dir the sources lie in (absolute)"),
    ("source", "VARCHAR", "file, relative to the run_dir"),
    ("converter", "VARCHAR", "definition that read it"),
    ("format", "VARCHAR", "format of that definition"),
    ("bytes", "BIGINT", "size"),
    ("lines", "BIGINT", "lines (or rows) read"),
    ("records", "BIGINT", "records recognised by the format"),
    ("records_used", "BIGINT", "records some rule turned into observations (rows, for SQLite)"),
    ("observations", "BIGINT", "observations made from it"),
    ("not_understood", "BIGINT", "lines that fit no record format"),
    ("invalid_bytes", "BIGINT", "bytes replaced by U+FFFD: not UTF-8, or NUL"),
    ("warning", "VARCHAR", "what went wrong reading it (damage: cut mid-line, invalid bytes, binary lines, "
                           "unreadable tables; or skipped) and what was done; NULL: read whole"),
), order_by="source")

# ---------------------------------------------------------------------- reconcile → export
SPANS = Table("spans", (
    ("trace_id", "VARCHAR", "32 hex digits: one trace per run (and one per campaign, its span alone)"),
    ("span_id", "VARCHAR", "16 hex digits, sha256 of run/type/id"),
    ("parent_span_id", "VARCHAR", "the primary parent (NULL: the run's root)"),
    ("name", "VARCHAR", "span name (from the context type's name attributes)"),
    ("service_name", "VARCHAR", "OTLP service.name"),
    ("context_type", "VARCHAR", "the context type"),
    ("start_time_unix_nano", "BIGINT", "start"),
    ("end_time_unix_nano", "BIGINT", "end"),
    ("status_code", "VARCHAR", "UNSET, OK or ERROR"),
    ("status_message", "VARCHAR", "with ERROR: the exception type, when a source gives it"),
    ("attributes", "JSON", "context attributes and dnpc.* provenance"),
), order_by="trace_id, start_time_unix_nano, span_id")

SPAN_LINKS = Table("span_links", (
    ("trace_id", "VARCHAR", "of the linking span"),
    ("span_id", "VARCHAR", "the linking span"),
    ("linked_trace_id", "VARCHAR", "of the linked span"),
    ("linked_span_id", "VARCHAR", "the linked span"),
    ("attributes", "JSON", "dnpc.relation, dnpc.linked_context, opentracing.ref_type, provenance"),
), order_by="trace_id, span_id, linked_span_id, attributes::VARCHAR")

SPAN_OBSERVATIONS = Table("observations", (
    ("trace_id", "VARCHAR", "the span the observation belongs to"),
    ("span_id", "VARCHAR", ""),
    ("time_unix_nano", "BIGINT", "the observation's UTC time after offsets (and skew correction)"),
    *((n, "JSON" if n in ("attributes", "event_attributes") else t, m) for n, t, m in OBSERVATIONS.columns),
))

DISAGREEMENTS = Table("disagreements", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the context the sources disagree about"),
    ("context_type", "VARCHAR", ""),
    ("context_id", "VARCHAR", ""),
    ("kind", "VARCHAR", "same_event_apart, impossible_order, missing_in_source, parent_conflict, incomplete, …"),
    ("subject", "VARCHAR", "the event, source or attribute concerned"),
    ("size_ms", "DOUBLE", "how far apart, where it has a size"),
    ("detail", "JSON", "the evidence"),
), order_by="trace_id, kind, context_type, context_id, subject")

CLOCKS = Table("clocks", (
    ("trace_id", "VARCHAR", "the run"),
    ("clock", "VARCHAR", "a host's clock"),
    ("reference", "VARCHAR", "the clock it is measured against"),
    ("pairs", "BIGINT", "causal event pairs that bound it"),
    ("excluded_pairs", "BIGINT", "pairs left out: of a failed attempt, or through an ambiguous or inferred binding"),
    ("lower_ms", "DOUBLE", "lower bound of its offset"),
    ("upper_ms", "DOUBLE", "upper bound"),
    ("resolution_ms", "DOUBLE", "how coarse the pairs' stamps are (each bound is widened by its pair's)"),
    ("consistent", "BOOLEAN", "false: the bounds contradict (lower > upper beyond the resolution), no estimate"),
    ("skew_ms", "DOUBLE", "the estimate (NULL: contradictory bounds, or no pair left)"),
    ("corrected", "BOOLEAN", "whether its times were corrected by the estimate (never when inconsistent)"),
), order_by="trace_id, clock")

RUNS = Table("runs", (
    ("trace_id", "VARCHAR", "the run's trace"),
    ("run_id", "VARCHAR", "the workflow system's run id (NULL: known only by its directory)"),
    ("run_dir", "VARCHAR", "its directory (or directories) under the run_dir"),
    ("root", "VARCHAR", "the run_dir (absolute)"),
    ("utc_offset_seconds", "INTEGER", "of naive local times"),
    ("timezone", "VARCHAR", "a zone name given by the user"),
    ("offset_source", "VARCHAR", "how the offset was found"),
    ("start_time_unix_nano", "BIGINT", "of the root span"),
    ("end_time_unix_nano", "BIGINT", ""),
    ("spans", "BIGINT", "spans of the run"),
    ("service_namespace", "VARCHAR", "OTLP service.namespace of the workflow system"),
), order_by="trace_id")

# links whose target no source describes: not written, counted in the summary
DANGLING_LINKS = Table("dangling_links", (
    ("run", "VARCHAR", ""), ("context_type", "VARCHAR", ""), ("context_id", "VARCHAR", ""),
    ("relation", "VARCHAR", ""), ("related_type", "VARCHAR", ""), ("related_id", "VARCHAR", ""),
))

# ---------------------------------------------------------------------- the DuckDB file → questions
ANALYSIS = "analysis"  # schema of the analysis views in the DuckDB file (declared in dnpc2otel/analysis)


@dataclass(frozen=True)
class View(Table):
    """A view of the analysis schema, its columns declared like a table's; with `params`, a table macro
    (`SELECT * FROM analysis.name(…)`); `materialized`: a table computed when the file is written (what
    many views read)."""

    sql: str = ""
    params: str = ""  # e.g. "bucket_s := 1.0": a table macro with these parameters
    materialized: bool = False

    def create(self, schema: str) -> str:
        if self.params:
            return f"CREATE OR REPLACE MACRO {schema}.{self.name}({self.params}) AS TABLE {self.sql}"
        if self.materialized:
            return f"CREATE OR REPLACE TABLE {schema}.{self.name} AS {self.sql}"
        return f"CREATE OR REPLACE VIEW {schema}.{self.name} AS {self.sql}"


STAGE_OUTPUTS: dict[str, tuple[Table, ...]] = {
    OBSERVED: (OBSERVATIONS, SOURCES),
    RECONCILED: (SPANS, SPAN_LINKS, SPAN_OBSERVATIONS, DISAGREEMENTS, CLOCKS, RUNS, SOURCES, DANGLING_LINKS),
}
# what the DuckDB file holds, in this order
OUTPUT: tuple[Table, ...] = (SPANS, SPAN_LINKS, DISAGREEMENTS, CLOCKS, RUNS, SPAN_OBSERVATIONS, SOURCES)


def create_stage(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    """(Re)create a stage's output schema with its declared, empty tables."""
    con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    con.execute(f"CREATE SCHEMA {schema}")
    for t in STAGE_OUTPUTS[schema]:
        con.execute(t.ddl(schema))


def insert(con: duckdb.DuckDBPyConnection, schema: str, table: Table, select: str) -> None:
    """Fill a declared table by name from a SELECT (columns it lacks are NULL, extra ones an error)."""
    con.execute(f"INSERT INTO {schema}.{table.name} BY NAME {select}")
