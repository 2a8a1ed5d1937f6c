"""`dnpc2otel.toml` beside or inside a run directory: the user's own converter definitions for that run.

    converters = ["stages.toml", "defs/"]   # .toml files or directories, relative to dnpc2otel.toml
    files = ["sacct.txt"]                   # files outside the run_dir, read as if they lay in it
    [files]                                 # or: the path each is read as (relative to runinfo/) = where it is
    "000/sacct.txt" = "accounting/sacct-47948277.txt"

`files` brings in what is saved beside the run rather than in it (a batch system's accounting dump): a file
named in a list is read as if it lay directly in the run_dir, under its own name, and belongs to the run its
records fall in (or the only run); a table names the path it is read as, so that `000/sacct.txt` is run
000's. Every definition (built-in or not) claims it by that path, as it claims a file in the run_dir.

It is looked for in the directory the user named, then in the run_dir (runinfo/), then in the directory
holding the run_dir (where the workflow script usually is); the nearest one is used, the others ignored,
so a run copied with its dnpc2otel.toml replays the same wherever it lies.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

NAME = "dnpc2otel.toml"
KEYS = ("converters", "files")


@dataclass(frozen=True)
class RunConfig:
    path: Path
    converters: list[Path] = field(default_factory=list)  # definition files and directories, resolved
    extra: dict[str, Path] = field(default_factory=dict)  # `files`: path read as (relative to the run_dir) → file

    @property
    def files(self) -> list[Path]:
        return [p for p in self.converters if p.suffix == ".toml" and not p.is_dir()]

    @property
    def dirs(self) -> list[Path]:
        return [p for p in self.converters if p not in self.files]


def find(given: Path, run_dir: Path) -> RunConfig | None:
    """The nearest dnpc2otel.toml to the directory the user named, or None."""
    seen: set[Path] = set()
    for d in (given, run_dir, run_dir.parent):
        d = d.resolve()
        if d in seen:
            continue
        seen.add(d)
        if (d / NAME).is_file():
            return read(d / NAME)
    return None


def read(path: Path) -> RunConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    entries = raw.get("converters", [])
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise UserError(f"{path}: converters must be a list of paths (strings), relative to {path.parent}")
    return RunConfig(path, [(path.parent / e).resolve() for e in entries], _extra_files(path, raw.get("files", [])))


def _extra_files(path: Path, entries: object) -> dict[str, Path]:
    """`files`: a list of paths (each read under its own name) or a table {read as = path}; each must exist."""
    if isinstance(entries, list) and all(isinstance(e, str) and e for e in entries):
        pairs = [(Path(e).name, e) for e in entries]
    elif isinstance(entries, dict) and all(isinstance(v, str) and v for v in entries.values()):
        pairs = list(entries.items())
    else:
        raise UserError(f"{path}: files must be a list of paths, or a table {{path in the run_dir = path}} "
                        f"(strings, relative to {path.parent})")
    extra: dict[str, Path] = {}
    for rel, e in pairs:
        name = rel.replace("\\", "/").strip("/")
        if not name or ".." in name.split("/"):
            raise UserError(f"{path}: files: {rel!r} is not a path inside the run_dir")
        target = (path.parent / e).resolve()
        if not target.is_file():
            raise UserError(f"{path}: files: {target} is not a file")
        if name in extra:
            raise UserError(f"{path}: files: two files are read as {name!r}")
        extra[name] = target
    return extra
