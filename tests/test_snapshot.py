"""Behaviour kept across refactors: every bundled corpus run replays to the content recorded in
tests/data/corpus-snapshot.json (regenerate with `python tests/snapshot.py --update` when a change is meant
to alter the output, and say why in the commit)."""

from __future__ import annotations

import json

import pytest
from snapshot import SNAPSHOT, corpus_runs, replay_digests

EXPECTED = json.loads(SNAPSHOT.read_text())
RUNS = corpus_runs()


def test_every_bundled_run_has_a_snapshot():
    assert sorted(EXPECTED) == sorted(r.parent.name for r in RUNS)


@pytest.mark.parametrize("run", RUNS, ids=[r.parent.name for r in RUNS])
def test_replay_content_is_unchanged(run, tmp_path):
    want = EXPECTED[run.parent.name]
    got = replay_digests(run, tmp_path, {t: v["columns"] for t, v in want.items()})
    changed = {t: (want[t]["rows"], got[t]["rows"]) for t in want if got[t]["sha256"] != want[t]["sha256"]}
    assert not changed, f"tables whose content changed (rows before, after): {changed}"
