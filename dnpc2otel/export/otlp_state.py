"""What an OTLP receiver acknowledged: the state file beside the DuckDB file (`DB.export.json`).

Export sends the spans in a fixed order (trace_id, span_id) and in deterministic batches, so what was
acknowledged is a prefix of that order and is recorded as its last key (the cursor) with counts. Each entry
is keyed by what makes two exports the same one: the endpoint, protocol, trace selection and trace layout
(`trace_per`); it remembers the database's identity (size, modification time, span count), so a re-written
database (a new replay) starts over instead of resuming. The file is written atomically (temporary file and
rename) after every acknowledged request, so a crash at any point leaves the previous, true, state; it is
re-read before each write, so exports of one database to different receivers at the same time keep each
other's entries (two exports of the same entry at once are not supported: they would both send).

A request that was sent but not acknowledged (the receiver went away before it answered, or answered too
late) is sent again on retry or resume: delivery is at least once. Backends keyed by span id (Jaeger, Tempo)
store such a span once; nothing acknowledged is ever sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERSION = 1


def state_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".export.json")


@dataclass
class Progress:
    """An entry of the state file."""

    endpoint: str
    protocol: str
    trace_ids: list[str] | None
    trace_per: str
    database: dict
    cursor: list[str] | None = None  # (trace_id, span_id) of the last acknowledged span
    batches: int = 0
    requests: int = 0
    spans: int = 0
    events: int = 0
    complete: bool = False
    started: float = field(default_factory=time.time)
    updated: float = 0.0

    @property
    def key(self) -> str:
        ident = json.dumps([self.endpoint, self.protocol, self.trace_ids, self.trace_per])
        return hashlib.sha256(ident.encode()).hexdigest()[:16]


def database_identity(db_path: Path, spans: int) -> dict:
    st = db_path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "spans": spans}


class StateFile:
    """Read once, then rewritten (atomically) on every `save`; entries of other exports are kept."""

    def __init__(self, path: Path):
        self.path = path
        self.error: str | None = None  # why the file could not be written (export goes on without it)
        self.entries = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            doc = json.loads(self.path.read_text())
            if isinstance(doc, dict) and doc.get("version") == VERSION and isinstance(doc.get("exports"), dict):
                return doc["exports"]
        except (OSError, ValueError):
            pass  # none yet, or unreadable: every export starts from the beginning
        return {}

    def load(self, fresh: Progress, restart: bool) -> tuple[Progress, str]:
        """The entry for `fresh`'s export, or `fresh`; and why ('resumed', 'new', 'restart', 'database changed')."""
        old = self.entries.get(fresh.key)
        if old is None:
            return fresh, "new"
        if restart:
            return fresh, "restart"
        if old.get("database") != fresh.database:
            return fresh, "database changed"
        try:
            return Progress(**old), "resumed"
        except TypeError:
            return fresh, "new"

    def save(self, progress: Progress) -> None:
        progress.updated = time.time()
        self.entries = {**self._read(), progress.key: asdict(progress)}  # another export's entries as they are now
        doc = {"version": VERSION, "database": self.path.name.removesuffix(".export.json"), "exports": self.entries}
        try:
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f, indent=1)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            self.error = f"{self.path}: cannot write the export state ({e.strerror or e})"
