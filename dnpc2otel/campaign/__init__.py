"""Campaigns: many runs of one study, as a context above the workflow runs (context.py), and converted as
Parsl tasks on a user's Parsl configuration, then assembled into one DuckDB file (fanout.py)."""
