# Shared by scripts/jaeger.sh and scripts/tempo.sh (sourced; the caller defines log and die).
#
# A first build downloads a few hundred modules and compiles for minutes. Its output goes to a log file
# beside the binary (INSTALL_DIR/build.log, kept afterwards); stderr gets a few progress lines instead:
# what is built and where, "downloading modules (N so far)" and "compiling (M packages so far)" at most
# every PROGRESS_SECONDS, the elapsed time, and on failure the last 40 lines of the log. stdout carries
# only the binary's path. A cached binary prints nothing else.

PROGRESS_SECONDS="${DNPC2OTEL_PROGRESS_SECONDS:-15}"
LOG_TAIL_LINES=40

# cached_or_locked BIN INSTALL_DIR HINT
# Prints BIN and succeeds when it is already built. Otherwise checks for Go (exit 3 when it is missing:
# the test fixtures treat that as "cannot build here"), takes a build lock so that concurrent sessions do
# not build twice, and succeeds if another session finished the build meanwhile; else returns 1: build.
cached_or_locked() {
    local bin="$1" dir="$2" hint="$3"
    if [[ -x "${bin}" ]]; then
        echo "${bin}"
        return 0
    fi
    command -v go >/dev/null 2>&1 || die 3 "'go' not found in PATH; ${hint}"
    mkdir -p "${dir}"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"${dir}/.build.lock"
        if ! flock -n 9; then
            log "another session is building ${bin}; waiting for it..."
            flock 9
        fi
        if [[ -x "${bin}" ]]; then
            echo "${bin}"
            return 0
        fi
    fi
    return 1
}

# elapsed: time since begin_build, as 3m07s
elapsed() {
    local s=$((SECONDS - BUILD_START))
    printf '%dm%02ds' $((s / 60)) $((s % 60))
}

# begin_build INSTALL_DIR WHAT: announce the build of WHAT (one line) and start its log and clock
begin_build() {
    local dir="$1" what="$2"
    BUILD_START=${SECONDS}
    BUILD_LOG="${dir}/build.log"
    log "building ${what} into ${dir} (first time only: several minutes; output in ${BUILD_LOG})"
    {
        echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) building ${what} into ${dir}"
        echo "# $(go version); GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE) GOPROXY=$(go env GOPROXY)"
    } >"${BUILD_LOG}"
}

# build_failed WHAT: the end of the log, then exit 1
build_failed() {
    log "$1 failed after $(elapsed); last ${LOG_TAIL_LINES} lines of ${BUILD_LOG}:"
    tail -n "${LOG_TAIL_LINES}" "${BUILD_LOG}" | sed 's/^/    /' >&2
    die 1 "$1 failed (full log: ${BUILD_LOG})"
}

json_field() {  # json_field NAME < go-mod-download-json
    sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\{0,1\}$/\\1/p" | head -n 1
}

# fetch_module MODULE@VERSION: download one module's source into the Go module cache; prints
# `go mod download -json`'s answer (fields: json_field Dir, Sum, GoModSum …)
fetch_module() {
    local info
    log "fetching ${1} (GOPROXY=$(go env GOPROXY))..."
    echo "# go mod download -json $1" >>"${BUILD_LOG}"
    if ! info="$(go mod download -json "$1" 2>>"${BUILD_LOG}")"; then
        echo "${info}" >>"${BUILD_LOG}"
        build_failed "go mod download $1"
    fi
    echo "${info}" >>"${BUILD_LOG}"
    echo "${info}"
}

# _progress: copies the build's output (stdin) to BUILD_LOG and reports on stderr every PROGRESS_SECONDS
# (twice that while compiling). `go build -v` prints 'go: downloading M V' for each module it fetches
# while loading packages, then the path of each package as it is compiled.
_progress() {
    local line="" part="" rc downloads=0 packages=0 phase=download last=${SECONDS}
    while :; do
        if IFS= read -r -t 1 part; then
            line+="${part}"
            printf '%s\n' "${line}" >>"${BUILD_LOG}"
            case "${line}" in
                "go: downloading "*) downloads=$((downloads + 1)) ;;
                "" | "#"* | *" "*) ;;
                *) packages=$((packages + 1)) ;;
            esac
            line=""
        else
            rc=$?
            line+="${part}"  # a timeout keeps the part of a line read so far
            ((rc > 128)) || break
        fi
        if [[ ${phase} == download && ${packages} -gt 0 ]]; then
            phase=compile
            last=${SECONDS}
            log "compiling... ($(elapsed); ${downloads} modules downloaded)"
        elif [[ ${phase} == download ]] && ((SECONDS - last >= PROGRESS_SECONDS)); then
            last=${SECONDS}
            log "downloading modules (${downloads} so far, $(elapsed))..."
        elif ((SECONDS - last >= 2 * PROGRESS_SECONDS)); then
            last=${SECONDS}
            log "compiling (${packages} packages so far, $(elapsed))..."
        fi
    done
    if [[ -n "${line}" ]]; then printf '%s\n' "${line}" >>"${BUILD_LOG}"; fi
}

# build_module MODDIR PACKAGE LDFLAGS BIN: build PACKAGE (e.g. ./cmd/jaeger) of a downloaded module into BIN.
# The module cache is read-only, so the build runs in a scratch copy beside BIN, removed afterwards.
# (-v only names the packages as they are compiled, for the progress lines; the binary is the same.)
build_module() {
    local moddir="$1" package="$2" ldflags="$3" bin="$4" src
    src="$(mktemp -d "$(dirname "${bin}")/src.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this build's own scratch files
    trap "rm -rf '${src}' '${bin}.tmp'" EXIT
    cp -R "${moddir}/." "${src}/"
    chmod -R u+w "${src}"
    echo "# go build -trimpath -ldflags '${ldflags}' -o ${bin}.tmp ${package} (in a copy of ${moddir})" >>"${BUILD_LOG}"
    if ! (cd "${src}" && go build -v -trimpath -ldflags "${ldflags}" -o "${bin}.tmp" "${package}") 2>&1 \
        | _progress; then
        build_failed "go build"
    fi
    mv -f "${bin}.tmp" "${bin}"
    echo "# built ${bin} in $((SECONDS - BUILD_START))s" >>"${BUILD_LOG}"
    log "built ${bin} in $(elapsed)"
    echo "${bin}"
}

# config_path DEFAULT [--config FILE]: the config file a `run` uses (prints it); checks that it exists.
config_path() {
    local config="$1"
    shift
    if [[ "${1:-}" == "--config" ]]; then
        [[ $# -ge 2 ]] || usage
        config="$2"
    fi
    [[ -f "${config}" ]] || die 1 "config not found: ${config}"
    echo "${config}"
}
