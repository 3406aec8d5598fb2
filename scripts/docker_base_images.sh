#!/usr/bin/env bash
# Stand-ins for the public base images, built from Debian's packages and tagged locally with
# the names the Dockerfiles and docker-compose.yml use, so they build and run unchanged where
# Docker Hub cannot be reached. Images that already exist (pulled or built) are kept.
#
#   scripts/docker_base_images.sh            # needs root, debootstrap, a running docker
#
#   python:3.11-slim-bookworm  debootstrap'd Debian 12: python3 (3.11), venv, pip, `python`
#   redis:7.2.5-alpine         the stand-in + Debian's redis-server (7.0)
#   prom/prometheus:v3.5.0     the stand-in + Debian's prometheus (2.42: vLLM's `vllm:` names
#                              arrive as `vllm_`, see tests/deploy/test_monitoring.py) + wget
# Grafana has no Debian package: no stand-in; the compose test starts the stack without it.
#
# Nothing of the host (pip configuration, CA bundle, proxies) is copied into these images.
# DEBIAN_MIRROR overrides the Debian mirror (default: the host's, else deb.debian.org).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${LUMOS_DOCKER_DIR:-$ROOT/.run/docker}/standins"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY_IMAGE="python:3.11-slim-bookworm"
mkdir -p "$WORK"

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$PY_IMAGE"; then
    start=$(date +%s)
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    # As in the official image: `python` and `pip` on PATH, pip usable outside a venv.
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
        -c 'CMD ["python3"]' - "$PY_IMAGE" >/dev/null
    rm -rf "$rootfs"
    # The modelserver's default base (python:3.11-slim) is the same Debian 12 image.
    echo "built $PY_IMAGE in $(( $(date +%s) - start )) s"
fi
have python:3.11-slim || docker tag "$PY_IMAGE" python:3.11-slim

standin() {  # standin IMAGE APT_PACKAGES DOCKERFILE_TAIL
    local image="$1" packages="$2" tail="$3"
    have "$image" && return 0
    local start; start=$(date +%s)
    printf 'FROM %s\nRUN apt-get update -q && apt-get install -y -q --no-install-recommends %s \\\n && rm -rf /var/lib/apt/lists/*\n%s\n' \
        "$PY_IMAGE" "$packages" "$tail" \
        | docker build -q --network host -t "$image" - >/dev/null
    echo "built $image in $(( $(date +%s) - start )) s"
}
# The official image disables protected mode (its network is the container's); Debian's
# build keeps it on, which refuses every other container: the entrypoint turns it off.
standin redis:7.2.5-alpine "redis-server redis-tools" \
    'WORKDIR /data
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = redis-server ]; then shift; exec redis-server --protected-mode no \"$@\"; fi; exec \"$@\"", "docker-entrypoint"]
CMD ["redis-server"]'
standin prom/prometheus:v3.5.0 "prometheus wget" \
    'RUN mkdir -p /prometheus /etc/prometheus
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
