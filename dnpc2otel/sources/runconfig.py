"""`dnpc2otel.toml` beside or inside a run directory: the user's own converter definitions for that run.

    converters = ["stages.toml", "defs/"]   # .toml files or directories, relative to dnpc2otel.toml

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
KEYS = ("converters",)


@dataclass(frozen=True)
class RunConfig:
    path: Path
    converters: list[Path] = field(default_factory=list)  # definition files and directories, resolved

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
    return RunConfig(path, [(path.parent / e).resolve() for e in entries])
