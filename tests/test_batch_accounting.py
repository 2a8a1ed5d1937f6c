"""Batch accounting (issue 14): a block's time in the queue from the batch system's own record, bound to the
block by the job id Parsl logged (`parent_by`), read from a dump saved beside the run (dnpc2otel.toml
`files`) or inside it.

Runs: tests/data/accounting/slurm-midway-2018 is the real Parsl 0.5.1 run of tests/data/realworld/
samarthm+scale_test (Midway, SlurmProvider, block 0 = job 47948277) with an sacct --parsable2 dump for its
job; pbs-cri-2021 the real Parsl 1.1 run of annawoodard+helloworldparsl (block 0 = 27650355.cri16sc001, which
parsl.log says never left the queue) with a qstat -xf dump. The dumps were written for these job ids in the
batch systems' exact formats (we cannot run sacct or qstat here): see tests/data/accounting/README.md. The
expected times are read from the dumps themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from conftest import REPO
from test_user_sources import cli, one_error_line

from dnpc2otel.errors import UserError
from dnpc2otel.pipeline import replay

DATA = REPO / "tests" / "data" / "accounting"
SLURM = DATA / "slurm-midway-2018"
PBS = DATA / "pbs-cri-2021"


def naive_ns(text: str, fmt: str) -> int:
    """A naive local time of a dump as the run reads it: these runs' offset is UTC (assumed, said so)."""
    return int(dt.datetime.strptime(re.sub(" +", " ", text), fmt).replace(tzinfo=dt.UTC).timestamp()) * 10**9


