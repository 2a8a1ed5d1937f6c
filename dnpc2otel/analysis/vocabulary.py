"""The workflow system's words the analysis views use, in one place: which context types play which role,
which span attributes carry task ids, apps, hosts and slots, and which events mark a try's milestones.

These are Parsl's (and its executors': HTEX, Work Queue, TaskVine, thread pools), as its converter
definitions name them; every other module of `analysis` is written against the roles and milestones
declared here, never against an event or attribute name. Another workflow system would bring its own.
"""

from __future__ import annotations

from ..sources.templates import json_member_path, quote_literal

# context type → role in the analysis
ROLES: dict[str, str] = {
    "workflow": "run",
    "task": "task",
    "try": "try",
    "executor": "executor",
    "block": "block",
    "executor_task": "executor_task",
    # what runs a try on a node: HTEX worker execution, Work Queue / TaskVine task
    "worker_execution": "execution",
    "wq_task": "execution",
    "vine_task": "execution",
    # a node: what holds slots (HTEX manager, cctools worker)
    "manager": "node",
    "wq_worker": "node",
    "vine_worker": "node",
    # a slot of a node (an HTEX worker process)
    "worker": "slot",
}

# role-neutral column → span attributes that carry it, best first
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "task_id": ("parsl.task.id",),
    "try_id": ("parsl.try.id",),
    "app": ("parsl.app.name",),
    "executor": ("parsl.executor.label",),
    "block_id": ("parsl.block.id",),
    "host": ("host.name",),
    "state": ("parsl.try.final_state", "parsl.task.state"),
    # a node's slots: HTEX workers per manager, cctools worker cores
    "slots": ("parsl.htex.manager.worker_count", "cctools.worker.cores"),
    # a node's memory in bytes (cctools gives MB: see MEGABYTE_ATTRIBUTES)
    "node_memory": ("host.memory.total", "cctools.worker.memory_mb"),
}
MEGABYTE_ATTRIBUTES = ("cctools.worker.memory_mb",)

# event attributes of an execution (cctools task): slots (cores) it held on its node, the memory it asked
# for (a JSON text like {"memory":[1000,"MB"]}), was given and was measured to use (MB)
SLOTS_HELD = "cctools.task.cores_allocated"
MEMORY_REQUESTED_JSON = "cctools.task.resources_requested"
MEMORY_ALLOCATED_MB = "cctools.task.memory_allocated_mb"
MEMORY_MEASURED_MB = "cctools.task.measured.memory_mb"

# the resource-usage sample event of a try, and its attributes
RESOURCE_EVENT = "resource"
RESOURCE_ATTRIBUTES: dict[str, str] = {
    "pid": "process.pid",
    "cpu_user_s": "process.cpu.time.user",
    "cpu_system_s": "process.cpu.time.system",
    "rss_bytes": "process.memory.resident",
    "vms_bytes": "process.memory.virtual",
    "memory_percent": "process.memory.percent",
    "read_bytes": "process.disk.read",
    "write_bytes": "process.disk.write",
}

# a task's final state that means "never ran: a dependency failed", and the link to a task it waited for
DEPENDENCY_FAILURE_STATE = "dep_fail"
DEPENDS_ON = "depends_on"

# a block's event that says its batch job runs (polled: the first node's start is more precise)
BLOCK_RUNNING = "RUNNING"

# the milestones of a try, in the order they happen; each part of a try's life runs from one milestone to
# the next and is named after the milestone it starts at (PARTS)
MILESTONES = ("try_start", "executor_received", "dispatched", "worker_started", "worker_finished", "try_end")
PARTS = {
    "try_start": "launch",               # the DFK hands the try to its executor
    "executor_received": "queued",       # waiting in the executor (interchange, Work Queue / TaskVine queue)
    "dispatched": "dispatch",            # on its way to a worker (manager, input transfer, deserialising)
    "worker_started": "execution",       # running on the worker
    "worker_finished": "result_return",  # the result travels back to the DFK
}
# which conflicting milestone to distrust: when two milestones are out of order, the less trusted is dropped
TRUST = {"worker_started": 4, "worker_finished": 4, "dispatched": 3, "executor_received": 2}

# interior milestone → (context type, event, preference: lower wins, meaning)
EVENTS: tuple[tuple[str, str, str, int, str], ...] = (
    ("executor_received", "executor_task", "interchange_queued", 1, "HTEX interchange put the task in its queue"),
    ("executor_received", "wq_task", "WAITING", 1, "Work Queue accepted the task"),
    ("executor_received", "vine_task", "READY", 1, "TaskVine accepted the task"),
    ("executor_received", "vine_task", "WAITING", 1, "TaskVine accepted the task (older releases)"),
    ("executor_received", "try", "launched", 9, "the DFK's submit to the executor returned (no executor log)"),
    ("dispatched", "executor_task", "dispatched", 1, "HTEX interchange sent the task to a manager"),
    ("dispatched", "wq_task", "RUNNING", 1, "Work Queue sent the task to a worker"),
    ("dispatched", "vine_task", "RUNNING", 1, "TaskVine sent the task to a worker"),
    ("worker_started", "worker_execution", "received", 1, "an HTEX worker received the task"),
    ("worker_started", "try", "running", 2, "monitoring: the app began running on its worker"),
    ("worker_finished", "worker_execution", "completed", 1, "an HTEX worker completed the task"),
    ("worker_finished", "try", "running_ended", 2, "monitoring: the app ended on its worker"),
    ("worker_finished", "wq_task", "WAITING_RETRIEVAL", 3, "Work Queue: the worker reported the task done"),
    ("worker_finished", "vine_task", "WAITING_RETRIEVAL", 3, "TaskVine: the worker reported the task done"),
)
# an optional task milestone after its last try: a join app waits for the tasks it returned
JOINING = ("task", "joining")


def attribute(column: str, alias: str = "") -> str:
    """SQL: the first set value of a role-neutral column's attributes, as text."""
    a = f"{alias}.attributes" if alias else "attributes"
    keys = ATTRIBUTES[column]
    values = [_scaled(f"json_extract_string({a}, {quote_literal(json_member_path(k))})", k) for k in keys]
    return values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"


def _scaled(expr: str, key: str) -> str:
    return f"CAST(TRY_CAST({expr} AS DOUBLE) * 1048576 AS BIGINT)::VARCHAR" if key in MEGABYTE_ATTRIBUTES else expr


def member(key: str, alias: str = "", column: str = "attributes") -> str:
    """SQL: one attribute (any key) of a JSON column as text."""
    a = f"{alias}.{column}" if alias else column
    return f"json_extract_string({a}, {quote_literal(json_member_path(key))})"


def roles_sql() -> str:
    return _values(("context_type", "role"), sorted(ROLES.items()))


def events_sql() -> str:
    rows = [(m, ct, ev, pref, TRUST[m] * 10 - pref, meaning) for m, ct, ev, pref, meaning in EVENTS]
    return _values(("milestone", "context_type", "event", "preference", "trust", "meaning"), rows)


def _values(columns: tuple[str, ...], rows: list[tuple]) -> str:
    def lit(v: object) -> str:
        return str(v) if isinstance(v, int) else quote_literal(str(v))

    body = ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)
    return f"SELECT * FROM (VALUES {body}) AS t({', '.join(columns)})"
