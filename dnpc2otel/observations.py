"""The observation: the one data shape between converters and the reconciler.

An observation is one fact read from one place of one source: "context (type, id) of run R had event E at
time T with these attributes", optionally relating the context to another (child_of, depends_on, …) or
naming another key of its run (alias). Converters produce rows of this shape and nothing else; the
reconciler consumes them and knows nothing of file formats.
"""

OBSERVATIONS_DDL = """
CREATE TABLE IF NOT EXISTS observations (
    run_key      VARCHAR,   -- the run as the source knows it: a Parsl run_id, or 'dir:NNN' for a run directory
    context_type VARCHAR,   -- workflow, task, try, executor, block, …
    context_id   VARCHAR,   -- local to the run: '12' for task 12, '12.0' for its first try, '' for the workflow
    event        VARCHAR,   -- NULL: the observation only asserts attributes or a relation
    time_ns      BIGINT,    -- UTC epoch nanoseconds, when the source says so
    local_ns     BIGINT,    -- naive local wall-clock time (as if it were UTC), when that is all it says
    clock        VARCHAR,   -- whose clock stamped it: 'dfk', 'host:<name>', …
    bounds       BOOLEAN,   -- may its time bound the context's span? (false: an echo or a sample inside it)
    attributes   VARCHAR,   -- JSON object: attributes of the context (and of the event)
    event_attributes VARCHAR, -- JSON object: attributes of the event only (a resource sample, a try id …)
    relation     VARCHAR,   -- child_of | depends_on | ran_in_block | alias | … (NULL: none)
    related_type VARCHAR,
    related_id   VARCHAR,
    source       VARCHAR,   -- file, relative to the run_dir
    line         BIGINT,    -- line number (1-based) or SQLite rowid
    converter    VARCHAR,
    rule         VARCHAR,
    priority     INTEGER    -- of the converter: lower wins when sources disagree on an attribute
)
"""

COLUMNS = (
    "run_key",
    "context_type",
    "context_id",
    "event",
    "time_ns",
    "local_ns",
    "clock",
    "bounds",
    "attributes",
    "event_attributes",
    "relation",
    "related_type",
    "related_id",
    "source",
    "line",
    "converter",
    "rule",
    "priority",
)

SOURCES_DDL = """
CREATE TABLE IF NOT EXISTS sources (
    source          VARCHAR,  -- file, relative to the run_dir
    converter       VARCHAR,
    format          VARCHAR,
    bytes           BIGINT,
    lines           BIGINT,   -- lines (or rows) read
    records         BIGINT,   -- records recognised by the format
    observations    BIGINT,
    not_understood  BIGINT,   -- lines that fit no record format
    invalid_bytes   BOOLEAN,  -- non-UTF-8 bytes were replaced
    warning         VARCHAR
)
"""
