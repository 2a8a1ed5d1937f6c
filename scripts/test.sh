#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Installs dnpc2otel with its test dependencies, makes sure real Jaeger v2 and Tempo binaries are built
# and cached (the first builds take a few minutes each and report their progress on stderr, their output
# going to build.log beside each binary; later runs reuse ~/.cache/dnpc2otel silently), then runs ruff
# and the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
bash scripts/jaeger.sh build >/dev/null
bash scripts/tempo.sh build >/dev/null
python3 -m ruff check dnpc2otel tests converters
python3 -m pytest -q "$@"
