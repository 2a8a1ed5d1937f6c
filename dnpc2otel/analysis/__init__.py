"""Stage 4, analysis (to come): views and macros over the DuckDB file that answer where the time went
(per-task breakdown, concurrency, utilisation, critical path, run comparison). Reads only the file."""
