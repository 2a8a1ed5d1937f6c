#!/usr/bin/env bash
# Produce one real Parsl run directory with a chosen Parsl release.
#
#   make_run.sh PARSL_VERSION RUN_DIR [mixed.py options...]
#
# Examples:
#   make_run.sh 2026.10.26 /tmp/runs/htex  --worker-debug
#   make_run.sh 2023.7.3   /tmp/runs/old
#   make_run.sh 2026.10.26 /tmp/runs/wq    --executor wq
#
# Each Parsl release gets its own virtual environment under
# ${CORPUS_VENVS:-$HOME/.cache/parsl-corpus-venvs}.
#
# Work Queue runs use Debian's cctools (packages coop-computing-tools and
# python3-workqueue, installed here with apt-get when missing). Their Python
# module is importable only from Debian's own /usr/bin/python3, so the
# environment for --executor wq is built on that interpreter, and a tiny
# `ndcctools` package makes the Debian module visible under the import name
# that current Parsl expects.
set -euo pipefail
version=$1; run_dir=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
venvs=${CORPUS_VENVS:-$HOME/.cache/parsl-corpus-venvs}
python=python3
suffix=""
if [[ " $* " == *" --executor wq "* ]]; then
  if ! /usr/bin/python3 -c 'import work_queue' 2>/dev/null; then
    apt-get install -y -q coop-computing-tools python3-workqueue >/dev/null
  fi
  python=/usr/bin/python3; suffix="-wq"
fi
venv="$venvs/parsl-$version$suffix"
if [[ ! -x "$venv/bin/python" ]]; then
  mkdir -p "$venvs"
  if [[ -n "$suffix" ]]; then $python -m venv --system-site-packages "$venv"; else $python -m venv "$venv"; fi
  "$venv/bin/pip" install -q "parsl[monitoring]==$version"
  if [[ -n "$suffix" ]]; then
    sp=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    mkdir -p "$sp/ndcctools"
    : > "$sp/ndcctools/__init__.py"
    printf 'from work_queue import *  # noqa\nimport work_queue as _wq\nglobals().update({k: getattr(_wq, k) for k in dir(_wq) if not k.startswith("__")})\n' > "$sp/ndcctools/work_queue.py"
  fi
fi
mkdir -p "$run_dir"
# the worker pool's entry points must be on PATH, as they are for a user
# who activated the environment
PATH="$venv/bin:$PATH" "$venv/bin/python" "$here/../workflows/mixed.py" "$run_dir" "$@"
# key material of the local test pool is of no use to anyone: drop it
find "$run_dir" -type d -name certificates -prune -exec rm -rf {} +
