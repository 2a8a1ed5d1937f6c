"""Find the runs and source files of a Parsl run_dir (runinfo/) or of one run directory in it.

Layout (Parsl 2023 → 2026): runinfo/NNN/ per run (parsl.log, executor folders, …) and one monitoring.db
in runinfo/ shared by all runs. Which files mark a run, and which a run_dir, is the workflow system's
declaration (`[system] run_markers`, `shared_markers`); converter definitions say which files they read,
by a regular expression over the path relative to runinfo/; this module only walks the tree and matches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .definitions import Definition, System
from .records import SourceFile


@dataclass
class RunDirSelection:
    root: Path  # the run_dir: paths of sources are relative to it
    runs: list[str] | None  # names of the selected run directories; None: every run in root
    present: tuple[str, ...] = ()  # every run directory in root (a marker file in it), selected or not
    # what `source_files` could not or would not enter, with why: directories it may not list, symbolic links
    # that lead out of the tree or nowhere (a loop, a broken link). Links within the tree (TaskVine's
    # most-recent) are skipped silently: their targets are read where they lie.
    not_read: list[str] = field(default_factory=list)

    def walk_warning(self) -> str | None:
        if not self.not_read:
            return None
        n = len(self.not_read)
        return f"{n} path{'s' if n > 1 else ''} not read: {', '.join(self.not_read)}"

    def selects(self, rel: str) -> bool:
        if self.runs is None:
            return True
        first = rel.split("/", 1)[0]
        # files directly in the run_dir (monitoring.db) and folders that are not run directories
        # (TaskVine's <label>/<timestamp>/vine-logs) are shared by the runs: the core ties them to one
        return "/" not in rel or first in self.runs or not first.isdigit()


def select(path: Path, system: System) -> RunDirSelection:
    """Interpret a user's path: a run_dir with NNN/ runs, one run directory, or a folder (a project's) holding
    one run_dir (Parsl's default `runinfo/`)."""
    markers, shared = system.run_markers, system.shared_markers
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; give a Parsl run_dir (runinfo/) or one run (runinfo/000)")
    if any((path / m).is_file() for m in markers):
        return RunDirSelection(root=path.parent, runs=[path.name], present=_runs_in(path.parent, markers))
    if _is_run_dir(path, system):
        return RunDirSelection(root=path, runs=None, present=_runs_in(path, markers))
    # one level further: users name the folder their script ran in, whose runinfo/ is the run_dir
    inner = sorted(c for c in _subdirs(path) if _is_run_dir(c, system))
    if len(inner) == 1:
        return RunDirSelection(root=inner[0], runs=None, present=_runs_in(inner[0], markers))
    if inner:
        names = ", ".join(str(c) for c in inner)
        raise UserError(f"{path}: holds {len(inner)} {system.label} run_dirs ({names}); give one of them")
    names = ", ".join([*markers, *shared]) or "no marker files declared"
    raise UserError(f"{path}: not a {system.label} run directory (none of {names} in it, in its sub-directories "
                    "or in theirs)")


def _is_run_dir(path: Path, system: System) -> bool:
    """A run_dir: a shared marker (monitoring.db) in it, or a run marker (parsl.log) in one of its children."""
    return any((path / m).is_file() for m in system.shared_markers) or any(
        (child / m).is_file() for child in _subdirs(path) for m in system.run_markers
    )


def _runs_in(root: Path, markers: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(c.name for c in _subdirs(root) if any((c / m).is_file() for m in markers)))


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def source_files(
    selection: RunDirSelection, definitions: list[Definition], extra: dict[str, Path] | None = None
) -> list[SourceFile]:
    """Every (file, definition) pair under the run_dir where a definition's format claims the file; then the
    files outside it a dnpc2otel.toml names (`extra`: the path each is read as, relative to the run_dir → where
    it lies), claimed by that path like the others."""
    found: list[SourceFile] = []
    root = selection.root
    selection.not_read.clear()

    def unlisted(e: OSError) -> None:
        rel = Path(e.filename).relative_to(root).as_posix() if e.filename else "?"
        selection.not_read.append(f"{rel} (cannot list: {e.strerror or e})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):  # os.walk follows no directory link
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir != "." and not selection.selects(rel_dir + "/x"):
            dirnames[:] = []
            continue
        for name in sorted([*filenames, *dirnames]):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = Path(dirpath) / name
            if path.is_symlink() and selection.selects(rel):
                why = _link_problem(path, root)
                if why:
                    selection.not_read.append(f"{rel} ({why}: not followed)")
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not selection.selects(rel):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():  # links are not followed; FIFOs and devices not read
                continue
            for definition, fmt, groups in _claims(rel, definitions):
                found.append(SourceFile(path, rel, definition, fmt, groups))
    for rel, path in (extra or {}).items():
        if not selection.selects(rel):
            continue
        claims = [SourceFile(path, rel, d, fmt, groups) for d, fmt, groups in _claims(rel, definitions)]
        if not claims:
            selection.not_read.append(f"{rel} (named in {path.name}'s dnpc2otel.toml entry: no converter reads "
                                      "a file of that name)")
        found.extend(claims)
    return found


def _link_problem(link: Path, root: Path) -> str | None:
    """Why a link deserves a word: it loops, is broken, or leads out of the run_dir; None when it stays in it."""
    target = os.path.realpath(link)  # never raises, even on a loop
    if not os.path.exists(target):
        return "a loop, or broken"
    inside = os.path.commonpath([target, os.path.realpath(root)]) == os.path.realpath(root)
    return None if inside else f"leads out of the run directory, to {target}"


def _claims(rel: str, definitions: list[Definition]):
    """Each definition reads a file with the first of its formats whose pattern matches it."""
    for d in definitions:
        for fmt in d.formats:
            m = fmt.files.fullmatch(rel)
            if m:
                yield d, fmt, m.groupdict()
                break
