#!/usr/bin/env bash
# A Docker daemon of this project's own, for `make compose-test`: data root, exec root and
# socket under .run/docker (LUMOS_DOCKER_DIR), no default bridge and no iptables rules
# (compose's own networks still work), started only when no daemon is reachable.
#
#   eval "$(scripts/dockerd.sh start)"   # prints `export DOCKER_HOST=...`
#   scripts/dockerd.sh stop              # stops the daemon `start` started, nothing else
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${LUMOS_DOCKER_DIR:-$ROOT/.run/docker}"
SOCK="$D/docker.sock"

case "${1:-}" in
start)
    # A daemon the user already runs (DOCKER_HOST or the default socket): use it.
    if [[ ! -e "$D/started-here" ]] && docker info >/dev/null 2>&1; then
        echo "# using the running Docker daemon" >&2
        echo "export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}"
        exit 0
    fi
    if DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1; then
        echo "export DOCKER_HOST=unix://$SOCK"
        exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd missing: apt-get install docker.io" >&2; exit 2; }
    mkdir -p "$D/root" "$D/exec"
    rm -f "$SOCK"
    setsid dockerd --data-root "$D/root" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
        --host "unix://$SOCK" --bridge=none --iptables=false --ip6tables=false \
        --storage-driver overlay2 >"$D/dockerd.log" 2>&1 </dev/null &
    touch "$D/started-here"
    for _ in $(seq 60); do
        DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1 && {
            echo "export DOCKER_HOST=unix://$SOCK"; exit 0; }
        sleep 1
    done
    echo "dockerd did not start; last lines of $D/dockerd.log:" >&2
    tail -20 "$D/dockerd.log" >&2
    exit 1
    ;;
stop)
    [[ -e "$D/started-here" ]] || exit 0
    if [[ -s "$D/dockerd.pid" ]]; then
        pid="$(cat "$D/dockerd.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    # dockerd starts its own containerd under the exec root; it ends with dockerd.
    if [[ -s "$D/exec/containerd/containerd.pid" ]]; then
        cpid="$(cat "$D/exec/containerd/containerd.pid")"
        for _ in $(seq 10); do kill -0 "$cpid" 2>/dev/null || break; sleep 1; done
        kill "$cpid" 2>/dev/null || true
    fi
    # What the daemon leaves mounted under its folders (its default network namespace).
    awk -v d="$D/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -f "$D/started-here" "$SOCK"
    ;;
*)
    echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
