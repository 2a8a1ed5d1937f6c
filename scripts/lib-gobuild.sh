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
