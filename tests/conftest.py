"""Shared test configuration: the real servers the suite starts for itself."""

pytest_plugins = ["tests.vllm_server", "tests.redis_server", "tests.cpu_load"]
