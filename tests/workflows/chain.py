"""A real Parsl workflow whose critical path is known: a chain of dependent slow steps, with short side
branches that hang off it, a short task the chain also waits for, and short independent tasks, on a
HighThroughputExecutor (enough workers for every task ready at once) with monitoring.

    step0 ── step1 ── step2 ── step3      (1.5 s each: the critical path, in this order)
      │  ┌────┘│        │ └─ side21        (side tasks, 0.01 s: side(10·i) hangs off step i-1;
      │ side50 side20   └─ side30           step1 also waits for side50, done long before step0)
      └─ side10 ─ side11
    side40 … side43                        (independent)

Usage: python chain.py RUN_DIR [--steps N] [--worker-debug]
Prints the task ids of the chain ("chain 0 1 …") so that a test can compare them with the computed path.
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
def step(i, *deps, d=1.5):
    import time

    time.sleep(d)
    return i


@parsl.python_app(executors=[POOL])
def side(i, *deps, d=0.01):
    import time

    time.sleep(d)
    return i


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--worker-debug", action="store_true")
    args = p.parse_args()
    run_dir = os.path.abspath(args.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    from parsl.monitoring.monitoring import MonitoringHub

    pool = HighThroughputExecutor(
        label=POOL, max_workers_per_node=6, cores_per_worker=0.25, worker_debug=args.worker_debug,
        heartbeat_period=2, heartbeat_threshold=6,
        provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
    )
    monitoring = MonitoringHub(hub_address="127.0.0.1", resource_monitoring_interval=1,
                               logging_endpoint="sqlite:///" + os.path.join(run_dir, "monitoring.db"))
    config = Config(executors=[pool], run_dir=run_dir, monitoring=monitoring)
    with parsl.load(config):
        early = side(50)
        chain = [step(0)]
        sides = [early]
        for i in range(1, args.steps):
            sides.append(side(10 * i, chain[-1]))  # hangs off the previous step
            chain.append(step(i, chain[-1], *([early] if i == 1 else [])))
        sides.append(side(11, sides[1]))  # a branch of a branch
        sides.append(side(21, chain[min(2, len(chain) - 1)]))
        sides += [side(40 + i) for i in range(4)]
        print("chain", *[f.tid for f in chain])
        print("results", [f.result() for f in chain], [f.result() for f in sides])
    return 0


if __name__ == "__main__":
    sys.exit(main())
