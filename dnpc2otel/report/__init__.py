"""Stage 5, report (to come): a self-contained HTML report drawn from the analysis views."""
