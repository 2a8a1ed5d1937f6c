"""A real HighThroughputExecutor run with a fault: one task kills its manager on its first try.

Two blocks (LocalProvider), so the executor keeps a healthy manager: the interchange misses the killed
manager's heartbeats, fails its tasks with ManagerLost, and the DFK retries them - on the other manager,
as new HTEX tasks. The killer task succeeds on its retry (a marker file tells it it already struck).

Usage: python htex_faults.py RUN_DIR [--worker-debug] [--no-monitoring]
"""

import argparse
import os
import sys

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

POOL = "pool"


@parsl.python_app(executors=[POOL])
def work(x, d=0.05):
    import time

    time.sleep(d)
    return x * 2


@parsl.python_app(executors=[POOL])
def kill_my_manager_once(marker):
    import os
    import signal
    import time

    if os.path.exists(marker):
        return "second try"
    with open(marker, "w") as f:
        f.write(str(os.getppid()))
    time.sleep(0.2)
    os.kill(os.getppid(), signal.SIGKILL)  # the worker's parent is its manager (process_worker_pool)
    time.sleep(3)
    return "unreachable"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--worker-debug", action="store_true")
    p.add_argument("--no-monitoring", action="store_true")
    args = p.parse_args()
    run_dir = os.path.abspath(args.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    pool = HighThroughputExecutor(
        label=POOL, max_workers_per_node=2, worker_debug=args.worker_debug,
        heartbeat_period=2, heartbeat_threshold=6,
        provider=LocalProvider(init_blocks=2, min_blocks=0, max_blocks=2),
    )
    extra = {}
    if not args.no_monitoring:
        from parsl.monitoring.monitoring import MonitoringHub

        extra["monitoring"] = MonitoringHub(
            hub_address="127.0.0.1", resource_monitoring_interval=1,
            logging_endpoint="sqlite:///" + os.path.join(run_dir, "monitoring.db"))
    config = Config(executors=[pool], run_dir=run_dir, retries=1, **extra)
    with parsl.load(config):
        marker = os.path.join(os.path.dirname(run_dir), "killed-a-manager")  # outside the run_dir
        before = [work(i) for i in range(4)]
        [f.result() for f in before]  # both managers are up and working
        killer = kill_my_manager_once(marker)
        after = [work(i, 0.2) for i in range(4, 8)]
        print("killer:", killer.result())
        print("after:", [f.result() for f in after])
    return 0


if __name__ == "__main__":
    sys.exit(main())
