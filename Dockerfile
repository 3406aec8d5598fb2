# The gateway and executor images: one build of the project, one target per service.
# Build from the repository root (docker-compose.yml does the same):
#   docker build --target gateway  -t lumos-gateway:0.1.0 .
#   docker build --target executor -t lumos-executor:0.1.0 .
# Offline or behind a proxy: fill wheelhouse/ on the host (scripts/docker_wheelhouse.sh) and
# add --build-arg LUMOS_PIP_OFFLINE=1; pip then reads only that folder (see wheelhouse/README.md).
# Needs BuildKit (RUN --mount): Docker >= 20.10, or Compose v2, which always uses it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Build-time only (never in the final images): an index of your own, or offline from wheelhouse/.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG LUMOS_PIP_OFFLINE
RUN python -m venv /opt/venv
WORKDIR /src
# Only what `pip install .` needs; tests, docs and data stay out of the images.
COPY pyproject.toml ./
# Every image holds the packages its process imports and no others (tests/deploy checks it):
# the core, then the service's own package.
COPY lumos ./lumos

# The gateway imports the core and gateway/ only. The `lumos` command (lumos_cli/) gathers
# packages the images leave out, so its script goes too.
FROM build AS build-gateway
COPY gateway ./gateway
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    /opt/venv/bin/pip install ${LUMOS_PIP_OFFLINE:+--no-index} --find-links /wheelhouse . \
    && rm /opt/venv/bin/lumos

# The executor imports the core and services/executor/ only; its web tools drive a browser
# through Playwright.
FROM build AS build-executor
COPY services/__init__.py ./services/
COPY services/executor ./services/executor
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    /opt/venv/bin/pip install ${LUMOS_PIP_OFFLINE:+--no-index} --find-links /wheelhouse '.[web]' \
    && rm /opt/venv/bin/lumos

FROM ${PYTHON_IMAGE} AS runtime
# HOME=/tmp: the one writable place when Kubernetes mounts the root file system read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 lumos \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin lumos
WORKDIR /app

# The executor (`python -m services.executor` on port 8003): the tools the grounded actions
# call, with Debian's headless Chromium and fonts for the web tools (Playwright's own browser
# downloads are never used); Playwright's bundled node driver needs libatomic.
FROM runtime AS executor
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends chromium fonts-liberation fonts-dejavu-core \
       libatomic1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-executor /opt/venv /opt/venv
ENV LUMOS_EXECUTOR_HOST=0.0.0.0 \
    LUMOS_EXECUTOR_PORT=8003
# Offline knowledge corpora (JSONL) are mounted here; see LUMOS_EXECUTOR_CORPUS_PATH.
RUN mkdir -p /srv/corpus && chown 10001:10001 /srv/corpus
USER 10001:10001
EXPOSE 8003
# The slim image has no curl: probe with the interpreter that is there anyway.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/healthz', timeout=4)"]
CMD ["python", "-m", "services.executor"]

# The gateway (`python -m gateway` on port 8000); the last stage, so the default target.
FROM runtime AS gateway
COPY --from=build-gateway /opt/venv /opt/venv
ENV LUMOS_HOST=0.0.0.0 \
    LUMOS_PORT=8000
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "gateway"]
