#!/usr/bin/env bash
# Obtain / run a real Jaeger v2 for dnpc2otel's integration tests, without Docker.
#
#   scripts/jaeger.sh build               build (or reuse) the pinned binary; prints its path
#   scripts/jaeger.sh path                print the binary path (building first if needed)
#   scripts/jaeger.sh run [--config FILE] [extra jaeger args...]
#                                         exec Jaeger in the foreground (default config:
#                                         scripts/jaeger-config.yaml; ports via env, see there),
#                                         serving the real UI from third_party/jaeger-ui
#
# How the binary is obtained: Jaeger v2 is tagged v2.x.y in git, but its go.mod says
# `module github.com/jaegertracing/jaeger` (no /v2 suffix), so the Go module proxy cannot
# serve the v2 tags. Every v2 release is tagged in lock-step with a v1 tag on the SAME commit
# (v1.76.0 == v2.13.0), so we download that module version through the Go module proxy
# (checksum-verified against sum.golang.org) and `go build ./cmd/jaeger` in a writable copy.
# `go install ...@v1.76.0` does not work because Jaeger's go.mod has a `replace` directive.
#
# A source build embeds a placeholder page instead of the React UI, so `run` points Jaeger at the
# built UI bundled in third_party/jaeger-ui (jaeger-ui v1.76.0, the release paired with v2.13.0):
# JAEGER_UI_ASSETS=DIR serves another build, JAEGER_UI_ASSETS= (empty) the binary's own page.
#
# Build cost on a 2-core machine with empty Go module and build caches: about 4 minutes (measured:
# 3m54s, ~320 modules). The first build writes its output to build.log beside the binary and prints a
# few progress lines on stderr; stdout carries only the binary's path.
#
# Environment:
#   DNPC2OTEL_CACHE   cache root (default: $HOME/.cache/dnpc2otel)
#   DNPC2OTEL_PROGRESS_SECONDS   seconds between progress lines of a build (default: 15)
#   JAEGER_UI_ASSETS  folder of a built Jaeger UI for `run` (default: the bundled one, see above)
#   GOMODCACHE/GOCACHE/GOPROXY are respected (default: the user's normal Go settings).
set -euo pipefail

# --- pinned version -------------------------------------------------------------------------
JAEGER_MODULE_VERSION="v1.76.0"   # Go module version that is fetched (v1 tag, same commit as:)
JAEGER_V2_VERSION="v2.13.0"       # ... the Jaeger v2 release it corresponds to (2025-12-03)
JAEGER_RELEASE_DATE="2025-12-03T16:07:08Z"  # embedded as build date => reproducible binary
JAEGER_MODULE="github.com/jaegertracing/jaeger"
# ----------------------------------------------------------------------------------------------

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib-gobuild.sh
source "${SCRIPT_DIR}/lib-gobuild.sh"
CACHE_ROOT="${DNPC2OTEL_CACHE:-${HOME}/.cache/dnpc2otel}"
INSTALL_DIR="${CACHE_ROOT}/jaeger-${JAEGER_V2_VERSION}"
BIN="${INSTALL_DIR}/jaeger"
DEFAULT_CONFIG="${SCRIPT_DIR}/jaeger-config.yaml"
BUNDLED_UI="$(cd "${SCRIPT_DIR}/.." && pwd)/third_party/jaeger-ui"

log() { echo "jaeger.sh: $*" >&2; }
die() { local rc="$1"; shift; log "error: $*"; exit "$rc"; }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

do_build() {
    cached_or_locked "${BIN}" "${INSTALL_DIR}" \
        "install Go >= 1.24.6 (or use Docker image jaegertracing/jaeger:${JAEGER_V2_VERSION#v})" && return 0

    # Use our own Go toolchain; never auto-download another one (go.mod asks for go1.25.x).
    export GOTOOLCHAIN=local GO111MODULE=on CGO_ENABLED=0
    export GOFLAGS="-mod=readonly -buildvcs=false"  # deps verified by the module's go.sum
    begin_build "${INSTALL_DIR}" "Jaeger ${JAEGER_V2_VERSION} (module ${JAEGER_MODULE}@${JAEGER_MODULE_VERSION})"

    local info moddir
    info="$(fetch_module "${JAEGER_MODULE}@${JAEGER_MODULE_VERSION}")"
    moddir="$(json_field Dir <<<"${info}")"
    [[ -n "${moddir}" && -f "${moddir}/go.mod" ]] || build_failed "go mod download ${JAEGER_MODULE}@${JAEGER_MODULE_VERSION}"

    local vpkg="${JAEGER_MODULE}/internal/version"
    build_module "${moddir}" ./cmd/jaeger \
        "-s -w -X ${vpkg}.latestVersion=${JAEGER_V2_VERSION} -X ${vpkg}.date=${JAEGER_RELEASE_DATE}" "${BIN}"
}

do_run() {
    local config bin
    config="$(config_path "${DEFAULT_CONFIG}" "$@")"
    [[ "${1:-}" == "--config" ]] && shift 2
    bin="$(do_build)"
    # absolute, so Jaeger finds the UI whatever its working directory; an empty value is kept as it is
    export JAEGER_UI_ASSETS="${JAEGER_UI_ASSETS-${BUNDLED_UI}}"
    if [[ -n "${JAEGER_UI_ASSETS}" && ! -f "${JAEGER_UI_ASSETS}/index.html" ]]; then
        die 1 "no built Jaeger UI in ${JAEGER_UI_ASSETS} (JAEGER_UI_ASSETS= serves the binary's own page)"
    fi
    log "UI at http://127.0.0.1:${JAEGER_QUERY_HTTP_PORT:-16686} (assets: ${JAEGER_UI_ASSETS:-embedded})"
    exec "${bin}" --config "${config}" "$@"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "${cmd}" in
    build) do_build ;;
    path)  do_build ;;
    run)   do_run "$@" ;;
    version) echo "${JAEGER_V2_VERSION} (module ${JAEGER_MODULE}@${JAEGER_MODULE_VERSION})" ;;
    *) usage ;;
esac
