"""Stage 3, export: the `reconciled` tables → outputs.

`store` writes the DuckDB file (the declared tables of `dnpc2otel.tables`, plus views); `otlp` sends spans,
events and links from that file to an OTLP receiver (Jaeger, Tempo, a Collector). Room here for more
exporters reading the same file (Perfetto, Parquet).
"""
