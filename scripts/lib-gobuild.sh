# Shared by scripts/jaeger.sh and scripts/tempo.sh (sourced; the caller defines log and die).

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
        flock 9
        if [[ -x "${bin}" ]]; then
            echo "${bin}"
            return 0
        fi
    fi
    return 1
}

# build_module MODDIR PACKAGE LDFLAGS BIN: build PACKAGE (e.g. ./cmd/jaeger) of a downloaded module into BIN.
# The module cache is read-only, so the build runs in a scratch copy beside BIN, removed afterwards.
build_module() {
    local moddir="$1" package="$2" ldflags="$3" bin="$4" start=${SECONDS} src
    src="$(mktemp -d "$(dirname "${bin}")/src.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this build's own scratch files
    trap "rm -rf '${src}' '${bin}.tmp'" EXIT
    cp -R "${moddir}/." "${src}/"
    chmod -R u+w "${src}"
    (cd "${src}" && go build -trimpath -ldflags "${ldflags}" -o "${bin}.tmp" "${package}") || die 1 "go build failed"
    mv -f "${bin}.tmp" "${bin}"
    log "built ${bin} in $((SECONDS - start))s"
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
