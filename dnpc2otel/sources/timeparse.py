"""SQL for the timestamp forms sources write, to integer nanoseconds (no float rounding)."""

from __future__ import annotations

from .templates import quote_literal


def epoch_text_ns(col: str) -> str:
    """'1795291145.160812' (seconds with any fraction) → ns, exact; falls back to DOUBLE for odd forms."""
    sec = f"split_part({col}, '.', 1)"
    frac = f"rpad(coalesce(nullif(split_part({col}, '.', 2), ''), '0'), 9, '0')[1:9]"
    # HUGEINT arithmetic, then TRY_CAST: a number too large for ns (or 'inf') is NULL, not an overflow error
    return (
        f"coalesce(TRY_CAST(TRY_CAST({sec} AS HUGEINT) * 1000000000 + TRY_CAST({frac} AS BIGINT) AS BIGINT), "
        f"TRY_CAST(TRY_CAST({col} AS DOUBLE) * 1e9 AS BIGINT))"
    )


def to_ns(col: str, fmt: str) -> str:
    """SQL turning text column `col` into ns for a format: epoch, epoch_ms, epoch_us or a strptime format.

    strptime formats (and 'timestamp') are naive local wall-clock times: the value is ns as if UTC, to be
    shifted by the inferred offset later.
    """
    if fmt == "epoch":
        return epoch_text_ns(col)
    if fmt == "epoch_us":
        return f"TRY_CAST(TRY_CAST({col} AS HUGEINT) * 1000 AS BIGINT)"
    if fmt == "epoch_ms":
        return f"TRY_CAST(TRY_CAST({col} AS HUGEINT) * 1000000 AS BIGINT)"
    if fmt == "timestamp":
        return f"epoch_ns(TRY_CAST({col} AS TIMESTAMP))"
    return f"epoch_ns(try_strptime({col}, {quote_literal(fmt)}))"


def is_epoch(fmt: str) -> bool:
    return fmt.startswith("epoch")
