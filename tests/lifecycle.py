"""Lifecycle lines of Parsl's own logs, independent of the converters: which lines of a real run state a
lifecycle fact (workflow start/end, task submit/launch/memo/complete/fail, dependency waits, blocks,
manager registration and loss, executor-task dispatch and result, worker receive/complete), so that a
test can measure how many of them a replay turned into observations.

The line-header formats and message templates are Parsl's, release by release (0.5 of 2018 to 2026), taken
from Parsl's source at its tags and checked against the real runs in tests/data/realworld. A template
marked 'noise' states no lifecycle fact (polling, capacity, DEBUG chatter); so do a few 'life' ones left out
here on purpose (EXCLUDED: version strings, end-of-run summaries, stdout paths, the executor's push line
that names no task, capacity and heartbeat polls, a DEBUG pending echo that repeats the submit line).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

KINDS = [  # (kind, regex over the path relative to runinfo/)
    ('parsl.log', r'(?:^|/)parsl\.log$'),
    ('interchange.log', r'(?:^|/)interchange\.log$'),
    ('manager.log', r'(?:^|/)manager\.log$'),
    ('funcx_worker_N.log', r'(?:^|/)funcx_worker_\d+\.log$'),
    ('worker_N.log', r'(?:^|/)worker_\d+\.log$'),
    ('database_manager.log', r'(?:^|/)database_manager\.log$'),
    ('monitoring.db', r'(?:^|/)monitoring\.db$'),
    ('wq transaction_log', r'(?:^|/)transaction_log$'),
    ('vine transactions', r'vine-logs/transactions$'),
    ('vine performance', r'vine-logs/performance$'),
]


def kind_of(rel):
    for k, rx in KINDS:
        if re.search(rx, rel):
            return k
    return 'other'


TS = r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d'
FORMATS = [
    ('F-epoch  %(created)f %(asctime)s %(processName)s-%(process)d %(threadName)s-%(thread)d %(name)s:%(lineno)d %(funcName)s %(levelname)s: %(message)s  [parsl.log 2022.06.30+; interchange/pool 2026.01.26+]',
     re.compile(r'^\d+\.\d+ ' + TS + r' \S+ \S+ (?P<logger>[^\s:]+):\d+ \S+ (?P<level>[A-Z]+): ?(?P<message>.*)$')),
    ('F-rank   %(asctime)s[.%(msecs)03d] %(name)s:%(lineno)d Rank:{rank} [%(levelname)s]  %(message)s  [process_worker_pool 0.7.0 -> 2022.08.02]',
     re.compile(r'^' + TS + r'(?:\.\d{3})? (?P<logger>[^\s:]+):\d+ Rank:\S+ \[(?P<level>[A-Z]+)\]  ?(?P<message>.*)$')),
    ('F-ixproc %(asctime)s.%(msecs)03d %(name)s:%(lineno)d %(processName)s(%(process)d) %(threadName)s [%(funcName)s] [%(levelname)s]  %(message)s  [interchange 2022.07.29 -> 2026.01.19]',
     re.compile(r'^' + TS + r'\.\d{3} (?P<logger>[^\s:]+):\d+ \S+\(\d+\) \S+(?: \S+)? \[(?P<level>[A-Z]+)\]  ?(?P<message>.*)$')),
    ('F-pidthr %(asctime)s.%(msecs)03d %(name)s:%(lineno)d %(process)d %(threadName)s [%(levelname)s]  %(message)s  [process_worker_pool 2022.08.02 -> 2026.01.19]',
     re.compile(r'^' + TS + r'\.\d{3} (?P<logger>[^\s:]+):\d+ \d+ \S+ \[(?P<level>[A-Z]+)\]  ?(?P<message>.*)$')),
    ('F-dbm    %(asctime)s.%(msecs)03d %(name)s:%(lineno)d [%(levelname)s] [%(threadName)s %(thread)d] %(message)s  [database_manager.log 1.1.0+]',
     re.compile(r'^' + TS + r'\.\d{3} (?P<logger>[^\s:]+):\d+ \[(?P<level>[A-Z]+)\] \[.*? \d+\] (?P<message>.*)$')),
    ('F-ms     %(asctime)s.%(msecs)03d %(name)s:%(lineno)d [%(levelname)s]  %(message)s  [parsl.log 0.7.2 -> 2022.06.30; interchange 0.7.2 -> 2022.07.29]',
     re.compile(r'^' + TS + r'\.\d{3} (?P<logger>[^\s:]+):\d+ \[(?P<level>[A-Z]+)\]  (?P<message>.*)$')),
    ('F-sec    %(asctime)s %(name)s:%(lineno)d [%(levelname)s]  %(message)s  [parsl.log 0.5 -> 0.7.1; interchange 0.7.0-0.7.1; database_manager.log <= 0.9.0]',
     re.compile(r'^' + TS + r' (?P<logger>[^\s:]+):\d+ \[(?P<level>[A-Z]+)\]  (?P<message>.*)$')),
    ('F-cct    <usec epoch> <manager pid> <record>  [Work Queue / TaskVine transactions]',
     re.compile(r'^(?P<logger>)(?P<level>)\d{10,} \d+ (?P<message>.*?)\s*$')),
    ('F-cct#   # comment (cctools transactions header)', re.compile(r'^#(?P<logger>)(?P<level>)(?P<message>.*)$')),
]

# ----------------------------------------------------------------------------------- templates
# (id, kinds, regex over the message, category, releases). category: 'life' = lifecycle line (task, try,
# block, manager, worker, run events), 'noise' = frequent line carrying no lifecycle fact.
# A regex group named 'v' is appended to the id (e.g. the cctools record state).
P, IX, MG, WK, DB, CT = ('parsl.log',), ('interchange.log',), ('manager.log',), ('worker_N.log', 'funcx_worker_N.log'), ('database_manager.log',), ('wq transaction_log', 'vine transactions')
MB = r"(?:b'[^']*'|\S+)"   # manager id as printed: b'3f2a...' (or a str)
TEMPLATES = [
    # --- DataFlowKernel: run
    ('dfk.start', P, r'^Starting DataFlowKernel with config', 'life', 'all'),
    ('dfk.parsl_version', P, r'^Parsl version: \S+$', 'life', 'all'),
    ('dfk.libsubmit_version', P, r'^Libsubmit version: ', 'life', '<= 0.6.x'),
    ('dfk.run_id', P, r'^Run id is: \S+$', 'life', '0.6.0+'),
    ('dfk.cleanup', P, r'^DFK cleanup (?:initiated|complete)$', 'life', 'all'),
    ('dfk.cleanup_atexit', P, r'^DFK cleanup because python process is exiting$', 'life', '2022+'),
    ('dfk.summary_state', P, r'^Tasks in state States\.(?P<v>\w+): ', 'life', '0.6.0+ (end-of-run state of every task)'),
    ('dfk.workflow_name', P, r'^Using \S+ as workflow name$', 'life', '2021 desc / 2022+'),
    # --- DataFlowKernel: task
    ('task.submitted.tasks_list', P, r'^Task \d+ submitted for App \S+, waiting on tasks \[.*\]$', 'life', '0.5.0 -> 0.9.0'),
    ('task.submitted.waiting_message', P, r'^Task \d+ submitted for App \S+, (?:not waiting on any dependency|waiting on .+)$', 'life', '1.0.0+'),
    ('task.will_be_sent', P, r'^Task \d+ will be sent to executor \S+$', 'life', '1.1.0+ (DEBUG)'),
    ('task.launched_on_site', P, r'^Task \d+ launched on site \S+$', 'life', '0.5.x'),
    ('task.launched_on_executor', P, r'^Task \d+ launched on executor \S+$', 'life', '0.6.0 -> 1.2.0'),
    ('task.launched_with_appfuture', P, r'^Task \d+ launched with AppFut(?:ure)?: ?.*$', 'life', '0.5.x -> 0.6.x (DEBUG)'),
    ('task.set_to_pending', P, r'^Task \d+ set to pending state with AppFuture: .*$', 'life', '0.7.0 -> 2026.04.13 (DEBUG)'),
    ('task.try_launched', P, r'^Parsl task \d+ try \d+ launched on executor \S+?(?: with executor id \S+)?$', 'life', '2022.10.04+ (1.3.0dev0)'),
    ('task.memo.will_not_be_memoized', P, r'^Task \d+ will not be memoized$', 'life', '1.0.0+ (DEBUG)'),
    ('task.memo.hash', P, r'^Task \d+ has memoization hash \S+$', 'life', '1.0.0+ (DEBUG)'),
    ('task.memo.no_result_in_cache', P, r'^Task \d+ had no result in cache$', 'life', '1.0.0+'),
    ('task.memo.using_cache', P, r'^Task \d+ using result from cache$', 'life', '0.5.1+'),
    ('task.memo.reusing_cached', P, r'^Reusing cached result for task \d+$', 'life', '0.7.0+'),
    ('task.launch_if_ready_skip', P, r'^Task \d+ (?:has outstanding dependencies|is not pending), so launch_if_ready skipping$', 'life', '2022.10.04+ (DEBUG)'),
    ('task.completed.bare', P, r'^Task \d+ completed$', 'life', '<= 1.0.0'),
    ('task.completed.states', P, r'^Task \d+ completed \(\w+ -> \w+\)$', 'life', '1.1.0 -> 2026.04.13'),
    ('task.changing_state', P, r'^Task \d+ (?:changing state from \w+ to \w+|initializing state to \w+)$', 'life', '2026.04.20+'),
    ('task.failed.bare', P, r'^Task \d+ failed$', 'life', '<= 1.0.0 (ERROR+traceback <= 0.8.0, DEBUG 0.9-1.0)'),
    ('task.try_failed', P, r'^Task \d+ try \d+ failed(?: with exception of type \S+)?$', 'life', '1.1.0+'),
    ('task.marked_for_retry', P, r'^Task \d+ marked for retry$', 'life', '<= 2026.04.13'),
    ('task.failed_after_retries', P, r'^Task \d+ failed after \d+ retry attempts', 'life', 'all'),
    ('task.dep_fail', P, r'^Task \d+ (?:deferred|failed) due to dependency failure', 'life', 'all (deferred <= 0.6.x)'),
    ('task.join_inner_failed', P, r'^Task \d+ failed due to failure of (?:an )?inner join future$', 'life', '1.1.0+'),
    ('task.std_streams', P, r'^Standard (?:output|error) for task \d+ available at ', 'life', '0.8.0+'),
    ('task.monitoring_echo', P, r'^Sending message MessageType\.TASK_INFO, ', 'life', '0.8 -> 2023 with monitoring (DEBUG): state echo with try_id'),
    ('workflow.monitoring_echo', P, r'^Sending message MessageType\.WORKFLOW_INFO, ', 'life', 'with monitoring (DEBUG)'),
    # --- blocks / scaling
    ('block.launched.colon', P, r'^Launched block ?: ?\S+?:\S+$', 'life', 'IPP 0.5.x "block : i:x", 0.6 "block: i:x"; IPP/HTEX 0.7.x "block i:x"'),
    ('block.launched.arrow', P, r'^Launched block \S+->\S+$', 'life', 'HTEX 0.8.0 -> 1.1.0 (executor.py), status_handling 1.2.0 (and 2021 master)'),
    ('block.launched.on_executor', P, r'^(?:\[Scaling executor [^\]]+\] )?Launched block \S+ (?:on executor \S+ )?with job ID \S+$', 'life', '2022.10.04+'),
    ('block.scaling_out', P, r'^(?:\[Scaling executor [^\]]+\] )?(?:Scaling out by \d+ blocks|Allocated block ID \S+)$', 'life', '2022.10.04+'),
    ('block.requesting_more', P, r'^Requesting (?:\d+ more blocks|single (?:slot|block))$', 'life', 'strategy, all'),
    ('block.status_message', P, r"^Sending (?:block monitoring )?message:? \[\{'run_id'", 'life', '1.1.0+ with monitoring (DEBUG)'),
    ('block.provider_job', P, r'^(?:coerced job_id \S+ -> \S+|Terminating job/proc_id: \S+)$', 'life', 'providers'),
    ('block.hold_manager', P, r'^(?:\[HOLD_BLOCK\]: )?Sending hold to manager: ?\S+$', 'life', 'HTEX 0.7 -> 2022'),
    ('htex.push_function', P, r'^Pushing function .* to queue with args ', 'life', 'HTEX submit (DEBUG), one per executor task (ids 1,2,3... in this order)'),
    ('noise.strategy_status', P, r'^(?:Tasks:\d+ Slots:\d+ Parallelism:|Executor \S+ has \d+ active tasks)', 'noise', 'strategy (DEBUG)'),
    ('noise.task_status_poller', P, r'^Polling', 'noise', '1.0+'),
    ('noise.staging', P, r'^(?:Adding output dependencies|Not performing (?:input|output) staging|stage_(?:in|out) checking|NoOpFileStaging checking|Making clean copy of File|Submitting stage out|No stageout dependency|Creating DataFuture)', 'noise', ''),
    # --- interchange
    ('ix.fetched_task', IX, r'^(?:\[TASK_PULL_THREAD\] )?Fetched task:\d+$', 'life', '0.7.0 -> 2022-09 (DEBUG; a running count, = HTEX id in practice)'),
    ('ix.fetched_so_far', IX, r'^Fetched \d+ tasks so far$', 'life', '2022.10.04 -> 2025.01.20 (DEBUG)'),
    ('ix.sent_tasks', IX, r'^(?:\[MAIN\] )?Sent tasks: \[[\d, ]*\] to (?:manager )?' + MB + r'$', 'life', '0.7.0+ (INFO 0.7.x, DEBUG 0.8.0+)'),
    ('ix.registration_info', IX, r'^(?:\[MAIN\] )?Registration info for manager ' + MB + r': \{.*\}$', 'life', '0.7.0+'),
    ('ix.adding_manager', IX, r'^(?:\[MAIN\] )?Adding manager: ' + MB + r' to ready queue$', 'life', '0.7.0 -> 2025.05.26'),
    ('ix.compatible_version', IX, r'^(?:\[MAIN\] )?Manager ' + MB + r' has (?:compatible|incompatible) (?:Parsl |Python )?version', 'life', '0.7.2+'),
    ('ix.manager_requested', IX, r'^(?:\[MAIN\] )?Manager ' + MB + r' requested \d+ tasks$', 'life', '0.7.0 -> 2022 (DEBUG)'),
    ('ix.manager_heartbeat', IX, r'^(?:\[MAIN\] )?Manager ' + MB + r' sen(?:ds|t) heartbeat', 'life', '0.7.0+ (DEBUG)'),
    ('ix.manager_capacity', IX, r'^(?:\[MAIN\] )?Manager ' + MB + r' (?:has free[_ ]capacity \d+|still has free_capacity \d+|is now saturated)$', 'life', '0.7.2+ (DEBUG since 0.8.0)'),
    ('ix.result_batch', IX, r'^(?:\[MAIN\] )?Got \d+ result items in batch', 'life', '0.7.0+ (DEBUG)'),
    ('ix.current_tasks', IX, r'^(?:\[MAIN\] )?Current tasks(?: on manager \S+)?: \[.*\]$', 'life', '0.7.0+ (DEBUG): tasks still on the manager after a result batch'),
    ('ix.removing_task', IX, r'^Removing task \d+ from manager', 'life', '2022.10.04+ (DEBUG)'),
    ('ix.heartbeats_missed', IX, r'^(?:\[MAIN\] )?Too many heartbeats missed for manager ' + MB, 'life', '0.7.0+'),
    ('ix.tasks_lost', IX, r'^(?:Raising ManagerLost for htex tasks|Cancelling htex tasks) ', 'life', '2022.10.04+'),
    ('ix.hold_worker', IX, r'^(?:\[CMD\] )?Received HOLD_WORKER for ' + MB + r'$', 'life', '0.7.0+'),
    ('ix.monitoring_message', IX, r'^Sending message \{.*\} to hub$', 'life', '0.9.0+ with monitoring (INFO): manager record incl. tasks'),
    ('ix.processed_summary', IX, r'^Processed \d+ tasks in [\d.]+ seconds$', 'life', 'all'),
    ('ix.start', IX, r'^(?:Initializing Interchange process|Attempting connection to client|Connected to client|Bound to ports? |Platform info: |Incoming ports bound)', 'life', 'all'),
    ('noise.ix_loop', IX, r'^(?:\[TASK_PULL_THREAD\] \d+ tasks in internal queue|Managers count |(?:\[MAIN\] )?(?:starting|leaving|entering|ending) |(?:\[MAIN\] )?either no interesting managers|BENC: |(?:\[COMMAND\] )?(?:is alive|Reply: |Received command request|Command Server Starting))', 'noise', 'interchange main loop (DEBUG)'),
    # --- manager.log
    ('mgr.got_tasks.thread', MG, r'^\[TASK_PULL_THREAD\] Got tasks: \[[\d, ]*\] of \d+$', 'life', '0.7.0 -> 2022.08.02 (DEBUG)'),
    ('mgr.got_tasks.cumulative', MG, r'^Got (?:executor )?tasks: \[[\d, ]*\], cumulative count of tasks: \d+$', 'life', '2022.08.02+ ("executor tasks" from 2023.01.09)'),
    ('mgr.start', MG, r'^(?:Manager started|Manager connected(?: to interchange)?|Manager will spawn \d+ workers|Manager ID: \S+|Block ID: \S+|Loop start|Connection to Interchange successful on \S+)$', 'life', 'all'),
    ('mgr.worker_registered_funcx', MG, r'^Received registration message from worker: \d+$', 'life', 'funcx fork 2019'),
    ('mgr.worker_died', MG, r'^(?:\[WORKER_WATCHDOG_THREAD\] )?Worker \d+ (?:has died|was busy when it died|was not busy when it died|has been restarted)$', 'life', '0.9.0+'),
    ('mgr.put_exception', MG, r'^(?:\[WORKER_WATCHDOG_THREAD\] )?Putting exception for (?:executor )?task \d+ in the pending result queue$', 'life', '0.9.0+'),
    ('mgr.lost_interchange', MG, r'(?:\[TASK_PULL_THREAD\] )?Missing contact with interchange beyond heartbeat_threshold', 'life', 'all'),
    ('mgr.exit', MG, r'^(?:process_worker_pool ran for [\d.]+ seconds|Process worker pool exiting (?:normally|with an exception)|process_worker_pool exiting.*|\[MAIN\] Received kill event.*|Received kill event.*)$', 'life', 'all'),
    ('mgr.ix_heartbeat', MG, r'^(?:Got heartbeat from interchange|Updating time of last heartbeat from interchange at [\d.]+|Return from heartbeat: .*)$', 'life', 'all (DEBUG)'),
    ('noise.mgr_poll', MG, r'^(?:\[TASK_PULL_THREAD\] )?(?:Requesting tasks: \d+|ready workers: ?\d+, pending tasks: ?\d+|No incoming tasks)$', 'noise', 'manager task-pull loop (DEBUG)'),
    ('noise.mgr_monitoring_wrapper', MG, r'^wrapped: ', 'noise', 'DESC fork 2021 monitor_wrapper steps'),
    # --- worker_N.log / funcx_worker_N.log
    ('wk.started', WK, r'^Worker \d+ started$', 'life', 'all'),
    ('wk.received.task', WK, r'^Received task \d+$', 'life', '0.7.0 -> 2023.01.02'),
    ('wk.completed.task', WK, r'^Completed task \d+$', 'life', '0.7.0 -> 2023.01.02'),
    ('wk.finished.task', WK, r'^All processing finished for task \d+$', 'life', '2022.08.02 -> 2023.01.02'),
    ('wk.received.executor_task', WK, r'^Received executor task \d+$', 'life', '2023.01.09+'),
    ('wk.completed.executor_task', WK, r'^Completed executor task \d+$', 'life', '2023.01.09+'),
    ('wk.finished.executor_task', WK, r'^All processing finished for executor task \d+$', 'life', '2023.01.09+'),
    ('wk.exception', WK, r'^Caught an exception: ', 'life', '0.9.0+'),
    ('wk.funcx_registration', WK, r'^(?:Registered with manager successful|Connecting to \S+(?: for registration)?)$', 'life', 'funcx fork 2019'),
    # --- database_manager.log
    ('dbm.start', DB, r'^(?:Initializing Database Manager process|Starting dbm in dbm starter)$', 'life', '0.7.2+ / 1.0.0+'),
    ('dbm.queue_thread', DB, r'^Starting processing for queue \w+$', 'life', '1.1.0+'),
    ('dbm.will_put', DB, r'^Will put .* to pending (?:node|block) queue$', 'life', 'DESC fork 2021 only'),
    ('dbm.cleanup', DB, r'^Database Manager cleanup (?:initiated|complete)', 'life', 'all'),
    ('dbm.end', DB, r'^End of dbm_starter$', 'life', '1.0.0+'),
    # --- cctools transactions (covered by FORMATS.md; counted for completeness)
    ('cct.manager', CT, r'^(?:MANAGER|MASTER) (?:\d+ )?(?P<v>START|END)\b', 'life', 'cctools'),
    ('cct.task', CT, r'^TASK \d+ (?P<v>[A-Z_]+)\b', 'life', 'cctools'),
    ('cct.worker', CT, r'^WORKER \S+ (?:\S+ )?(?P<v>CONNECTION|DISCONNECTION|RESOURCES|CACHE[-_]UPDATE|TRANSFER)\b', 'life', 'cctools'),
    ('cct.library', CT, r'^LIBRARY \d+ (?P<v>[A-Z_]+)\b', 'life', 'cctools TaskVine'),
    ('cct.category', CT, r'^CATEGORY ', 'noise', 'cctools'),
    ('cct.transfer', CT, r'^TRANSFER ', 'life', 'cctools'),
]
TEMPLATES = [(i, k, re.compile(rx), c, r) for i, k, rx, c, r in TEMPLATES]
EXCLUDED = ['block.provider_job', 'dfk.cleanup_atexit', 'dfk.libsubmit_version', 'dfk.summary_state', 'dfk.workflow_name', 'htex.push_function', 'ix.fetched_so_far', 'ix.manager_capacity', 'ix.manager_heartbeat', 'ix.manager_requested', 'ix.monitoring_message', 'ix.processed_summary', 'ix.result_batch', 'ix.start', 'mgr.ix_heartbeat', 'task.memo.will_not_be_memoized', 'task.set_to_pending', 'task.std_streams', 'task.will_be_sent', 'workflow.monitoring_echo']


def message_of(line: str) -> str | None:
    for _name, rx in FORMATS:
        m = rx.match(line)
        if m:
            return m.group("message")
    return None


def lifecycle_lines(run_dir: Path) -> dict[tuple[str, int], str]:
    """{(path relative to run_dir, 1-based line): template id} of every lifecycle line of the run_dir."""
    found: dict[tuple[str, int], str] = {}
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(run_dir).as_posix()
        kind = kind_of(rel)
        if kind in ("other", "monitoring.db"):
            continue
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh.read().split(b"\n"), 1):
                msg = message_of(raw.decode("utf-8", "replace"))
                if msg is None:
                    continue
                for tid, kinds, rx, category, _releases in TEMPLATES:
                    if kind in kinds and rx.search(msg):
                        if category == "life" and tid not in EXCLUDED:
                            found[(rel, n)] = tid
                        break
    return found


def understood(duck: Path) -> set[tuple[str, int]]:
    """(source, line) of every observation of a replay."""
    with duckdb.connect(str(duck), read_only=True) as con:
        return set(con.execute("SELECT DISTINCT source, line FROM observations WHERE line IS NOT NULL").fetchall())


def coverage(run_dir: Path, duck: Path) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """(lifecycle lines, those turned into observations, {template: (lines, understood)})."""
    lines = lifecycle_lines(run_dir)
    seen = understood(duck)
    per: dict[str, list[int]] = {}
    for key, tid in lines.items():
        c = per.setdefault(tid, [0, 0])
        c[0] += 1
        c[1] += key in seen
    return len(lines), sum(key in seen for key in lines), {k: (a, b) for k, (a, b) in sorted(per.items())}
