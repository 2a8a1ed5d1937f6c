"""A real Parsl workflow whose bash apps log their own stages to their stdout (Parsl's AUTO_LOGNAME file,
runinfo/NNN/task_logs/0000/task_0001_staged.stdout): `<epoch seconds.ns> STAGE <name> start|end`, sleeping
between the markers. One app fails in its first try after starting a stage, and succeeds in its retry, so
its stdout file holds the lines of two tries. Read by converters/examples/app_stages.toml.

Usage: python stages.py RUN_DIR [--tasks N]
"""

import argparse
import os
import sys

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

POOL = "pool"


# the apps run on a worker, where this module is not importable: each builds its command line itself
@parsl.bash_app(executors=[POOL])
def staged(i, stdout=parsl.AUTO_LOGNAME, stderr=parsl.AUTO_LOGNAME):
    mark = 'echo "$(date +%s.%N) STAGE {0} {1}"'
    stages = [("load", 0.2), ("compute", 0.3), ("save", 0.1)]
    return "; ".join([f"echo task input {i}"] + [
        f"{mark.format(name, 'start')}; sleep {s}; {mark.format(name, 'end')}" for name, s in stages])


@parsl.bash_app(executors=[POOL])
def retried(marker, stdout=parsl.AUTO_LOGNAME, stderr=parsl.AUTO_LOGNAME):
    # the first try starts 'load' and fails (no end line); the retry runs both stages
    mark = 'echo "$(date +%s.%N) STAGE {0} {1}"'
    both = "; ".join(f"{mark.format(name, 'start')}; sleep {s}; {mark.format(name, 'end')}"
                     for name, s in [("load", 0.2), ("compute", 0.1)])
    return f"if [ ! -e {marker} ]; then touch {marker}; {mark.format('load', 'start')}; exit 3; fi; {both}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--tasks", type=int, default=3)
    args = p.parse_args()
    run_dir = os.path.abspath(args.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    from parsl.monitoring.monitoring import MonitoringHub

    pool = HighThroughputExecutor(label=POOL, max_workers_per_node=2, heartbeat_period=2, heartbeat_threshold=6,
                                  provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1))
    monitoring = MonitoringHub(hub_address="127.0.0.1", resource_monitoring_interval=1,
                               logging_endpoint="sqlite:///" + os.path.join(run_dir, "monitoring.db"))
    config = Config(executors=[pool], run_dir=run_dir, retries=1, monitoring=monitoring)
    with parsl.load(config):
        futures = [staged(i) for i in range(args.tasks)]
        futures.append(retried(os.path.join(run_dir, "retried.marker")))
        for f in futures:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