def sacct_rows(path: Path) -> dict[str, dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("|")
    return {r[0]: dict(zip(header, r, strict=True)) for r in (ln.split("|") for ln in lines[1:])}


def qstat_jobs(path: Path) -> dict[str, dict[str, str]]:
    jobs: dict[str, dict[str, str]] = {}
    for ln in path.read_text().splitlines():
        if ln.startswith("Job Id: "):
            job = jobs.setdefault(ln[8:], {})
        elif ln.startswith("    ") and " = " in ln:
            key, value = ln.strip().split(" = ", 1)
            job[key] = value
    return jobs


def batch_spans(db: Path) -> dict[str, dict]:
    """context type → its span, its parent's attributes and its events {name: time}."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("""
            SELECT s.context_type, s.start_time_unix_nano, s.end_time_unix_nano, s.attributes, p.context_type,
                   p.attributes, p.start_time_unix_nano,
                   (SELECT list(struct_pack(name := e.name, t := e.time_unix_nano)) FROM span_events e
                    WHERE e.trace_id = s.trace_id AND e.span_id = s.span_id)
            FROM spans s LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
            WHERE s.context_type LIKE 'batch_%'""").fetchall()
    return {r[0]: dict(start=r[1], end=r[2], attrs=json.loads(r[3]), parent_type=r[4], parent=json.loads(r[5]),
                       parent_start=r[6], events={e["name"]: e["t"] for e in r[7] or []}) for r in rows}


@pytest.fixture()
def slurm_run(tmp_path) -> Path:
    """A copy of the Slurm run, its dump and the dnpc2otel.toml that names the dump beside runinfo/."""
    shutil.copytree(SLURM, tmp_path / "slurm")
    return tmp_path / "slurm" / "runinfo"


def test_sacct_dump_beside_the_run_gives_the_block_its_queue_wait(slurm_run, tmp_path):
    db = tmp_path / "slurm.duckdb"
    summary = replay(slurm_run, db)
    assert summary.run_config == (slurm_run.parent / "dnpc2otel.toml").resolve()
    job = sacct_rows(slurm_run.parent / "sacct-47948277.txt")["47948277"]
    fmt = "%Y-%m-%dT%H:%M:%S"
    spans = batch_spans(db)
    # the dump's other job (not one of this run's blocks) and the job's steps make no span
    assert set(spans) == {"batch_queued", "batch_running"} and summary.contexts["batch_queued"] == 1
    queued, running = spans["batch_queued"], spans["batch_running"]
    for s in (queued, running):  # bound to the block by the job id parsl.log gave it ('Launched block: 0:47948277')
        assert s["parent_type"] == "block" and s["parent"]["parsl.block.job_id"] == "47948277"
        assert s["parent"]["dnpc.context_id"] == "midway_ipp/0" and not s["attrs"].get("dnpc.orphan")
    assert (queued["start"], queued["end"]) == (naive_ns(job["Submit"], fmt), naive_ns(job["Start"], fmt))
    assert queued["events"] == {"submitted": naive_ns(job["Submit"], fmt), "eligible": naive_ns(job["Eligible"], fmt),
                                "started": naive_ns(job["Start"], fmt)}
    assert (running["start"], running["end"]) == (naive_ns(job["Start"], fmt), naive_ns(job["End"], fmt))
    assert queued["attrs"]["batch.job.queued_seconds"] == (queued["end"] - queued["start"]) // 10**9 > 0
    assert queued["attrs"]["batch.job.name"] == job["JobName"] and queued["attrs"]["batch.partition"] == "broadwl"
    assert running["attrs"]["batch.job.state"] == job["State"] and "otel.status_code" not in running["attrs"]
    # the block covers its wait: it begins at the submission, not at parsl.log's launch line
    assert queued["parent_start"] == queued["start"]
    assert not [w for w in summary.warnings if "sacct" in w]


def test_sacct_dump_inside_the_run_directory_needs_no_config(slurm_run, tmp_path):
    (slurm_run.parent / "dnpc2otel.toml").unlink()
    assert "batch_queued" not in replay(slurm_run, tmp_path / "none.duckdb").contexts  # beside it: not looked for
    shutil.copy(slurm_run.parent / "sacct-47948277.txt", slurm_run / "000" / "sacct.txt")
    db = tmp_path / "inside.duckdb"
    summary = replay(slurm_run / "000", db)
    assert summary.run_config is None and summary.contexts["batch_queued"] == 1
    assert batch_spans(db)["batch_queued"]["parent"]["parsl.block.job_id"] == "47948277"


def test_a_job_no_block_names_is_left_out(slurm_run, tmp_path):
    dump = slurm_run.parent / "sacct-47948277.txt"
    dump.write_text(dump.read_text().replace("47948277", "47948999"))
    summary = replay(slurm_run, tmp_path / "other.duckdb")
    assert "batch_queued" not in summary.contexts and "batch_running" not in summary.contexts


def test_qstat_dump_a_block_that_never_left_the_queue(tmp_path):
    shutil.copytree(PBS, tmp_path / "pbs")
    run = tmp_path / "pbs" / "runinfo"
    db = tmp_path / "pbs.duckdb"
    summary = replay(run, db)
    jobs = qstat_jobs(run / "000" / "qstat.txt")
    job = jobs["27650355.cri16sc001"]
    fmt = "%a %b %d %H:%M:%S %Y"
    spans = batch_spans(db)
    # parsl.log: '0/1 running/pending blocks' to the end; the dump: no stime, deleted from the queue
    assert set(spans) == {"batch_queued"} and "stime" not in job
    queued = spans["batch_queued"]
    assert queued["parent_type"] == "block" and queued["parent"]["parsl.block.job_id"] == "27650355.cri16sc001"
    assert queued["start"] == naive_ns(job["qtime"], fmt)
    assert queued["events"] == {"submitted": naive_ns(job["qtime"], fmt), "eligible": naive_ns(job["etime"], fmt)}
    assert queued["attrs"]["dnpc.incomplete"] and queued["attrs"]["batch.job.state"] == "F"
    assert queued["attrs"]["batch.job.name"] == "test" and queued["attrs"]["batch.system"] == "pbs"
    with duckdb.connect(str(db), read_only=True) as con:
        kinds = con.execute("SELECT kind FROM disagreements WHERE context_type = 'batch_queued'").fetchall()
    assert kinds == [("incomplete",)]
    assert len(jobs) == 2 and summary.contexts["batch_queued"] == 1  # the other job is not this run's


def test_qstat_job_that_ran(tmp_path):
    """The block's job as if it had run: stime ends the wait and begins the run, obittime ends it."""
    shutil.copytree(PBS, tmp_path / "pbs")
    dump = tmp_path / "pbs" / "runinfo" / "000" / "qstat.txt"
    text = dump.read_text().replace("    etime = Fri Feb  5 15:42:55 2021\n", "    etime = Fri Feb  5 15:42:55 2021\n"
                                    "    stime = Fri Feb  5 15:43:30 2021\n    obittime = Fri Feb  5 15:47:44 2021\n"
                                    "    Exit_status = 271\n", 1)
    dump.write_text(text)
    replay(dump.parent.parent, tmp_path / "ran.duckdb")
    spans = batch_spans(tmp_path / "ran.duckdb")
    fmt = "%a %b %d %H:%M:%S %Y"
    queued, running = spans["batch_queued"], spans["batch_running"]
    assert queued["end"] == running["start"] == naive_ns("Fri Feb  5 15:43:30 2021", fmt)
    assert running["end"] == naive_ns("Fri Feb  5 15:47:44 2021", fmt)
    assert running["attrs"]["batch.job.exit_status"] == 271 and "otel.status_code" not in running["attrs"]
    assert not queued["attrs"].get("dnpc.incomplete") and not running["attrs"].get("dnpc.incomplete")


def test_dnpc2otel_toml_files_errors(slurm_run, tmp_path):
    config = slurm_run.parent / "dnpc2otel.toml"
    config.write_text('files = ["missing.txt"]\n')
    with pytest.raises(UserError, match="missing.txt is not a file"):
        replay(slurm_run, tmp_path / "x.duckdb")
    config.write_text("files = 3\n")
    one_error_line(cli("replay", str(slurm_run), "--no-export"), "files must be a list of paths")
    config.write_text('files = { "../sacct.txt" = "sacct-47948277.txt" }\n')
    one_error_line(cli("replay", str(slurm_run), "--no-export"), "not a path inside the run_dir")
    # a list entry is read under its own name in the run_dir: runinfo/sacct-47948277.txt, the only run's
    config.write_text('files = ["sacct-47948277.txt"]\n')
    assert replay(slurm_run, tmp_path / "list.duckdb").contexts["batch_queued"] == 1
    # a file no definition reads is said, not silently dropped
    config.write_text('files = { "000/accounting.csv" = "sacct-47948277.txt" }\n')
    summary = replay(slurm_run, tmp_path / "unread.duckdb")
    assert any("000/accounting.csv" in w and "no converter reads" in w for w in summary.warnings)


# ---------------------------------------------------------------- sacct --json (slurm_sacct_json.toml)
# sacct-47948277.json is the same jobs as the text dump in Slurm 21.08's JSON shape (see the README there):
# epoch seconds, which need no UTC offset. Midway's clock was CDT (-05:00): the job name's epoch,
# parsl.auto.1532964967, is its submission, which the text dump and parsl.log give as 10:36:07 local time.
MIDWAY_TZ = "-05:00"


def test_sacct_json_gives_the_same_spans_as_the_text_dump(slurm_run, tmp_path):
    text = replay(slurm_run, tmp_path / "text.duckdb", timezone=MIDWAY_TZ)
    (slurm_run.parent / "dnpc2otel.toml").write_text('files = { "000/sacct.json" = "sacct-47948277.json" }\n')
    summary = replay(slurm_run, tmp_path / "json.duckdb", timezone=MIDWAY_TZ)
    assert not [w for w in summary.warnings if "sacct" in w]
    from_text, from_json = batch_spans(tmp_path / "text.duckdb"), batch_spans(tmp_path / "json.duckdb")
    assert set(from_json) == {"batch_queued", "batch_running"} and summary.contexts == text.contexts
    for kind in from_json:
        j, t = from_json[kind], from_text[kind]
        assert (j["start"], j["end"], j["events"]) == (t["start"], t["end"], t["events"])
        assert j["parent"]["parsl.block.job_id"] == "47948277" and j["parent_type"] == "block"
    doc = json.loads((slurm_run.parent / "sacct-47948277.json").read_text())
    job = next(j for j in doc["jobs"] if j["job_id"] == 47948277)
    queued, running = from_json["batch_queued"], from_json["batch_running"]
    assert queued["start"] == job["time"]["submission"] * 10**9 and running["end"] == job["time"]["end"] * 10**9
    for key in ("batch.job.name", "batch.partition", "batch.job.queued_seconds"):
        assert queued["attrs"][key] == from_text["batch_queued"]["attrs"][key]
    for key in ("batch.job.state", "batch.job.exit_code", "batch.system"):
        assert running["attrs"][key] == from_text["batch_running"]["attrs"][key]


def test_a_broken_sacct_json_is_one_warning_and_the_rest_converts(slurm_run, tmp_path):
    good = (slurm_run.parent / "sacct-47948277.json").read_text()
    (slurm_run / "000" / "sacct.json").write_text(good[: len(good) // 2])  # cut mid-document
    summary = replay(slurm_run, tmp_path / "broken.duckdb")
    said = [w for w in summary.warnings if "sacct.json" in w]
    assert len(said) == 1 and "not a JSON document" in said[0] and "000/sacct.json" in said[0]
    # the text dump the dnpc2otel.toml names still gives the block its wait; the run converts as without it
    assert summary.contexts["batch_queued"] == 1 and summary.contexts["block"] == 1


def test_sacct_json_of_a_newer_slurm_with_set_number_times(slurm_run, tmp_path):
    """data_parser v0.0.40 on: the state is an array and the return code a {"set", "number"} object (as in the
    23.11 and 25.05 samples); times in that object form (no sample has them) are read alike. The dump lies in
    the run directory, read without any configuration."""
    doc = json.loads((slurm_run.parent / "sacct-47948277.json").read_text())
    for job in doc["jobs"]:
        job["state"]["current"] = [job["state"]["current"]]
        job["time"] = {k: {"set": True, "infinite": False, "number": v} for k, v in job["time"].items()}
        job["exit_code"]["return_code"] = {"set": True, "infinite": False, "number": 0}
    (slurm_run / "000" / "sacct.json").write_text(json.dumps(doc))
    (slurm_run.parent / "dnpc2otel.toml").unlink()
    db = tmp_path / "newer.duckdb"
    replay(slurm_run, db, timezone=MIDWAY_TZ)
    spans = batch_spans(db)
    job = next(j for j in doc["jobs"] if j["job_id"] == 47948277)
    assert spans["batch_running"]["start"] == job["time"]["start"]["number"] * 10**9
    assert spans["batch_running"]["attrs"]["batch.job.state"] == "COMPLETED"
    assert spans["batch_running"]["attrs"]["batch.job.exit_code"] == "0:0"


def test_sacct_json_in_the_run_dir_belongs_to_its_only_run(slurm_run, tmp_path):
    """runinfo/sacct.json names no run: its observations have no run key, and the core ties them to the run."""
    (slurm_run.parent / "dnpc2otel.toml").unlink()
    shutil.copy(slurm_run.parent / "sacct-47948277.json", slurm_run / "sacct.json")
    db = tmp_path / "rundir.duckdb"
    summary = replay(slurm_run, db, timezone=MIDWAY_TZ)
    assert summary.contexts["batch_queued"] == summary.contexts["batch_running"] == 1
    assert batch_spans(db)["batch_running"]["parent"]["parsl.block.job_id"] == "47948277"
