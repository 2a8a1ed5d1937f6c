#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Installs dnpc2otel with its test dependencies, makes sure real Jaeger v2 and Tempo binaries are built
# and cached (the first builds take a few minutes each and report their progress on stderr, their output
# going to build.log beside each binary; later runs reuse ~/.cache/dnpc2otel silently), then runs ruff
# and the suite. The browser test (tests/test_jaeger_ui.py) drives Debian's Chromium, installed here when
# missing (Playwright from PyPI drives it; `playwright install` would download a browser build of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
if [[ ! -x /usr/bin/chromium ]]; then
    # a fresh machine may not have the package lists yet: fetch them once if the package is not found
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
bash scripts/jaeger.sh build >/dev/null
bash scripts/tempo.sh build >/dev/null
python3 -m ruff check dnpc2otel tests converters fuzz bench
python3 -m pytest -q "$@"
