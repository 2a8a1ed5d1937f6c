"""A small real Parsl workflow for the tests: successes, an app failure with a retry, a dependency
failure, a join of dependencies, and a bash app, on a HighThroughputExecutor (LocalProvider) and/or a
ThreadPoolExecutor.

Usage: python small.py RUN_DIR [--executor htex|threads] [--tasks N] [--no-monitoring] [--worker-debug] [--memo]
"""

import argparse
import os
import sys

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from parsl.providers import LocalProvider

POOL = "pool"


@parsl.python_app(executors=[POOL])
def work(x, d=0.01):
    import time

    time.sleep(d)
    return x * 2


@parsl.python_app(executors=[POOL])
def flaky(x):
    if x % 2 == 0:
        raise ValueError(f"flaky {x}")
    return x


@parsl.python_app(executors=["threads"])
def combine(*xs):
    return sum(xs)


@parsl.python_app(executors=[POOL], cache=True)
def cached(x):
    return x + 1


@parsl.bash_app(executors=[POOL])
def shell(i, stdout=parsl.AUTO_LOGNAME, stderr=parsl.AUTO_LOGNAME):
    return f"echo hello {i}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--executor", choices=["htex", "threads"], default="htex")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--no-monitoring", action="store_true")
    p.add_argument("--worker-debug", action="store_true")
    p.add_argument("--memo", action="store_true", help="also re-run a cached app after its result is known")
    args = p.parse_args()
    run_dir = os.path.abspath(args.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    if args.executor == "htex":
        pool = HighThroughputExecutor(
            label=POOL, max_workers_per_node=2, worker_debug=args.worker_debug,
            heartbeat_period=2, heartbeat_threshold=6,
            provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
        )
    else:
        pool = ThreadPoolExecutor(label=POOL, max_threads=2)
    extra = {}
    if not args.no_monitoring:
        from parsl.monitoring.monitoring import MonitoringHub

        extra["monitoring"] = MonitoringHub(
            hub_address="127.0.0.1", resource_monitoring_interval=1,
            logging_endpoint="sqlite:///" + os.path.join(run_dir, "monitoring.db"))
    config = Config(executors=[pool, ThreadPoolExecutor(label="threads", max_threads=2)],
                    run_dir=run_dir, retries=1, **extra)
    with parsl.load(config):
        doubled = [work(i) for i in range(args.tasks)]
        flakies = [flaky(i) for i in range(3)]
        total = combine(*doubled)
        dep_fail = combine(flakies[0], doubled[0])
        shells = [shell(i) for i in range(2)]
        if args.memo:  # the first call fills the cache; the later ones must reuse it
            cached(1).result()
            hits = [cached(1) for _ in range(2)]
            print("memo", [h.result() for h in hits])
        print("total", total.result())
        for f in flakies + [dep_fail] + shells:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - failures are part of the workload
                print("failed:", type(e).__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
